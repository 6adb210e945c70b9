# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Statistics of 3D segmentations: infection burden per case, anatomical self-checks and the cohort table columns."""

from .anatomy import ANATOMY_KEYS, QC_FLAGS, anatomy_checks
from .burden import BURDEN_FIELDS, BURDEN_KEYS, MM3_PER_ML, NODULE_KEYS, class_burden, infection_burden, nodule_burden
from .transforms import AnatomyChecks, AnatomyChecksd, InfectionBurden, InfectionBurdend

__all__ = [
    "ANATOMY_KEYS",
    "QC_FLAGS",
    "anatomy_checks",
    "BURDEN_FIELDS",
    "BURDEN_KEYS",
    "MM3_PER_ML",
    "NODULE_KEYS",
    "class_burden",
    "infection_burden",
    "nodule_burden",
    "AnatomyChecks",
    "AnatomyChecksd",
    "InfectionBurden",
    "InfectionBurdend",
]
