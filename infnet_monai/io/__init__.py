from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    load_model,
    network_state_dict,
    save_model,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_torch_save",
    "load_checkpoint",
    "load_model",
    "network_state_dict",
    "save_model",
]
