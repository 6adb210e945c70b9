from .structure import DeepSupervisionLoss, EdgeLoss, StructureLoss, boundary_weight

__all__ = ["StructureLoss", "EdgeLoss", "DeepSupervisionLoss", "boundary_weight"]
