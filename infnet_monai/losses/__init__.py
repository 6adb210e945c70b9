from .reconstruction import MaskedReconstructionLoss
from .structure import DeepSupervisionLoss, EdgeLoss, StructureLoss, boundary_weight

__all__ = ["StructureLoss", "EdgeLoss", "DeepSupervisionLoss", "MaskedReconstructionLoss", "boundary_weight"]
