"""Where the shared data lives: one answer for the package, the bundle configs and the scripts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "shared_data_dir"]

DATA_ENV_VAR = "INFNET_SHARED_DATA"
"""Environment variable naming the shared data folder (``covid-semiseg/``, ``ct/``)."""


def shared_data_dir() -> Path:
    """The shared data folder: ``$INFNET_SHARED_DATA`` if set; else ``../shared/data`` beside the source checkout (the
    repository root's sibling, whatever the working directory), when this is a source checkout or editable install;
    else ``../shared/data`` relative to the working directory."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "bundles" / "infnet_covid").is_dir():
        return (repo / ".." / "shared" / "data").resolve()
    return Path("../shared/data")
