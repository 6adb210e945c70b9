# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Anatomical self-checks of a case's masks: reference-free tests that hold for every chest CT.

- ``trachea_in_lung_percent``: the share of the tracheal air column (above the carina,
  :func:`~infnet_monai.postprocessing.airway.find_airway`) that the lung mask covers. The trachea is not lung;
  ``nan`` when the scan shows no trachea (an abdominal scan). The airway that the lung mask found on its working grid
  (:func:`~infnet_monai.postprocessing.lung.lung_mask_with_airway`) is used when given, else it is tracked here.
- ``infection_outside_thorax_ml``: the infection outside the bony thorax, the per-slice convex hull of the bone
  (:func:`~infnet_monai.postprocessing.thorax.bony_thorax`). Lung infection is always inside it; slices without
  bone (a volume rebuilt from a slice) are not counted.
- ``band_like_infection_ml``: the infection in lesions that never reach :data:`BAND_DEPTH_MM` into the lung (no
  voxel that far from the chest wall, the mediastinum or the diaphragm): bands along the lung's edge, where
  dependent atelectasis and pleural thickening lie and where the network's false calls on unseen scans were found.
  The lesions are counted, not removed (``--min-lesion-depth-mm`` removes them); a case with any is flagged for review.
- ``lungs_cut_by_scan``: the lungs still have at least :data:`CUT_AREA_FRACTION` of their largest area on the first
  or the last slice: the scan does not hold the whole lungs, and the burden is that of the part it holds.

:func:`anatomy_checks` returns them with ``qc_flags``, the names of the checks a case fails.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from infnet_monai.postprocessing.airway import TRACHEA_AIR_HU, Airway, find_airway
from infnet_monai.postprocessing.infection import lesions_reaching_depth
from infnet_monai.postprocessing.lung import body_mask, working_factors
from infnet_monai.postprocessing.morphology import block_mean, convex_hull_spans, label_counts, row_slabs
from infnet_monai.postprocessing.thorax import BONE_HU
from infnet_monai.stats.burden import MM3_PER_ML
from infnet_monai.stats.zones import infection_components
from infnet_monai.utils.arrays import SLAB_SLICES, bounding_box
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "TRACHEA_IN_LUNG_MAX_PERCENT",
    "OUTSIDE_THORAX_MAX_ML",
    "CUT_AREA_FRACTION",
    "BAND_DEPTH_MM",
    "ANATOMY_KEYS",
    "QC_FLAGS",
    "trachea_in_lung_percent",
    "infection_outside_thorax_ml",
    "band_like_infection_ml",
    "band_like_mask",
    "lungs_cut_by_scan",
    "largest_axial_section_cm2",
    "anatomy_checks",
]

TRACHEA_IN_LUNG_MAX_PERCENT = 2.0
"""A lung mask covering more than this share (%) of the tracheal air column fails the check ``trachea_in_lung``."""
OUTSIDE_THORAX_MAX_ML = 0.5
"""More infection than this (mL) outside the bony thorax fails the check ``infection_outside_thorax``."""
CUT_AREA_FRACTION = 0.25
"""Lungs with at least this fraction of their largest axial area on the first or last slice are cut by the scan
(``lungs_cut_by_scan``); a whole chest CT starts above the apices and ends below the costophrenic recesses."""

BAND_DEPTH_MM = 12.0
"""Infection in lesions that reach less than this (mm) into the lung is band-like (``band_like_infection``): the depth
that the lesion depth gate's leave-one-scan-out run chose on all development items (docs/validation.md, lesion
depth). No lesion of a real development scan's final mask is band-like at it; 10 of the 50 labeled slices rebuilt as
CT have one."""

ANATOMY_KEYS: tuple[str, ...] = (
    "trachea_in_lung_percent", "infection_outside_thorax_ml", "band_like_infection_ml", "lungs_cut_by_scan", "qc_flags",
)
"""Keys of the dict returned by :func:`anatomy_checks`, in CSV column order."""
QC_FLAGS: dict[str, str] = {
    "trachea_in_lung": f"the lung mask covers more than {TRACHEA_IN_LUNG_MAX_PERCENT:g}% of the trachea",
    "infection_outside_thorax": f"more than {OUTSIDE_THORAX_MAX_ML:g} mL of infection outside the bony thorax",
    "band_like_infection": f"infection in lesions that never reach {BAND_DEPTH_MM:g} mm into the lung (bands along the "
    "pleura or the diaphragm, where dependent atelectasis lies): review them",
    "lungs_cut_by_scan": "the scan cuts the lungs: the burden covers only the part it holds",
}
"""The flags a case can carry in ``qc_flags``, with what they mean (shown in the report)."""


def trachea_in_lung_percent(
    volume_hu: np.ndarray, lung: np.ndarray, spacing_mm: Sequence[float], airway: Airway | None = None
) -> float:
    """Share (%) of the tracheal air column that ``lung`` covers; ``nan`` when no trachea is found.

    The trachea is found on the ~2 mm working grid of the lung mask (reaching at least the lungs' top, so that a
    midline tube of an abdominal scan is not taken for it) and compared at full resolution inside its bounding box:
    its air voxels (below :data:`~infnet_monai.postprocessing.airway.TRACHEA_AIR_HU`).

    Args:
        volume_hu: ``(X, Y, Z)`` CT in HU, RAS.
        lung: ``(X, Y, Z)`` lung label map (voxels > 0 are lung).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        airway: the airway the lung mask found (:func:`~infnet_monai.postprocessing.lung.lung_mask_with_airway`),
            used instead of tracking the trachea again when it lies on this check's working grid (same block
            factors and shape). The lung mask tracks it with its own body mask and asks it to reach the top of the
            air in the body, not only of the lung; on the development scans the trachea comes out the same.
            ``None`` (no airway found there, or a caller of the plain functions): tracked here.
    """
    spacing = check_spacing_mm(spacing_mm)
    factors = working_factors(volume_hu.shape, spacing)
    coarse_shape = tuple(n // f for n, f in zip(volume_hu.shape, factors))
    if airway is None or tuple(airway.factors) != tuple(factors) or airway.trachea.shape != coarse_shape:
        coarse = block_mean(volume_hu, factors) if factors != [1, 1, 1] else np.asarray(volume_hu, dtype=np.float32)
        coarse_spacing = tuple(s * f for s, f in zip(spacing, factors))
        lung_slices = np.flatnonzero(np.asarray(lung).any(axis=(0, 1)))
        air_top = int(lung_slices[-1]) // factors[2] if lung_slices.size else None
        airway = find_airway(coarse, coarse_spacing, body_mask(coarse), air_top=air_top)
    if airway is None or not airway.trachea.any():
        return float("nan")
    box = bounding_box(airway.trachea)
    trachea = airway.trachea[box]
    for axis, f in enumerate(factors):
        trachea = np.repeat(trachea, f, axis=axis)
    full = tuple(slice(b.start * f, b.start * f + t) for b, f, t in zip(box, factors, trachea.shape))
    air = trachea & (np.asarray(volume_hu[full]) < TRACHEA_AIR_HU)
    n_air = int(np.count_nonzero(air))
    if n_air == 0:
        return float("nan")
    return 100.0 * np.count_nonzero(air & (np.asarray(lung[full]) > 0)) / n_air


def infection_outside_thorax_ml(volume_hu: np.ndarray, infection: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume (mL) of ``infection`` outside the bony thorax, on the slices that show bone."""
    spacing = check_spacing_mm(spacing_mm)
    infection = np.asarray(infection)
    slices = np.flatnonzero(infection.any(axis=(0, 1)))
    outside = 0
    for start in range(0, slices.size, SLAB_SLICES):
        part = slices[start : start + SLAB_SLICES]
        # all bone: it lies inside the body (tissue above -500 HU), so no body mask is needed
        bone = np.moveaxis(np.asarray(volume_hu[:, :, part]) > BONE_HU, 2, 0)
        inf = np.moveaxis(infection[:, :, part] > 0, 2, 0)
        for bone_k, inf_k in zip(bone, inf):
            outside += _outside_hull(bone_k, inf_k)
    return outside * float(np.prod(spacing)) / MM3_PER_ML


def _outside_hull(bone: np.ndarray, infection: np.ndarray) -> int:
    """Infected pixels of one axial slice outside the convex hull of its bone, the hull of
    :func:`~infnet_monai.postprocessing.thorax.bony_thorax` tested row by row on its spans (no hull image); 0 on a
    slice without bone."""
    n_bone = np.count_nonzero(bone)
    if n_bone == 0:
        return 0
    if n_bone < 3:  # as the per-slice hull keeps it: the pixels themselves
        return int(np.count_nonzero(infection & ~bone))
    r0, first, last = convex_hull_spans(bone)
    r, c = np.nonzero(infection)
    i = r - r0
    rows = (i >= 0) & (i < len(first))
    inside = np.zeros(r.shape, dtype=bool)
    inside[rows] = (c[rows] >= first[i[rows]]) & (c[rows] <= last[i[rows]])
    return int(r.size - np.count_nonzero(inside))


def lungs_cut_by_scan(lung: np.ndarray) -> bool:
    """Whether the lungs reach the first or last slice with at least :data:`CUT_AREA_FRACTION` of their largest
    area."""
    lung = np.asarray(lung)
    area = np.zeros(lung.shape[2], dtype=np.int64)
    for rows in row_slabs(lung.shape):
        area += np.count_nonzero(lung[rows] > 0, axis=(0, 1))
    if area.size == 0 or area.max() == 0:
        return False
    return bool(max(area[0], area[-1]) >= CUT_AREA_FRACTION * area.max())


def _band_like_lesions(lung, infection, spacing, depth_mm: float):
    """``(labels, band, box)``: the lesions of :func:`~infnet_monai.stats.zones.infection_components` (those of the
    lesion table) and, per label (index 0 ``False``), whether the lesion is band-like; ``None`` without infection in
    the lung. Any voxel order: the distances use each axis's spacing."""
    found = infection_components(infection, lung)
    if found is None:
        return None
    labels, n, box = found
    band = ~lesions_reaching_depth(labels, n, np.asarray(lung), spacing, depth_mm, [b.start for b in box])
    band[0] = False
    return labels, band, box


def band_like_infection_ml(
    lung: np.ndarray, infection: np.ndarray, spacing_mm: Sequence[float], depth_mm: float = BAND_DEPTH_MM
) -> float:
    """Infection (mL) in lesions (26-connected) none of whose voxels lies ``depth_mm`` inside ``lung > 0``
    (:func:`~infnet_monai.postprocessing.infection.lesions_reaching_depth`; the scan's edge is not the pleura)."""
    spacing = check_spacing_mm(spacing_mm)
    found = _band_like_lesions(lung, infection, spacing, depth_mm)
    if found is None:
        return 0.0
    labels, band, _ = found
    return float(label_counts(labels, len(band) - 1)[band].sum() * np.prod(spacing) / MM3_PER_ML)


def band_like_mask(
    lung: np.ndarray, infection: np.ndarray, spacing_mm: Sequence[float], depth_mm: float = BAND_DEPTH_MM
) -> np.ndarray:
    """The voxels of the lesions that :func:`band_like_infection_ml` counts, a boolean array of ``infection``'s
    shape (the overview outlines them)."""
    out = np.zeros(np.shape(infection), dtype=bool)
    found = _band_like_lesions(lung, infection, check_spacing_mm(spacing_mm), depth_mm)
    if found is not None:
        labels, band, box = found
        out[box] = band[labels]
    return out


def largest_axial_section_cm2(mask: np.ndarray, affine: np.ndarray) -> float:
    """The largest area (cm2) that ``mask > 0`` covers on one axial slice, on any voxel grid: the slices are taken
    along the voxel axis closest to the patient's head-foot direction of ``affine`` (voxel -> world mm)."""
    affine = np.asarray(affine, dtype=np.float64)
    mask = np.asarray(mask)
    axis = int(np.argmax(np.abs(affine[2, :3]) / np.maximum(np.sqrt((affine[:3, :3] ** 2).sum(0)), 1e-12)))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    pixel_mm2 = abs(float(np.linalg.det(affine[:3, :3]))) / max(float(spacing[axis]), 1e-12)
    counts = np.count_nonzero(np.moveaxis(mask, axis, -1) > 0, axis=(0, 1))
    return float(counts.max(initial=0)) * pixel_mm2 / 100.0


def anatomy_checks(
    volume_hu: np.ndarray,
    lung: np.ndarray,
    infection: np.ndarray,
    spacing_mm: Sequence[float],
    airway: Airway | None = None,
) -> dict:
    """The anatomical self-checks of one case (module docstring).

    Args:
        volume_hu: ``(X, Y, Z)`` CT in HU, RAS.
        lung: ``(X, Y, Z)`` lung label map (voxels > 0 are lung).
        infection: ``(X, Y, Z)`` infection mask.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        airway: the airway the lung mask found, if any (see :func:`trachea_in_lung_percent`).

    Returns:
        dict with the keys of :data:`ANATOMY_KEYS`; ``qc_flags`` is a list of :data:`QC_FLAGS` names.
    """
    trachea = trachea_in_lung_percent(volume_hu, lung, spacing_mm, airway)
    outside = infection_outside_thorax_ml(volume_hu, infection, spacing_mm)
    band = band_like_infection_ml(lung, infection, spacing_mm)
    cut = lungs_cut_by_scan(lung)
    flags = []
    if trachea == trachea and trachea > TRACHEA_IN_LUNG_MAX_PERCENT:  # nan (no trachea) passes
        flags.append("trachea_in_lung")
    if outside > OUTSIDE_THORAX_MAX_ML:
        flags.append("infection_outside_thorax")
    if band > 0:
        flags.append("band_like_infection")
    if cut:
        flags.append("lungs_cut_by_scan")
    return {
        "trachea_in_lung_percent": trachea,
        "infection_outside_thorax_ml": outside,
        "band_like_infection_ml": band,
        "lungs_cut_by_scan": cut,
        "qc_flags": flags,
    }
