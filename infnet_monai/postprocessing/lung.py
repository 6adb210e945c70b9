# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Classic Hounsfield-unit lung segmentation of 3D chest CT: the right / left lung label map (:func:`lung_mask`), with
the central airway found on the way (:func:`lung_mask_with_airway`), and the body mask (:func:`body_mask`). The
infection mask's clean-up is :mod:`~infnet_monai.postprocessing.infection`, the lung's extension by the infection
against it :mod:`~infnet_monai.postprocessing.extension`.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.airway import Airway, find_airway
from infnet_monai.postprocessing.morphology import (
    FACE_3D,
    FULL_3D,
    block_mean,
    check_volume,
    closing_mm,
    connected_components,
    dilate_mm,
    fill_enclosed_holes,
    fill_holes_axial,
    label_counts,
    rowwise,
    upsample_labels,
)
from infnet_monai.utils.arrays import bounding_box
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
    "AIRWAY_MAX_LUNG_FRACTION",
    "DOME_MIN_AREA_MM2",
    "MIN_SIDE_FRACTION",
    "MAX_SEPARATION_EROSION_MM",
    "WORKING_SPACING_MM",
    "LungMaskOptions",
    "BODY_HU",
    "body_mask",
    "working_factors",
    "lung_mask",
    "lung_mask_with_airway",
    "lung_holes",
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
GAS_UNDER_LUNG_SHARE = 0.5
"""A gas pocket joined to the lung (:func:`_joined_gas_pockets`) is dropped only when it lies under the lung: lung
above it in at least this share of its columns, and beneath it in less. A stomach or colon bubble under the
diaphragm has the lung base above it and nothing beneath; a bulla or an airway inside the lung has lung beneath it,
and a whole emphysematous lung joined to the other one has none above it. On the thin-slice COVID-19 CT of
``shared/`` the stomach has lung above it in 91% of its columns and beneath it in 1% (logged at debug level)."""
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
"""The trachea and main bronchi (:func:`~infnet_monai.postprocessing.airway.find_airway`) are dilated by this
distance (mm) before removal, taking the partial-volume rim of their lumen with them."""
AIRWAY_MAX_LUNG_FRACTION = 0.3
"""When the detected airway holds more than this fraction of the lung candidate, it is not the central airway (a
growth into emphysematous parenchyma) and airway removal is skipped."""
DOME_MIN_AREA_MM2 = 600.0
"""A hole of the lung that opens into non-lung tissue through the slice above or below it
(:func:`~infnet_monai.postprocessing.morphology.fill_enclosed_holes`) and reaches this in-plane area (mm^2) is an
organ's dome (liver, spleen, stomach seen as an island in the lung base), not a vessel, and is not filled. On the
four chest CTs in ``shared/`` the domes measure 8.5-31 cm^2 and the open vessel holes at the hila at most 3.6 cm^2;
the midpoint of that gap, taken without each scan in turn, makes the same decisions on it
(``scripts/evaluate_3d.py --holes``)."""
MIN_SIDE_FRACTION = 0.2
"""A lung component with at least this fraction of its voxels on each side of the body centre holds both lungs
(joined at the anterior / posterior junction) and is split."""
MAX_SEPARATION_EROSION_MM = 12.0
"""Largest erosion depth (mm) tried to separate joined lungs before falling back to the body midline."""
WORKING_SPACING_MM = 2.0
"""Volumes with finer voxels are block-averaged to about this voxel size (mm) for the morphology, and the label
map is brought back to the input grid at the end."""

BODY_HU = -500.0
"""Voxels above this (HU) are tissue for :func:`body_mask`."""

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
        dome_min_area_mm2: open holes this large stay unfilled (:data:`DOME_MIN_AREA_MM2`); ``inf`` fills every
            hole in-plane, 0 none that opens.
    """

    threshold_hu: float = LUNG_THRESHOLD_HU
    pure_air_hu: float = PURE_AIR_HU
    max_pure_air_fraction: float = MAX_PURE_AIR_FRACTION
    min_component_ml: float = MIN_LUNG_COMPONENT_ML
    min_relative_volume: float = MIN_RELATIVE_COMPONENT_VOLUME
    closing_radius_mm: float = CLOSING_RADIUS_MM
    remove_airway: bool = True
    working_spacing_mm: float | None = WORKING_SPACING_MM
    dome_min_area_mm2: float = DOME_MIN_AREA_MM2

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
        if not self.dome_min_area_mm2 >= 0:
            raise ValueError(f"dome_min_area_mm2 must be >= 0, got {self.dome_min_area_mm2}.")
        if self.working_spacing_mm is not None and self.working_spacing_mm <= 0:
            raise ValueError(f"working_spacing_mm must be positive or None, got {self.working_spacing_mm}.")




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
    counts = label_counts(labels, n).astype(np.float64)
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
    interpolation). A component without interior (a thin sliver) is measured on all of its voxels. Counted inside the
    candidate's bounding box grown by the filter's reach (index 0, the background, is not meaningful): outside it the
    filter sees only background, as it does inside on the box's faces that are not the array's.
    """
    size = [2 * max(1, int(round(INTERIOR_DEPTH_MM / s))) + 1 for s in spacing]
    box = bounding_box(candidate, [z // 2 for z in size])
    labels = labels[box]
    pure = volume_hu[box] < pure_air_hu
    # box-shaped erosion by the interior depth (separable minimum filter: cheap on large volumes)
    interior = ndi.minimum_filter(candidate[box], size=size, mode="nearest")
    n_all = label_counts(labels, n)
    n_pure = label_counts(labels, n, pure)
    n_in = label_counts(labels, n, interior)
    n_in_pure = label_counts(labels, n, pure & interior)
    use_interior = n_in > 0
    num = np.where(use_interior, n_in_pure, n_pure)
    den = np.maximum(np.where(use_interior, n_in, n_all), 1)
    return num / den


def _joined_gas_pockets(candidate: np.ndarray, volume_hu: np.ndarray, spacing: tuple[float, float, float],
                        opts: LungMaskOptions) -> np.ndarray:
    """Gas under the lung joined to it through partial volume (a stomach or colon bubble under a thin diaphragm):
    what to take out of ``candidate`` (the lung components, a boolean array on ``volume_hu``'s grid).

    The candidate's interior (deeper than :data:`INTERIOR_DEPTH_MM`, the box of :func:`_pure_air_fraction`) falls
    apart at such a bridge. A piece of it is gas by the rule that rejects a separate component (more than
    ``max_pure_air_fraction`` of its voxels below ``pure_air_hu``, at least ``min_component_ml``) when, besides, it
    lies under the lung (:data:`GAS_UNDER_LUNG_SHARE`). Such a piece is returned with its rim (the piece grown by the
    same box, within the candidate)."""
    out = np.zeros(candidate.shape, dtype=bool)
    size = [2 * max(1, int(round(INTERIOR_DEPTH_MM / s))) + 1 for s in spacing]
    box = bounding_box(candidate, [z // 2 for z in size])
    cand = candidate[box]
    labels, n = connected_components(ndi.minimum_filter(cand, size=size, mode="nearest"), 6)
    if n < 2:  # one interior: nothing is joined through a bridge
        return out
    counts = label_counts(labels, n)
    pure = label_counts(labels, n, volume_hu[box] < opts.pure_air_hu)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    gas = (pure > opts.max_pure_air_fraction * counts) & (counts * voxel_ml >= opts.min_component_ml)
    gas[0] = False
    objects = ndi.find_objects(labels)
    for i in np.flatnonzero(gas):
        sl = objects[i - 1]
        piece = np.zeros(cand.shape, dtype=bool)
        piece[sl] = labels[sl] == i
        grown = ndi.maximum_filter(piece, size=size, mode="constant") & cand
        rest = cand & ~grown
        columns, in_rest = piece.any(axis=2), rest.any(axis=2)
        top = cand.shape[2] - 1 - np.argmax(piece[:, :, ::-1], axis=2)  # per column (RAS: axis 2 superior)
        bottom = np.argmax(piece, axis=2)
        rest_top = np.where(in_rest, cand.shape[2] - 1 - np.argmax(rest[:, :, ::-1], axis=2), -1)
        rest_bottom = np.where(in_rest, np.argmax(rest, axis=2), cand.shape[2])
        above = float(np.mean(rest_top[columns] > top[columns]))
        beneath = float(np.mean(rest_bottom[columns] < bottom[columns]))
        under = above >= GAS_UNDER_LUNG_SHARE > beneath
        logger.debug(
            "lung_mask: %.1f mL of gas joined to the lung, lung above it in %.0f%% of its columns and beneath it in "
            "%.0f%%: %s.", counts[i] * voxel_ml, 100 * above, 100 * beneath, "dropped" if under else "kept",
        )
        if under:
            out[box] |= grown
    return out


def _reselect(candidate: np.ndarray, removed: np.ndarray, what: str, voxel_ml: float, opts: LungMaskOptions):
    """Step 3's selection redone on ``candidate`` less ``removed``: ``(candidate, labels, kept)``, or ``None``
    (logged, naming ``what`` was removed) when no lung component is left."""
    candidate = candidate & ~removed
    labels, n = connected_components(candidate, 6)
    kept = _select_components(labels, n, voxel_ml, opts.min_component_ml, opts.min_relative_volume)
    if not kept:
        logger.info("lung_mask: nothing left after removing the %s; empty mask.", what)
        return None
    return np.isin(labels, kept), labels, kept


def _split_joined(
    component: np.ndarray, spacing: tuple[float, float, float], body_centre: float, max_erosion_mm: float
) -> np.ndarray:
    """Split a component holding both lungs; returns a label map (right / left labels) on the component."""
    box = bounding_box(component)
    comp = component[box]
    offset0 = box[0].start
    n_iter = max(1, int(math.ceil(max_erosion_mm / min(spacing))))
    eroded = comp
    total = comp.sum()
    for _ in range(n_iter):
        eroded = ndi.binary_erosion(eroded, structure=FACE_3D, border_value=1)
        if not eroded.any():
            break
        labels, n = connected_components(eroded, 6)
        if n < 2:
            continue
        counts = label_counts(labels, n)
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


def _lung_mask_working(
    volume_hu: np.ndarray, spacing: tuple[float, float, float], opts: LungMaskOptions
) -> tuple[np.ndarray, Airway | None]:
    """The whole segmentation on one grid (see :func:`lung_mask`), and the central airway it found there."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = np.zeros(volume_hu.shape, dtype=np.uint8)

    air = volume_hu < opts.threshold_hu
    # body: the largest non-air component, with its in-slice cavities (lungs, gas) filled
    tissue_labels, n_tissue = connected_components(~air, 6)
    if n_tissue == 0:
        logger.info("lung_mask: the volume holds no voxel above %.0f HU (no body); empty mask.", opts.threshold_hu)
        return out, None
    tissue_counts = label_counts(tissue_labels, n_tissue)
    tissue_counts[0] = 0
    body = fill_holes_axial(tissue_labels == int(np.argmax(tissue_counts)))
    del tissue_labels
    candidate = air & body
    if not candidate.any():
        logger.info("lung_mask: no air-like voxel inside the body; empty mask.")
        return out, None

    # air-like components inside the body; gas-like ones (mostly pure air) are not lung
    labels, n = connected_components(candidate, 6)
    lung_like = _pure_air_fraction(labels, n, candidate, volume_hu, spacing, opts.pure_air_hu) <= opts.max_pure_air_fraction
    lung_like[0] = False
    kept = _select_components(labels, n, voxel_ml, opts.min_component_ml, opts.min_relative_volume, allowed=lung_like)
    if not kept:
        logger.info("lung_mask: no lung-like air component of at least %.1f mL; empty mask.", opts.min_component_ml)
        return out, None
    candidate = np.isin(labels, kept)
    del labels

    z_has = candidate.any(axis=(0, 1))
    x_coords = np.nonzero(body[:, :, z_has])[0]
    body_centre = float(x_coords.mean()) if x_coords.size else (volume_hu.shape[0] - 1) / 2.0

    found, airway = None, None
    if opts.remove_airway:
        found, airway = _central_airway(volume_hu, spacing, body, candidate, int(np.flatnonzero(z_has)[-1]))
    if airway is not None:
        logger.debug("lung_mask: removed %.1f mL of trachea / main bronchi.", airway.sum() * voxel_ml)
        selected = _reselect(candidate, airway, "trachea / main bronchi", voxel_ml, opts)
        if selected is None:
            return out, found
        candidate, labels, kept = selected
    else:
        labels, n = connected_components(candidate, 6)
        kept = list(range(1, n + 1))
    gas = _joined_gas_pockets(candidate, volume_hu, spacing, opts)
    if gas.any():  # a stomach or colon bubble joined to a lung base through a thin diaphragm
        logger.debug("lung_mask: removed %.1f mL of gas joined to the lung.", gas.sum() * voxel_ml)
        selected = _reselect(candidate, gas, "gas joined to the lung", voxel_ml, opts)
        if selected is None:
            return out, found
        candidate, labels, kept = selected
    del gas

    sides = _assign_sides(labels, kept, spacing, body_centre)
    del labels
    _close_and_fill(sides, out, spacing, opts.closing_radius_mm, opts.dome_min_area_mm2)
    if airway is not None:
        out[airway] = 0
    return out, found


def _central_airway(
    volume_hu, spacing, body: np.ndarray, candidate: np.ndarray, air_top: int
) -> tuple[Airway | None, np.ndarray | None]:
    """The trachea and main bronchi (:func:`~infnet_monai.postprocessing.airway.find_airway`) as found, and as
    removed from the lung: dilated by :data:`AIRWAY_DILATION_MM`, inside the lung candidate; ``None`` when there is
    none, and the removal also when it is implausibly large."""
    found = find_airway(volume_hu, spacing, body, air_top=air_top)
    if found is None:
        return None, None
    airway = dilate_mm(found.lumen, AIRWAY_DILATION_MM, spacing) & candidate
    n_airway, n_candidate = int(np.count_nonzero(airway)), int(np.count_nonzero(candidate))
    if n_airway > AIRWAY_MAX_LUNG_FRACTION * n_candidate:
        logger.warning(
            "lung_mask: the airway found holds %.0f%% of the air-like region (not the central airway); airway "
            "removal skipped.", 100.0 * n_airway / n_candidate,
        )
        return found, None
    return found, airway


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


def _close_and_fill(sides: np.ndarray, out: np.ndarray, spacing, closing_radius_mm: float, dome_min_area_mm2: float) -> None:
    """Per lung of ``sides``: closing (dense tissue against the border), then the filling of the holes that are
    enclosed (vessels, lesions) but not of the domes that open into the abdomen (``dome_min_area_mm2``), written
    into ``out`` where it is still background."""
    pad = [int(math.ceil(closing_radius_mm / s)) + 1 for s in spacing]
    for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        lung = sides == lab
        if not lung.any():
            continue
        box = bounding_box(lung, pad)
        filled, domes = fill_enclosed_holes(closing_mm(lung[box], closing_radius_mm, spacing), spacing, dome_min_area_mm2)
        if domes.any():
            logger.debug("lung_mask: %.1f mL of organ dome left out of the lung.", domes.sum() * float(np.prod(spacing)) / 1000.0)
        region = out[box]
        region[filled & (region == 0)] = lab


def lung_holes(
    lung: np.ndarray, spacing: Sequence[float], dome_min_area_mm2: float = DOME_MIN_AREA_MM2
) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray, np.ndarray]]:
    """Per lung of a label map, :func:`~infnet_monai.postprocessing.morphology.fill_enclosed_holes` on its bounding
    box one slice taller (so that a dome opening just below the lung's lowest slice is seen as open): yields
    ``(label, box, filled, domes)``, ``filled`` that lung filled and ``domes`` its open holes left unfilled, both on
    ``box``. Lazy: a caller that writes one lung's filling into ``lung`` before the next is yielded sees it."""
    for label in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        one = lung == label
        if one.any():
            box = bounding_box(one, (0, 0, 1))
            yield (label, box, *fill_enclosed_holes(one[box], spacing, dome_min_area_mm2))


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
    4. Trachea / main bronchi (``remove_airway``): found in 3D from the tracheal air column
       (:func:`~infnet_monai.postprocessing.airway.find_airway`), dilated by :data:`AIRWAY_DILATION_MM` and removed
       (nothing happens when there is none, e.g. an abdominal scan). Then gas joined to a lung through partial volume
       (a stomach or colon bubble under a thin diaphragm) is removed: a piece of the components' interior that step
       3's rule calls gas, with no lung beneath it in most of its columns (:func:`_joined_gas_pockets`). Step 3's
       selection is redone after each.
    5. Right / left: a component lies on the side of the body centre (mean axis-0 index of the body in the slices
       with lung) holding most of its voxels; larger axis-0 index is the patient's right. A component with at least
       :data:`MIN_SIDE_FRACTION` of its voxels on each side holds both lungs joined at a junction line: it is
       eroded (up to :data:`MAX_SEPARATION_EROSION_MM`) until it falls into a right and a left piece, whose
       voxels then claim the rest of the component by nearest distance; failing that it is cut at the midline.
    6. Per lung: closing by a Euclidean ball of ``closing_radius_mm`` and the filling of enclosed holes, so vessels
       and dense lesions (consolidation, about +40 HU) enclosed by aerated lung are part of the lung; an island that
       opens into the abdomen through the slices below (the liver or spleen dome, :data:`DOME_MIN_AREA_MM2`) is not.

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
            ``working_spacing_mm``, ``dome_min_area_mm2``); the others keep their defaults.

    Returns:
        ``uint8`` array of shape ``(X, Y, Z)``: 0 background, :data:`RIGHT_LUNG_LABEL` (1) right lung,
        :data:`LEFT_LUNG_LABEL` (2) left lung. All zeros (with a logged warning) when no lung is found.

    Raises:
        ValueError: when ``volume_hu`` is not a non-empty 3D array, ``spacing_mm`` is not 3 positive sizes, or a
            parameter is out of range.
    """
    return lung_mask_with_airway(volume_hu, spacing_mm, **options)[0]


def lung_mask_with_airway(
    volume_hu: np.ndarray, spacing_mm: Sequence[float], **options: Any
) -> tuple[np.ndarray, Airway | None]:
    """:func:`lung_mask`, and the central airway it found on its working grid.

    The airway is :func:`~infnet_monai.postprocessing.airway.find_airway`'s on the grid the lung was segmented on
    (its :attr:`~infnet_monai.postprocessing.airway.Airway.factors` say which), also when its removal was skipped
    as implausibly large (:data:`AIRWAY_MAX_LUNG_FRACTION`). The anatomical self-check ``trachea_in_lung_percent``
    (:mod:`infnet_monai.stats.anatomy`) can take it instead of tracking the trachea again.

    Args:
        volume_hu, spacing_mm, options: as for :func:`lung_mask`.

    Returns:
        ``(labels, airway)``: the label map of :func:`lung_mask`, and the
        :class:`~infnet_monai.postprocessing.airway.Airway` (``None`` when none was found, the airway removal is off
        or the scan holds no lung).
    """
    volume_hu = check_volume(volume_hu, "volume_hu")
    spacing = check_spacing_mm(spacing_mm)
    opts = LungMaskOptions(**options)
    if not (np.issubdtype(volume_hu.dtype, np.floating) or np.issubdtype(volume_hu.dtype, np.signedinteger)):
        raise ValueError(f"volume_hu must hold signed integer or float Hounsfield units, got dtype {volume_hu.dtype}.")
    factors = working_factors(volume_hu.shape, spacing, opts.working_spacing_mm)
    if factors == [1, 1, 1]:
        return _lung_mask_working(volume_hu, spacing, opts)

    coarse_spacing = tuple(s * f for s, f in zip(spacing, factors))
    coarse, airway = _lung_mask_working(block_mean(volume_hu, factors), coarse_spacing, opts)  # type: ignore[arg-type]
    if airway is not None:
        airway = replace(airway, factors=tuple(factors))
    return _to_full_resolution(coarse, factors, volume_hu, opts.threshold_hu), airway


def _to_full_resolution(coarse: np.ndarray, factors, volume_hu: np.ndarray, threshold_hu: float) -> np.ndarray:
    """The coarse label map upsampled (nearest) onto ``volume_hu``'s grid, its boundary layer trimmed of the voxels
    that are not air-like at full resolution."""
    if not coarse.any():
        return np.zeros(volume_hu.shape, dtype=np.uint8)
    inner = coarse > 0
    # the erosion inside the lung's bounding box one voxel wider: outside it nothing is lung, and the array's own
    # border (border_value=1) stays where the box reaches it
    box = bounding_box(inner, (1, 1, 1))
    band = np.zeros(inner.shape, dtype=bool)
    band[box] = inner[box] & ~ndi.binary_erosion(inner[box], structure=FULL_3D, border_value=1)
    out = upsample_labels(coarse, factors, volume_hu.shape)
    band_full = upsample_labels(band, factors, volume_hu.shape)
    out[rowwise(lambda b, v: b & (v >= threshold_hu), band_full, volume_hu)] = 0
    return out


def working_factors(shape: Sequence[int], spacing: Sequence[float], working_spacing_mm: float | None = WORKING_SPACING_MM) -> list[int]:
    """Integer block sizes per axis that bring voxels of ``spacing`` to about ``working_spacing_mm`` (keeping at
    least 3 blocks per axis); all 1 for ``None`` or coarser voxels."""
    if working_spacing_mm is None:
        return [1, 1, 1]
    factors = [max(1, int(math.floor(working_spacing_mm / s + 1e-6))) for s in spacing]
    return [f if n // f >= 3 else 1 for f, n in zip(factors, shape)]


def body_mask(volume_hu: np.ndarray) -> np.ndarray:
    """Tissue denser than :data:`BODY_HU` with its cavities (lungs, gas) filled in every axial slice, ``(X, Y, Z)``."""
    return fill_holes_axial(np.asarray(volume_hu) > BODY_HU)


