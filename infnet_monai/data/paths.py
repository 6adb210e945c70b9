"""Where the shared data lives: one answer for the package, the bundle configs and the scripts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "DEVELOPMENT_SCANS", "shared_data_dir"]

DATA_ENV_VAR = "INFNET_SHARED_DATA"
"""Environment variable naming the shared data folder (``covid-semiseg/``, ``ct/``)."""

DEVELOPMENT_SCANS = {
    "p001": "covid_ct_md_P001",
    "normal": "covid_ct_md_normal001",
    "lidc": "lidc_idri_0001/ct.nii.gz",
    "cancer": "lung_pet_ct_dx_A0001_chest_5mm",
    "abdomen": "abdomen_3mm.nii.gz",
    "ricord": "ricord_1a_001012",
}
"""The real scans of the shared data's ``ct/`` folder that the scripts name (evaluation, hard negatives, rendering):
the COVID-19 CT with the radiologists' slice labels, the normal chest CT, the LIDC-IDRI nodule scan, the lung-cancer
CT, the abdomen scan with the lung bases, and the thin-slice COVID-19 CT without labels."""


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
