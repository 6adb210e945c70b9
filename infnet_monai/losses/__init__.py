from .classes import ConsolidationLoss
from .reconstruction import MaskedReconstructionLoss
from .structure import DeepSupervisionLoss, EdgeLoss, StructureLoss, boundary_weight

__all__ = ["ConsolidationLoss", "StructureLoss", "EdgeLoss", "DeepSupervisionLoss", "MaskedReconstructionLoss", "boundary_weight"]
