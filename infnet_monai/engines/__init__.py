from .iteration import MultiScaleIteration, scaled_size
from .propagation import (
    PROPAGATION_FORMAT,
    SEED_STREAMS,
    STAGES,
    FinetuneStage,
    PropagationConfig,
    RandomSelectionPropagation,
    pseudo_label_confidence,
    soft_edge_map,
    stream_seed,
)

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
