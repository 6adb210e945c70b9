# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Infection burden of a 3D chest CT: lung and infection volumes, infected percentages per lung, lesion counts.

Masks follow the pipeline's array convention (see :mod:`infnet_monai.postprocessing.lung`): RAS-oriented arrays,
axis 2 is the axial (superior) axis, ``spacing_mm`` is the voxel size in mm along axes ``(0, 1, 2)``, and the lung
label map uses 1 for the right lung and 2 for the left lung.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from infnet_monai.postprocessing.infection import CONSOLIDATION_LABEL, GGO_LABEL
from infnet_monai.postprocessing.lung import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from infnet_monai.postprocessing.morphology import connected_components, label_counts, row_slabs
from infnet_monai.utils.arrays import bounding_box, count_where
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "MM3_PER_ML",
    "BURDEN_KEYS",
    "CLASS_BURDEN_KEYS",
    "NODULE_KEYS",
    "BURDEN_FIELDS",
    "infection_burden",
    "class_burden",
    "nodule_burden",
]

logger = logging.getLogger(__name__)

MM3_PER_ML = 1000.0
"""Cubic millimetres in one millilitre."""

BURDEN_KEYS: tuple[str, ...] = (
    "lung_volume_ml",
    "right_lung_volume_ml",
    "left_lung_volume_ml",
    "infection_volume_ml",
    "infection_percent",
    "right_lung_infection_percent",
    "left_lung_infection_percent",
    "lesion_count",
    "largest_lesion_ml",
    "slices_with_infection",
)
"""Keys of the dict returned by :func:`infection_burden`, in CSV column order."""

NODULE_KEYS: tuple[str, ...] = ("nodule_like_lesion_count", "nodule_like_volume_ml")
"""Keys of the dict returned by :func:`nodule_burden`: the nodule-like lesions, kept out of the infection
(:mod:`infnet_monai.postprocessing.nodules`)."""

_CLASSES = ((GGO_LABEL, "ggo"), (CONSOLIDATION_LABEL, "consolidation"))

CLASS_BURDEN_KEYS: tuple[str, ...] = tuple(
    f"{side}{name}_{quantity}"
    for side in ("", "right_", "left_")
    for quantity in ("volume_ml", "percent")
    for _, name in _CLASSES
)
"""Keys of the dict returned by :func:`class_burden`, in CSV column order: ``ggo_volume_ml``,
``consolidation_volume_ml``, ``ggo_percent``, ``consolidation_percent``, then the same per lung (``right_``,
``left_``)."""

_ZONE_FIELDS: tuple[str, ...] = (
    "zone_score",
    "zones_withheld",  # why the zone score and percentages are empty (a scan that cuts the lungs), else empty
    *(f"{side}_{third}_infection_percent" for side in ("right", "left") for third in ("upper", "middle", "lower")),
)  # :data:`infnet_monai.stats.zones.ZONE_COLUMNS` with ``zones_withheld`` (that module imports this one)

BURDEN_FIELDS: tuple[str, ...] = (
    "case_id",
    "status",
    "error",
    "source_path",
    "patient_id",
    "study_date",
    "series_instance_uid",
    "shape",
    "spacing_mm",
    *BURDEN_KEYS,
    *CLASS_BURDEN_KEYS,
    *NODULE_KEYS,
    *_ZONE_FIELDS,
    "trachea_in_lung_percent",
    "infection_outside_thorax_ml",
    "band_like_infection_ml",
    "lungs_cut_by_scan",
    "qc_flags",
    "dropped_files",
    "infection_mask_path",
    "infection_classes_path",
    "lung_mask_path",
    "seconds",
)
"""Column order of a cohort burden table (one row per case): case identification, :data:`BURDEN_KEYS`, outputs."""


def _percent(part: int, whole: int, what: str) -> float:
    if whole == 0:
        logger.debug("infection_burden: %s is empty; its infection percentage is NaN.", what)
        return float("nan")
    return 100.0 * part / whole


def infection_burden(infection: np.ndarray, lung: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float | int]:
    """Volumes and percentages describing the infection burden of one CT volume.

    The infection mask is counted as given (voxels ``> 0``): restrict it to the lung beforehand (e.g. with
    :func:`infnet_monai.postprocessing.postprocess_infection`). Right / left percentages count the infected voxels
    inside that lung's label divided by that lung's volume. Percentages of an empty lung (or lung side) are
    ``float("nan")`` and a warning is logged: an undefined statistic is never reported as 0. Values are not rounded.

    Args:
        infection: infection mask, shape ``(X, Y, Z)``, RAS-oriented; voxels ``> 0`` are infected.
        lung: lung label map of the same shape: 0 background, 1 right lung, 2 left lung (any other positive value
            counts toward the total lung only).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``; the voxel volume is their product (mm^3).

    Returns:
        dict with the keys of :data:`BURDEN_KEYS`:

        - ``lung_volume_ml``, ``right_lung_volume_ml``, ``left_lung_volume_ml``: volumes (mL) of ``lung > 0``,
          ``lung == 1`` and ``lung == 2``.
        - ``infection_volume_ml``: volume (mL) of ``infection > 0``.
        - ``infection_percent``: ``infection_volume_ml / lung_volume_ml``, in % (the mask as given, so infection
          outside the lung, if any, still counts).
        - ``right_lung_infection_percent``, ``left_lung_infection_percent``: the same per lung, in %.
        - ``lesion_count``: number of 3D 26-connected components of the infection mask.
        - ``largest_lesion_ml``: volume (mL) of the largest component, 0.0 when there is none.
        - ``slices_with_infection``: number of axial slices (indices along axis 2) holding an infected voxel.

    Raises:
        ValueError: when the masks are not 3D arrays of the same shape or ``spacing_mm`` is not 3 positive sizes.
    """
    infection = np.asarray(infection)
    lung = np.asarray(lung)
    if infection.ndim != 3 or lung.ndim != 3:
        raise ValueError(f"infection and lung must be 3D arrays, got shapes {infection.shape} and {lung.shape}.")
    if infection.shape != lung.shape:
        raise ValueError(f"infection and lung must have the same shape, got {infection.shape} and {lung.shape}.")
    spacing = check_spacing_mm(spacing_mm)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / MM3_PER_ML

    # counted in one pass, slab by slab: no full-size masks on long scans
    counts = np.zeros(6, dtype=np.int64)
    for rows in row_slabs(lung.shape):
        lu, infected = lung[rows], infection[rows] > 0
        right, left = lu == RIGHT_LUNG_LABEL, lu == LEFT_LUNG_LABEL
        counts += [
            np.count_nonzero(lu > 0), np.count_nonzero(right), np.count_nonzero(left),
            np.count_nonzero(infected), np.count_nonzero(infected & right), np.count_nonzero(infected & left),
        ]
    n_lung, n_right, n_left, n_infected, n_infected_right, n_infected_left = (int(c) for c in counts)

    if n_infected:
        # 26-connected components, labelled only within the lesions' bounding box (bounded memory on long scans)
        box = bounding_box(infection)
        labels, n = connected_components(infection[box] > 0, 26)
        sizes = label_counts(labels, n)[1:]
        lesion_count, largest = int(sizes.size), int(sizes.max())
    else:
        lesion_count, largest = 0, 0

    return {
        "lung_volume_ml": n_lung * voxel_ml,
        "right_lung_volume_ml": n_right * voxel_ml,
        "left_lung_volume_ml": n_left * voxel_ml,
        "infection_volume_ml": n_infected * voxel_ml,
        "infection_percent": _percent(n_infected, n_lung, "the lung"),
        "right_lung_infection_percent": _percent(n_infected_right, n_right, "the right lung"),
        "left_lung_infection_percent": _percent(n_infected_left, n_left, "the left lung"),
        "lesion_count": lesion_count,
        "largest_lesion_ml": largest * voxel_ml,
        "slices_with_infection": int(np.count_nonzero(infection.any(axis=(0, 1)))),
    }


def class_burden(classes: np.ndarray, lung: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    """GGO and consolidation volumes and percentages of the lung, overall and per lung.

    Args:
        classes: ``(X, Y, Z)`` class map (0 background, 1 GGO, 2 consolidation), as
            :func:`~infnet_monai.postprocessing.infection_classes` writes it; counted as given.
        lung: lung label map of the same shape (0 background, 1 right, 2 left).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.

    Returns:
        dict with the keys of :data:`CLASS_BURDEN_KEYS`: ``<class>_volume_ml`` (mL) and ``<class>_percent`` (% of the
        lung volume), overall and with ``right_`` / ``left_`` prefixes for the voxels inside that lung divided by that
        lung's volume. Percentages of an empty lung are ``float("nan")``.

    Raises:
        ValueError: when the arrays are not 3D of the same shape or ``spacing_mm`` is not 3 positive sizes.
    """
    classes, lung = np.asarray(classes), np.asarray(lung)
    if classes.ndim != 3 or classes.shape != lung.shape:
        raise ValueError(f"classes and lung must be 3D arrays of the same shape, got {classes.shape} and {lung.shape}.")
    spacing = check_spacing_mm(spacing_mm)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / MM3_PER_ML
    sides = (("", "the lung"), ("right_", "the right lung"), ("left_", "the left lung"))
    # per side (the lung, right, left): its voxels and, per class, the class voxels (overall: the class map as given;
    # per lung: inside that lung); counted in one pass, slab by slab: no full-size masks on long scans
    n_region = np.zeros(len(sides), dtype=np.int64)
    n_class = np.zeros((len(sides), len(_CLASSES)), dtype=np.int64)
    for rows in row_slabs(lung.shape):
        lu, c = lung[rows], classes[rows]
        regions = (None, lu == RIGHT_LUNG_LABEL, lu == LEFT_LUNG_LABEL)
        n_region += [np.count_nonzero(lu > 0), *(np.count_nonzero(r) for r in regions[1:])]
        for j, (label, _) in enumerate(_CLASSES):
            in_class = c == label
            n_class[:, j] += [np.count_nonzero(in_class), *(np.count_nonzero(in_class & r) for r in regions[1:])]
    out: dict[str, float] = {}
    for i, (prefix, what) in enumerate(sides):
        for j, (_, name) in enumerate(_CLASSES):
            n = int(n_class[i, j])
            out[f"{prefix}{name}_volume_ml"] = n * voxel_ml
            out[f"{prefix}{name}_percent"] = _percent(n, int(n_region[i]), what)
    return {k: out[k] for k in CLASS_BURDEN_KEYS}


def nodule_burden(nodules: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float | int]:
    """Count (3D 26-connected components) and volume (mL) of the nodule-like lesions, keys :data:`NODULE_KEYS`."""
    nodules = np.asarray(nodules)
    spacing = check_spacing_mm(spacing_mm)
    n_voxels = count_where(lambda m: m > 0, nodules)
    count = 0
    if n_voxels:
        _, count = connected_components(nodules[bounding_box(nodules)] > 0, 26)
    return {"nodule_like_lesion_count": int(count), "nodule_like_volume_ml": n_voxels * float(np.prod(spacing)) / MM3_PER_ML}
