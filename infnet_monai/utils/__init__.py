from .device import autocast_context, resolve_device
from .model_path import MODEL_ENV_VAR, bundle_dir, default_model_path

__all__ = ["autocast_context", "resolve_device", "MODEL_ENV_VAR", "bundle_dir", "default_model_path"]
