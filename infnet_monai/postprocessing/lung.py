# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Classic Hounsfield-unit lung segmentation and lesion-mask post-processing for 3D chest CT.

Array convention (shared with the rest of the 3D pipeline):

- Volumes are numpy arrays already oriented to RAS (``nibabel.aff2axcodes(affine) == ("R", "A", "S")``, e.g.
  after MONAI ``Orientation(axcodes="RAS")``). In the NIfTI RAS+ world frame ``+x`` points from the subject's
  left to the subject's **R**\\ ight, ``+y`` to the **A**\\ nterior and ``+z`` to the **S**\\ uperior, so a larger
  index along axis 0 is further toward the patient's right, along axis 1 further anterior and along axis 2
  further superior (head). This was checked on the project's abdomen scan: the liver lies at large axis-0
  indices.
- ``spacing_mm`` holds the voxel size in millimetres for axes ``(0, 1, 2)``; axis 2 is the axial axis, so an
  "axial slice" is ``volume[:, :, k]``.

Lung labels: ``0`` background, :data:`RIGHT_LUNG_LABEL` (1) right lung, :data:`LEFT_LUNG_LABEL` (2) left lung.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.defaults import MIN_LESION_AREA_MM2, MIN_LESION_EXTENT_MM
from infnet_monai.utils.arrays import bounding_box as _bbox
from infnet_monai.utils.arrays import label_components, slabwise
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "RIGHT_LUNG_LABEL",
    "LEFT_LUNG_LABEL",
    "LUNG_THRESHOLD_HU",
    "PURE_AIR_HU",
    "MAX_PURE_AIR_FRACTION",
    "MIN_LUNG_COMPONENT_ML",
    "MIN_RELATIVE_COMPONENT_VOLUME",
    "INTERIOR_DEPTH_MM",
    "CLOSING_RADIUS_MM",
    "AIRWAY_DILATION_MM",
    "AIRWAY_MIN_VOLUME_ML",
    "AIRWAY_MAX_OFFSET_MM",
    "AIRWAY_MAX_LUNG_FRACTION",
    "AIRWAY_TOP_SLAB_MM",
    "MIN_SIDE_FRACTION",
    "MAX_SEPARATION_EROSION_MM",
    "WORKING_SPACING_MM",
    "LungMaskOptions",
    "BODY_HU",
    "body_mask",
    "EXTENSION_MAX_HU",
    "EXTENSION_THRESHOLD",
    "EXTENSION_MIN_AREA_FRACTION",
    "EXTENSION_EDGE_RISE",
    "EXTENSION_EDGE_RISE_MM",
    "MIN_LESION_EXTENT_MM",
    "MIN_LESION_AREA_MM2",
    "extension_slices",
    "lung_mask",
    "extend_lung",
]

logger = logging.getLogger(__name__)

RIGHT_LUNG_LABEL = 1
"""Label of the right lung (larger axis-0 indices in a RAS-oriented array)."""
LEFT_LUNG_LABEL = 2
"""Label of the left lung (smaller axis-0 indices in a RAS-oriented array)."""

LUNG_THRESHOLD_HU = -320.0
"""Voxels below this value (HU) are air-like: aerated lung, airways, gas. Lies between fat (about -100 HU) and
aerated lung parenchyma (about -900 to -700 HU)."""
PURE_AIR_HU = -950.0
"""Voxels below this value (HU) are essentially pure gas: airway lumen, bowel gas, air outside the body.
Normal lung parenchyma rarely goes below it (the same cut-off defines the emphysema index LAA-950)."""
MAX_PURE_AIR_FRACTION = 0.4
"""An air-like component whose interior has more than this fraction of voxels below :data:`PURE_AIR_HU` is taken
as gas (stomach, colon, a detached trachea) and not as lung. On the project's abdomen scan the lung bases measure
0.0 and the stomach / colon gas 0.93 / 0.98 (0.5 to 0.8 after a 5x linear upsampling)."""
MIN_LUNG_COMPONENT_ML = 2.0
"""Absolute floor (mL) on the volume of a connected component kept as lung."""
MIN_RELATIVE_COMPONENT_VOLUME = 0.1
"""The second lung component is kept only when its volume is at least this fraction of the largest one."""
CLOSING_RADIUS_MM = 5.0
"""Radius (mm) of the ball used to close each lung, so that dense lesions and vessels against the lung border are
included before the per-slice hole filling."""
INTERIOR_DEPTH_MM = 3.0
"""Depth (mm) below the surface of an air-like component beyond which its voxels count as interior for the
pure-air fraction (:data:`MAX_PURE_AIR_FRACTION`)."""
AIRWAY_DILATION_MM = 3.0
"""The detected trachea / main bronchi lumen is dilated by this distance (mm) before removal, taking its
partial-volume rim with it."""
AIRWAY_MIN_VOLUME_ML = 1.0
"""Smallest volume (mL) of a pure-air component accepted as trachea."""
AIRWAY_MAX_OFFSET_MM = 40.0
"""The trachea must cross the top slab of the lung candidate within this distance (mm, along axis 0) of the body
centre."""
AIRWAY_MAX_LUNG_FRACTION = 0.3
"""When the detected airway holds more than this fraction of the lung candidate, the region growing is assumed to
have leaked into (emphysematous) parenchyma and airway removal is skipped."""
AIRWAY_TOP_SLAB_MM = 15.0
"""Thickness (mm) of the top slab of the lung candidate in which the trachea is looked for."""
MIN_SIDE_FRACTION = 0.2
"""A lung component with at least this fraction of its voxels on each side of the body centre holds both lungs
(joined at the anterior / posterior junction) and is split."""
MAX_SEPARATION_EROSION_MM = 12.0
"""Largest erosion depth (mm) tried to separate joined lungs before falling back to the body midline."""
WORKING_SPACING_MM = 2.0
"""Volumes with finer voxels are block-averaged to about this voxel size (mm) for the morphology, and the label
map is brought back to the input grid at the end."""

EXTENSION_MAX_HU = 200.0
"""Voxels denser than this (HU: bone, contrast, metal) are never added to the lung by :func:`extend_lung`;
consolidation measures about -100 to +100 HU."""

BODY_HU = -500.0
"""Voxels above this (HU) are tissue for :func:`body_mask`."""
EXTENSION_THRESHOLD = 0.3
"""Infection probability at or above which tissue against the lung joins it (:func:`extend_lung`). Below the
infection threshold (0.5), so the lung also takes in the uncertain rim of a consolidation: on the 50 labeled slices
rebuilt as CT, 96.6% of the true infection lies inside the lung at 0.5 and 96.9% at 0.3, while the infection found on
the real scans in ``shared/`` does not change (``scripts/evaluate_3d.py``)."""
EXTENSION_MIN_AREA_FRACTION = 0.5
"""The lung is extended only on axial slices where that lung's area is at least this fraction of its largest slice
area: near the apex and the bases the network meets anatomy that the (mid-lung) training slices never show, and
marks the liver dome, the heart and the stomach wall next to the lung as infection."""
EXTENSION_EDGE_RISE_MM = 20.0
EXTENSION_EDGE_RISE = 1.25
"""... and only when the scan holds the lungs' widest level. When the lungs are cut by the first or last slice at
(nearly) their largest area, and that area is more than :data:`EXTENSION_EDGE_RISE` times the area
:data:`EXTENSION_EDGE_RISE_MM` further in, the lungs were still growing where the scan stops: the scan shows only the
bases (or the apices), where no slice looks like the training slices. On the abdominal ``abdomen_3mm`` the lung area
at the top slice is 96 cm^2 against 13 cm^2 21 mm lower, and extending there added the liver dome; a chest CT has
no lung at its ends, and a volume rebuilt from one slice has the same area on every slice."""


@dataclass(frozen=True)
class LungMaskOptions:
    """Settings of :func:`lung_mask`, checked when made; the defaults are the module constants.

    Attributes:
        threshold_hu: air-like threshold in HU.
        pure_air_hu: pure-gas threshold in HU (airway lumen, bowel gas).
        max_pure_air_fraction: largest fraction (0-1) of pure-gas voxels in a component's interior still taken as
            lung.
        min_component_ml: absolute minimum volume (mL) of a lung component.
        min_relative_volume: minimum volume of the second lung component relative to the largest (0-1).
        closing_radius_mm: radius (mm) of the closing ball; 0 disables the closing (hole filling still runs).
        remove_airway: detect and remove the trachea and main bronchi.
        working_spacing_mm: target voxel size (mm) for the morphology; ``None`` segments at full resolution.
    """

    threshold_hu: float = LUNG_THRESHOLD_HU
    pure_air_hu: float = PURE_AIR_HU
    max_pure_air_fraction: float = MAX_PURE_AIR_FRACTION
    min_component_ml: float = MIN_LUNG_COMPONENT_ML
    min_relative_volume: float = MIN_RELATIVE_COMPONENT_VOLUME
    closing_radius_mm: float = CLOSING_RADIUS_MM
    remove_airway: bool = True
    working_spacing_mm: float | None = WORKING_SPACING_MM

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_pure_air_fraction <= 1.0:
            raise ValueError(f"max_pure_air_fraction must be in [0, 1], got {self.max_pure_air_fraction}.")
        if not 0.0 <= self.min_relative_volume <= 1.0:
            raise ValueError(f"min_relative_volume must be in [0, 1], got {self.min_relative_volume}.")
        if self.min_component_ml < 0 or self.closing_radius_mm < 0:
            raise ValueError(
                "min_component_ml and closing_radius_mm must be >= 0, "
                f"got {self.min_component_ml} and {self.closing_radius_mm}."
            )
        if self.working_spacing_mm is not None and self.working_spacing_mm <= 0:
            raise ValueError(f"working_spacing_mm must be positive or None, got {self.working_spacing_mm}.")


_FACE_3D = ndi.generate_binary_structure(3, 1)
_FULL_3D = ndi.generate_binary_structure(3, 3)
_AXIAL_2D = np.zeros((3, 3, 3), dtype=bool)
_AXIAL_2D[:, :, 1] = ndi.generate_binary_structure(2, 1)  # in-plane 4-connectivity, no link between slices
_AXIAL_8 = np.zeros((3, 3, 3), dtype=bool)
_AXIAL_8[:, :, 1] = True  # in-plane 8-connectivity, no link between slices


_check_spacing = check_spacing_mm


def _check_volume(volume: np.ndarray, name: str) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3D array (axes 0, 1, 2 in RAS order), got shape {volume.shape}.")
    if volume.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {volume.shape}.")
    return volume


def _fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of ``mask`` in every axial slice (``mask[:, :, k]``) independently.

    The ends of axis 2 are not a border: a structure cut by the first or last slice is still filled in-plane.
    """
    return ndi.binary_fill_holes(mask, structure=_AXIAL_2D)


def _distance_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to the nearest ``True`` voxel of ``mask`` (0 inside it)."""
    return ndi.distance_transform_edt(~mask, sampling=spacing)


def _dilate_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Dilation by an exact Euclidean ball of ``radius_mm`` (spacing-aware, anisotropic voxels allowed)."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return _distance_mm(mask, spacing) <= radius_mm


def _closing_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Morphological closing by a Euclidean ball of ``radius_mm``.

    Distance transforms are used so the ball is exact for anisotropic voxels. The array border is not treated as
    background, so a lung cut by the first or last slice is not eroded there.
    """
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    dilated = _dilate_mm(mask, radius_mm, spacing)
    # erosion of the dilation: keep voxels farther than radius from the dilation's complement
    return ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm


def _block_mean(volume: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over non-overlapping blocks of ``factors`` voxels; trailing voxels that do not fill a block are cut."""
    n = [s // f for s, f in zip(volume.shape, factors)]
    cropped = volume[: n[0] * factors[0], : n[1] * factors[1], : n[2] * factors[2]]
    blocks = cropped.reshape(n[0], factors[0], n[1], factors[1], n[2], factors[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _upsample_labels(labels: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling by integer ``factors``; trailing voxels cut by :func:`_block_mean` copy the
    last block."""
    out = labels
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    pad = [(0, int(s) - o) for s, o in zip(shape, out.shape)]
    if any(p[1] for p in pad):
        out = np.pad(out, pad, mode="edge")
    return out


def _select_components(
    labels: np.ndarray,
    n: int,
    volume_ml_per_voxel: float,
    min_component_ml: float,
    min_relative_volume: float,
    allowed: np.ndarray | None = None,
) -> list[int]:
    """Labels of the (at most two) largest components passing the absolute and relative volume limits."""
    if n == 0:
        return []
    counts = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    counts[0] = 0
    if allowed is not None:
        counts[~allowed] = 0
    order = [int(i) for i in np.argsort(counts)[::-1][:2] if counts[i] > 0]
    kept: list[int] = []
    for i in order:
        vol_ml = counts[i] * volume_ml_per_voxel
        if vol_ml < min_component_ml:
            continue
        if kept and counts[i] < min_relative_volume * counts[kept[0]]:
            continue
        kept.append(i)
    return kept


def _pure_air_fraction(
    labels: np.ndarray,
    n: int,
    candidate: np.ndarray,
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    pure_air_hu: float,
) -> np.ndarray:
    """Per component (index = label), the fraction of its interior voxels below ``pure_air_hu``.

    The interior is the part at least :data:`INTERIOR_DEPTH_MM` (box-shaped neighbourhood) inside the air-like
    region, which leaves out the partial-volume rim (gas pockets have a thick rim after smoothing or
    interpolation). A component without interior (a thin sliver) is measured on all of its voxels.
    """
    flat = labels.ravel()
    pure = (volume_hu < pure_air_hu).ravel()
    # box-shaped erosion by the interior depth (separable minimum filter: cheap on large volumes)
    size = [2 * max(1, int(round(INTERIOR_DEPTH_MM / s))) + 1 for s in spacing]
    interior = ndi.minimum_filter(candidate, size=size, mode="nearest").ravel()
    n_all = np.bincount(flat, minlength=n + 1)
    n_pure = np.bincount(flat[pure], minlength=n + 1)
    n_in = np.bincount(flat[interior], minlength=n + 1)
    n_in_pure = np.bincount(flat[pure & interior], minlength=n + 1)
    use_interior = n_in > 0
    num = np.where(use_interior, n_in_pure, n_pure)
    den = np.maximum(np.where(use_interior, n_in, n_all), 1)
    return num / den


def _find_airway(
    candidate: np.ndarray,
    volume_hu: np.ndarray,
    spacing: tuple[float, float, float],
    body_centre: float,
    pure_air_hu: float,
    min_volume_ml: float,
    max_offset_mm: float,
    max_lung_fraction: float,
) -> np.ndarray | None:
    """Trachea / main bronchi: the pure-air component crossing the top slab of the candidate near the midline."""
    z_idx = np.flatnonzero(candidate.any(axis=(0, 1)))
    if z_idx.size == 0:
        return None
    slab = max(1, int(round(AIRWAY_TOP_SLAB_MM / spacing[2])))
    z_top = int(z_idx[-1]) + 1
    z_lo = max(int(z_idx[0]), z_top - slab)
    pure = candidate & (volume_hu < pure_air_hu)
    labels, n = ndi.label(pure, structure=_FACE_3D)
    if n == 0:
        return None
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    top = labels[:, :, z_lo:z_top]
    top_ids = np.unique(top[top > 0])
    best, best_count = 0, 0
    for i in top_ids:
        if counts[i] * voxel_ml < min_volume_ml:
            continue
        x_mean = float(np.nonzero(top == i)[0].mean())
        if abs(x_mean - body_centre) * spacing[0] > max_offset_mm:
            continue
        if counts[i] > best_count:
            best, best_count = int(i), int(counts[i])
    if best == 0:
        logger.debug("lung_mask: no trachea found in the top slab of the lung candidate.")
        return None
    if best_count > max_lung_fraction * candidate.sum():
        logger.warning(
            "lung_mask: the airway candidate holds %.0f%% of the air-like region (leak into parenchyma?); "
            "airway removal skipped.",
            100.0 * best_count / candidate.sum(),
        )
        return None
    return labels == best


def _split_joined(
    component: np.ndarray, spacing: tuple[float, float, float], body_centre: float, max_erosion_mm: float
) -> np.ndarray:
    """Split a component holding both lungs; returns a label map (right / left labels) on the component."""
    box = _bbox(component)
    comp = component[box]
    offset0 = box[0].start
    n_iter = max(1, int(math.ceil(max_erosion_mm / min(spacing))))
    eroded = comp
    total = comp.sum()
    for _ in range(n_iter):
        eroded = ndi.binary_erosion(eroded, structure=_FACE_3D, border_value=1)
        if not eroded.any():
            break
        labels, n = ndi.label(eroded, structure=_FACE_3D)
        if n < 2:
            continue
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        a, b = (int(i) for i in np.argsort(counts)[::-1][:2])
        if counts[b] < 0.05 * total:
            continue
        xa = np.nonzero(labels == a)[0].mean() + offset0
        xb = np.nonzero(labels == b)[0].mean() + offset0
        if (xa - body_centre) * (xb - body_centre) >= 0:
            continue  # both pieces on one side: not a left / right separation
        seeds = np.zeros(comp.shape, dtype=np.uint8)
        seeds[labels == a] = RIGHT_LUNG_LABEL if xa > xb else LEFT_LUNG_LABEL
        seeds[labels == b] = LEFT_LUNG_LABEL if xa > xb else RIGHT_LUNG_LABEL
        idx = ndi.distance_transform_edt(seeds == 0, sampling=spacing, return_distances=False, return_indices=True)
        split = np.where(comp, seeds[tuple(idx)], 0).astype(np.uint8)
        out = np.zeros(component.shape, dtype=np.uint8)
        out[box] = split
        logger.debug("lung_mask: joined lungs separated by erosion.")
        return out
    logger.info("lung_mask: joined lungs not separable by erosion; split at the body midline (axis 0).")
    out = np.zeros(component.shape, dtype=np.uint8)
    right_side = (np.arange(component.shape[0]) > body_centre)[:, None, None]
    out[component & right_side] = RIGHT_LUNG_LABEL
    out[component & ~right_side] = LEFT_LUNG_LABEL
    return out


def _lung_mask_working(volume_hu: np.ndarray, spacing: tuple[float, float, float], opts: LungMaskOptions) -> np.ndarray:
    """The whole segmentation on one grid (see :func:`lung_mask`)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = np.zeros(volume_hu.shape, dtype=np.uint8)

    air = volume_hu < opts.threshold_hu
    # body: the largest non-air component, with its in-slice cavities (lungs, gas) filled
    tissue_labels, n_tissue = ndi.label(~air, structure=_FACE_3D)
    if n_tissue == 0:
        logger.warning("lung_mask: the volume holds no voxel above %.0f HU (no body); empty mask.", opts.threshold_hu)
        return out
    tissue_counts = np.bincount(tissue_labels.ravel())
    tissue_counts[0] = 0
    body = _fill_holes_axial(tissue_labels == int(np.argmax(tissue_counts)))
    del tissue_labels
    candidate = air & body
    if not candidate.any():
        logger.warning("lung_mask: no air-like voxel inside the body; empty mask.")
        return out

    # air-like components inside the body; gas-like ones (mostly pure air) are not lung
    labels, n = ndi.label(candidate, structure=_FACE_3D)
    lung_like = _pure_air_fraction(labels, n, candidate, volume_hu, spacing, opts.pure_air_hu) <= opts.max_pure_air_fraction
    lung_like[0] = False
    kept = _select_components(labels, n, voxel_ml, opts.min_component_ml, opts.min_relative_volume, allowed=lung_like)
    if not kept:
        logger.warning("lung_mask: no lung-like air component of at least %.1f mL; empty mask.", opts.min_component_ml)
        return out
    candidate = np.isin(labels, kept)
    del labels

    z_has = candidate.any(axis=(0, 1))
    x_coords = np.nonzero(body[:, :, z_has])[0]
    body_centre = float(x_coords.mean()) if x_coords.size else (volume_hu.shape[0] - 1) / 2.0

    airway = None
    if opts.remove_airway:
        airway = _find_airway(
            candidate,
            volume_hu,
            spacing,
            body_centre,
            opts.pure_air_hu,
            AIRWAY_MIN_VOLUME_ML,
            AIRWAY_MAX_OFFSET_MM,
            AIRWAY_MAX_LUNG_FRACTION,
        )
    if airway is not None:
        airway = _dilate_mm(airway, AIRWAY_DILATION_MM, spacing) & candidate
        logger.debug("lung_mask: removed %.1f mL of trachea / main bronchi.", airway.sum() * voxel_ml)
        candidate &= ~airway
        labels, n = ndi.label(candidate, structure=_FACE_3D)
        kept = _select_components(labels, n, voxel_ml, opts.min_component_ml, opts.min_relative_volume)
        if not kept:
            logger.warning("lung_mask: nothing left after airway removal; empty mask.")
            return out
        candidate = np.isin(labels, kept)
    else:
        labels, n = ndi.label(candidate, structure=_FACE_3D)
        kept = list(range(1, n + 1))

    sides = _assign_sides(labels, kept, spacing, body_centre)
    del labels
    _close_and_fill(sides, out, spacing, opts.closing_radius_mm)
    if airway is not None:
        out[airway] = 0
    return out


def _assign_sides(labels: np.ndarray, kept: Sequence[int], spacing, body_centre: float) -> np.ndarray:
    """Right / left label map of the ``kept`` components: by side of the body centre along axis 0; a component on
    both sides holds joined lungs and is split (:func:`_split_joined`)."""
    sides = np.zeros(labels.shape, dtype=np.uint8)
    right_side = (np.arange(labels.shape[0]) > body_centre)[:, None, None]
    for i in kept:
        comp = labels == i
        n_right = int((comp & right_side).sum())
        n_all = int(comp.sum())
        if min(n_right, n_all - n_right) >= MIN_SIDE_FRACTION * n_all:
            split = _split_joined(comp, spacing, body_centre, MAX_SEPARATION_EROSION_MM)
            sides[comp] = split[comp]
        else:
            sides[comp] = RIGHT_LUNG_LABEL if 2 * n_right >= n_all else LEFT_LUNG_LABEL
    return sides


def _close_and_fill(sides: np.ndarray, out: np.ndarray, spacing, closing_radius_mm: float) -> None:
    """Per lung of ``sides``: closing (dense tissue against the border), then per-slice hole filling (vessels,
    lesions), written into ``out`` where it is still background."""
    pad = [int(math.ceil(closing_radius_mm / s)) + 1 for s in spacing]
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        lung = sides == lab
        if not lung.any():
            continue
        box = _bbox(lung, pad)
        filled = _fill_holes_axial(_closing_mm(lung[box], closing_radius_mm, spacing))
        region = out[box]
        region[filled & (region == 0)] = lab


def lung_mask(volume_hu: np.ndarray, spacing_mm: Sequence[float], **options: Any) -> np.ndarray:
    """Right / left lung mask of a CT volume from Hounsfield-unit thresholds and morphology.

    Steps:

    1. Air-like voxels: ``volume_hu < threshold_hu``.
    2. Body: the largest 6-connected non-air component, its axial-slice cavities filled. Air-like voxels outside it
       (room air, table gaps) are background. Components are not dropped for touching the first or last slice, so a
       lung cut by the scan range is kept.
    3. Air-like components inside the body with more than ``max_pure_air_fraction`` of their interior voxels
       (deeper than :data:`INTERIOR_DEPTH_MM`) below ``pure_air_hu`` are gas (stomach, colon) and dropped. Of the
       rest, the largest is kept and the second largest too when it is at least ``min_relative_volume`` times the
       largest; both must reach ``min_component_ml``.
    4. Trachea / main bronchi (``remove_airway``): the pure-air component crossing the top
       :data:`AIRWAY_TOP_SLAB_MM` of the candidate near the body centre, dilated by :data:`AIRWAY_DILATION_MM`, is
       removed (nothing happens when there is none, e.g. an abdominal scan). Step 3's selection is redone.
    5. Right / left: a component lies on the side of the body centre (mean axis-0 index of the body in the slices
       with lung) holding most of its voxels; larger axis-0 index is the patient's right. A component with at least
       :data:`MIN_SIDE_FRACTION` of its voxels on each side holds both lungs joined at a junction line: it is
       eroded (up to :data:`MAX_SEPARATION_EROSION_MM`) until it falls into a right and a left piece, whose
       voxels then claim the rest of the component by nearest distance; failing that it is cut at the midline.
    6. Per lung: closing by a Euclidean ball of ``closing_radius_mm`` and hole filling in every axial slice, so
       vessels and dense lesions (consolidation, about +40 HU) enclosed by aerated lung are part of the lung.

    For voxels finer than ``working_spacing_mm`` the volume is block-averaged by integer factors to about that size,
    segmented there, brought back by nearest-neighbour upsampling, and voxels of the coarse boundary layer that are
    not air-like at full resolution are trimmed. Dense lesions against the chest wall (subpleural consolidation)
    may be partly missed, as with any threshold-based method; severe emphysema or a large pneumothorax can exceed
    ``max_pure_air_fraction`` and be rejected as gas.

    Args:
        volume_hu: CT volume in Hounsfield units, shape ``(X, Y, Z)``, RAS-oriented (axis 0 toward the patient's
            right, axis 1 anterior, axis 2 superior).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        options: :class:`LungMaskOptions` fields (``threshold_hu``, ``pure_air_hu``, ``max_pure_air_fraction``,
            ``min_component_ml``, ``min_relative_volume``, ``closing_radius_mm``, ``remove_airway``,
            ``working_spacing_mm``); the others keep their defaults.

    Returns:
        ``uint8`` array of shape ``(X, Y, Z)``: 0 background, :data:`RIGHT_LUNG_LABEL` (1) right lung,
        :data:`LEFT_LUNG_LABEL` (2) left lung. All zeros (with a logged warning) when no lung is found.

    Raises:
        ValueError: when ``volume_hu`` is not a non-empty 3D array, ``spacing_mm`` is not 3 positive sizes, or a
            parameter is out of range.
    """
    volume_hu = _check_volume(volume_hu, "volume_hu")
    spacing = _check_spacing(spacing_mm)
    opts = LungMaskOptions(**options)
    if not (np.issubdtype(volume_hu.dtype, np.floating) or np.issubdtype(volume_hu.dtype, np.signedinteger)):
        raise ValueError(f"volume_hu must hold signed integer or float Hounsfield units, got dtype {volume_hu.dtype}.")
    factors = [1, 1, 1]
    if opts.working_spacing_mm is not None:  # integer block sizes to about the working spacing, >= 3 blocks per axis
        factors = [max(1, int(math.floor(opts.working_spacing_mm / s + 1e-6))) for s in spacing]
        factors = [f if n // f >= 3 else 1 for f, n in zip(factors, volume_hu.shape)]
    if factors == [1, 1, 1]:
        return _lung_mask_working(volume_hu, spacing, opts)

    coarse_spacing = tuple(s * f for s, f in zip(spacing, factors))
    coarse = _lung_mask_working(_block_mean(volume_hu, factors), coarse_spacing, opts)  # type: ignore[arg-type]
    return _to_full_resolution(coarse, factors, volume_hu, opts.threshold_hu)


def _to_full_resolution(coarse: np.ndarray, factors, volume_hu: np.ndarray, threshold_hu: float) -> np.ndarray:
    """The coarse label map upsampled (nearest) onto ``volume_hu``'s grid, its boundary layer trimmed of the voxels
    that are not air-like at full resolution."""
    if not coarse.any():
        return np.zeros(volume_hu.shape, dtype=np.uint8)
    inner = coarse > 0
    band = inner & ~ndi.binary_erosion(inner, structure=_FULL_3D, border_value=1)
    out = _upsample_labels(coarse, factors, volume_hu.shape)
    band_full = _upsample_labels(band, factors, volume_hu.shape)
    out[slabwise(lambda b, v: b & (v >= threshold_hu), band_full, volume_hu)] = 0
    return out


def body_mask(volume_hu: np.ndarray) -> np.ndarray:
    """Tissue denser than :data:`BODY_HU` with its cavities (lungs, gas) filled in every axial slice, ``(X, Y, Z)``."""
    return _fill_holes_axial(np.asarray(volume_hu) > BODY_HU)


def _holds_widest_level(area: np.ndarray, slice_mm: float) -> bool:
    """Whether an axial lung-area profile reaches its widest level inside the scan (see :data:`EXTENSION_EDGE_RISE`)."""
    n, peak, rise = len(area), float(area.max()), EXTENSION_EDGE_RISE
    step = max(1, int(round(EXTENSION_EDGE_RISE_MM / slice_mm)))
    for edge, inward in ((n - 1, -1), (0, 1)):
        inner = edge + inward * step
        if area[edge] >= 0.9 * peak and 0 <= inner < n and area[edge] > rise * area[inner]:
            return False
    return True


def extension_slices(
    lung: np.ndarray, spacing_mm: Sequence[float], min_area_fraction: float = EXTENSION_MIN_AREA_FRACTION
) -> np.ndarray:
    """Per lung label and axial slice, whether :func:`extend_lung` may add to that lung there: nowhere when the scan
    does not hold the lungs' widest level (:data:`EXTENSION_EDGE_RISE`), else where the lung's area is at least
    ``min_area_fraction`` of its largest.

    Args:
        lung: ``(X, Y, Z)`` label map (RAS).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        min_area_fraction: see :data:`EXTENSION_MIN_AREA_FRACTION`.

    Returns:
        ``(3, Z)`` bool array indexed by label (row 0 unused); all ``False`` when the scan does not hold the lungs'
        widest level.
    """
    ok = np.zeros((3, lung.shape[2]), dtype=bool)
    total = (lung > 0).sum(axis=(0, 1))
    if not total.any() or not _holds_widest_level(total, float(spacing_mm[2])):
        return ok
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        area = (lung == lab).sum(axis=(0, 1))
        if area.max() > 0:
            ok[lab] = (area >= min_area_fraction * area.max()) & (area > 0)
    return ok


def _join_nearest_lung(out: np.ndarray, added: np.ndarray, box: tuple[slice, ...], spacing, per_label: np.ndarray) -> None:
    """Give each voxel of ``added`` (a mask on ``box`` of ``out``) the label of the nearest lung voxel of ``out``
    (spacing-aware), on the box around the added voxels 2 voxels wider, unless that lung may not be extended on its
    slice (``per_label``); ``out`` is changed in place."""
    tight = _bbox(added)
    near = tuple(
        slice(max(b.start + t.start - 2, 0), min(b.start + t.stop + 2, size)) for b, t, size in zip(box, tight, out.shape)
    )
    add = np.zeros(tuple(s.stop - s.start for s in near), dtype=bool)
    src = tuple(slice(max(s.start - b.start, 0), min(s.stop, b.stop) - b.start) for s, b in zip(near, box))
    dst = tuple(slice(max(b.start - s.start, 0), max(b.start - s.start, 0) + (w.stop - w.start)) for s, b, w in zip(near, box, src))
    add[dst] = added[src]
    sub = out[near]
    idx = ndi.distance_transform_edt(sub == 0, sampling=spacing, return_distances=False, return_indices=True)
    sub[add] = sub[tuple(i[add] for i in idx)]
    del idx
    z = np.arange(near[2].start, near[2].stop)[None, None, :]
    sub[add & ~per_label[sub, np.broadcast_to(z, sub.shape)]] = 0
    add &= sub > 0
    logger.debug("extend_lung: %.1f mL of infection against the lung added to it.", add.sum() * float(np.prod(spacing)) / 1000.0)


def extend_lung(
    lung: np.ndarray,
    probability: np.ndarray,
    volume_hu: np.ndarray,
    spacing_mm: Sequence[float],
    threshold: float = EXTENSION_THRESHOLD,
    max_hu: float = EXTENSION_MAX_HU,
    min_area_fraction: float = EXTENSION_MIN_AREA_FRACTION,
    in_place: bool = False,
) -> np.ndarray:
    """Pathology-inclusive lung: the Hounsfield-unit lung plus the infection found against it.

    Dense consolidation at the pleura, the mediastinum or the diaphragm has soft-tissue density, so a lung mask from
    Hounsfield units (:func:`lung_mask`) leaves it out, and with it the disease of the sickest patients. The
    infection model sees it. Every 3D component (26-connected) of ``probability >= threshold`` that touches the lung
    joins it, without voxels denser than ``max_hu`` (bone) and only on the slices :func:`extension_slices` allows;
    each added voxel takes the label of the nearest lung voxel, and each lung is then filled per axial slice.

    Args:
        lung: ``(X, Y, Z)`` label map from :func:`lung_mask` (RAS).
        probability: ``(X, Y, Z)`` infection probability in [0, 1].
        volume_hu: ``(X, Y, Z)`` CT in Hounsfield units.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        threshold: probability at or above which a voxel may be added.
        max_hu: voxels above this density are never added.
        min_area_fraction: see :data:`EXTENSION_MIN_AREA_FRACTION`.
        in_place: extend a ``uint8`` ``lung`` itself instead of a copy (saves one mask's memory on long scans).

    Returns:
        ``uint8`` label map like ``lung``, a superset of it.
    """
    lung = _check_volume(lung, "lung")
    for name, arr in (("probability", probability), ("volume_hu", volume_hu)):
        if np.shape(arr) != lung.shape:
            raise ValueError(f"{name} must have the lung's shape {lung.shape}, got {np.shape(arr)}.")
    spacing = _check_spacing(spacing_mm)
    out = lung if in_place and lung.dtype == np.uint8 else np.asarray(lung, dtype=np.uint8).copy()
    per_label = extension_slices(out, spacing, min_area_fraction)  # all False without lung
    allowed = per_label.any(axis=0)
    if not allowed.any():
        return out
    # slab by slab, and the rest inside bounding boxes: no full-size temporaries on long scans
    found = slabwise(lambda p, h, o: (p >= threshold) & (h <= max_hu) & (o == 0), probability, volume_hu, out)
    found[:, :, ~allowed] = False
    if not found.any():
        return out
    box = _bbox(found, (1, 1, 1))
    inside = out[box] > 0
    labels, n = label_components(found[box] | inside, _FULL_3D)
    attached = np.zeros(n + 1, dtype=bool)
    attached[labels[inside]] = True
    attached[0] = False
    added = attached[labels] & found[box]  # on ``box``
    del labels, found, inside
    if not added.any():
        return out
    _join_nearest_lung(out, added, box, spacing, per_label)
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        one = out == lab
        if one.any():
            b = _bbox(one)
            filled = _fill_holes_axial(one[b])
            region = out[b]
            region[filled & (region == 0)] = lab
    return out
