# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Post-processing of 3D CT segmentations: HU-based lung masks and infection-mask clean-up."""

from .lung import (
    AIRWAY_DILATION_MM,
    AIRWAY_MAX_LUNG_FRACTION,
    AIRWAY_MAX_OFFSET_MM,
    AIRWAY_MIN_VOLUME_ML,
    AIRWAY_TOP_SLAB_MM,
    CLOSING_RADIUS_MM,
    INTERIOR_DEPTH_MM,
    LEFT_LUNG_LABEL,
    LUNG_THRESHOLD_HU,
    MAX_PURE_AIR_FRACTION,
    MAX_SEPARATION_EROSION_MM,
    MIN_LUNG_COMPONENT_ML,
    MIN_RELATIVE_COMPONENT_VOLUME,
    MIN_SIDE_FRACTION,
    PURE_AIR_HU,
    RIGHT_LUNG_LABEL,
    WORKING_SPACING_MM,
    lung_mask,
    postprocess_infection,
)

__all__ = [
    "AIRWAY_DILATION_MM",
    "AIRWAY_MAX_LUNG_FRACTION",
    "AIRWAY_MAX_OFFSET_MM",
    "AIRWAY_MIN_VOLUME_ML",
    "AIRWAY_TOP_SLAB_MM",
    "CLOSING_RADIUS_MM",
    "INTERIOR_DEPTH_MM",
    "LEFT_LUNG_LABEL",
    "LUNG_THRESHOLD_HU",
    "MAX_PURE_AIR_FRACTION",
    "MAX_SEPARATION_EROSION_MM",
    "MIN_LUNG_COMPONENT_ML",
    "MIN_RELATIVE_COMPONENT_VOLUME",
    "MIN_SIDE_FRACTION",
    "PURE_AIR_HU",
    "RIGHT_LUNG_LABEL",
    "WORKING_SPACING_MM",
    "lung_mask",
    "postprocess_infection",
]
