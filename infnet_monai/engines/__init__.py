from .iteration import MultiScaleIteration, scaled_size
from .propagation import PROPAGATION_FORMAT, STAGES, RandomSelectionPropagation, soft_edge_map

__all__ = ["MultiScaleIteration", "PROPAGATION_FORMAT", "RandomSelectionPropagation", "STAGES", "scaled_size", "soft_edge_map"]
