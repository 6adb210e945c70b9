from .iteration import MultiScaleIteration, scaled_size
from .propagation import PROPAGATION_FORMAT, STAGES, RandomSelectionPropagation
from .propagation_config import SEED_STREAMS, FinetuneStage, PropagationConfig, stream_seed
from .pseudo_labels import pseudo_label_confidence, soft_edge_map

__all__ = [
    "FinetuneStage",
    "MultiScaleIteration",
    "PROPAGATION_FORMAT",
    "PropagationConfig",
    "RandomSelectionPropagation",
    "SEED_STREAMS",
    "STAGES",
    "pseudo_label_confidence",
    "scaled_size",
    "soft_edge_map",
    "stream_seed",
]
