"""Small helpers: devices, model paths, files, argument validation, deprecation shims.

The names are imported lazily so that the light submodules (``validation``, ``deprecation``, ``model_path``) do not
pull in torch when the command line or :mod:`infnet_monai.data` imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:
    from .device import autocast_context, resolve_device
    from .model_path import MODEL_ENV_VAR, bundle_dir, default_model_path

__all__, __getattr__, __dir__ = lazy_names(
    __name__,
    {"device": ("autocast_context", "resolve_device"), "model_path": ("MODEL_ENV_VAR", "bundle_dir", "default_model_path")},
)
