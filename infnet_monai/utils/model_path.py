"""Where the default (shipped) model checkpoint is found."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["MODEL_ENV_VAR", "CLASS_MODEL_ENV_VAR", "default_model_path", "default_class_model_path", "bundle_dir"]

MODEL_ENV_VAR = "INFNET_MODEL"
CLASS_MODEL_ENV_VAR = "INFNET_CLASS_MODEL"


def bundle_dir() -> Path:
    """The ``bundles/infnet_covid`` folder of a source checkout (or editable install)."""
    return Path(__file__).resolve().parents[2] / "bundles" / "infnet_covid"


def default_model_path() -> Path:
    """The checkpoint used when no ``--model`` is given.

    Looked up in order: ``$INFNET_MODEL``; ``bundles/infnet_covid/models/model.pt`` of the source checkout; the copy
    installed with the package under ``<prefix>/share/infnet-monai/model.pt``.

    Raises:
        FileNotFoundError: none of these exists.
    """
    return _shipped("model.pt", MODEL_ENV_VAR, "--model")


def default_class_model_path() -> Path:
    """The GGO / consolidation head used when no ``--class-model`` is given: ``$INFNET_CLASS_MODEL``, else
    ``classes.pt`` next to the shipped model (source checkout, then ``<prefix>/share/infnet-monai``).

    Raises:
        FileNotFoundError: none of these exists.
    """
    return _shipped("classes.pt", CLASS_MODEL_ENV_VAR, "--class-model")


def _shipped(name: str, env_var: str, option: str) -> Path:
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    candidates = [bundle_dir() / "models" / name, Path(sys.prefix) / "share" / "infnet-monai" / name]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"no default {name} found (looked at " + ", ".join(str(c) for c in candidates) + f"); pass {option} PATH or "
        f"set {env_var}."
    )
