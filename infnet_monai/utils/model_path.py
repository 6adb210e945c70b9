"""Where the default (shipped) model checkpoint is found."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["MODEL_ENV_VAR", "default_model_path", "bundle_dir"]

MODEL_ENV_VAR = "INFNET_MODEL"


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
    env = os.environ.get(MODEL_ENV_VAR)
    if env:
        return Path(env)
    candidates = [
        bundle_dir() / "models" / "model.pt",
        Path(sys.prefix) / "share" / "infnet-monai" / "model.pt",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        "no default model found (looked at " + ", ".join(str(c) for c in candidates) + "); pass --model PATH or set "
        f"{MODEL_ENV_VAR}."
    )
