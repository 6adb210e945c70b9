from .iteration import MultiScaleIteration, scaled_size
from .propagation import PROPAGATION_FORMAT, STAGES, RandomSelectionPropagation, pseudo_label_confidence, soft_edge_map

__all__ = [
    "MultiScaleIteration",
    "PROPAGATION_FORMAT",
    "RandomSelectionPropagation",
    "STAGES",
    "pseudo_label_confidence",
    "scaled_size",
    "soft_edge_map",
]
