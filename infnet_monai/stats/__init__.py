# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Statistics of 3D segmentations: infection burden per case and the cohort table columns."""

from .burden import BURDEN_FIELDS, BURDEN_KEYS, MM3_PER_ML, class_burden, infection_burden
from .transforms import InfectionBurden, InfectionBurdend

__all__ = [
    "BURDEN_FIELDS",
    "BURDEN_KEYS",
    "MM3_PER_ML",
    "class_burden",
    "infection_burden",
    "InfectionBurden",
    "InfectionBurdend",
]
