# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""The trachea and main bronchi of a chest CT, found in 3D from the tracheal air column.

The trachea is the one air-filled tube that runs cranio-caudally near the body's midline in the upper chest, from
the neck (above the lung apices) to the carina. :func:`find_airway` finds it by tracking small, compact air regions
from slice to slice, grows the airway tree from it in 3D (lowering the air threshold when the growth leaks into the
lung), finds the carina where the air column splits into the two main bronchi, and keeps the trachea and the main
bronchi down to :data:`MAIN_BRONCHUS_MM` below the carina.

Arrays follow :mod:`infnet_monai.postprocessing.lung`: ``(X, Y, Z)`` in RAS, axis 2 axial (larger index superior).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.morphology import FACE_3D, check_volume, connected_components, label_counts
from infnet_monai.utils.arrays import bounding_box
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "AIRWAY_LUMEN_HU",
    "AIRWAY_HIGHEST_HU",
    "TRACHEA_AIR_HU",
    "TRACHEA_AREA_MM2",
    "TRACHEA_MAX_WIDTH_MM",
    "TRACHEA_MAX_OFFSET_MM",
    "TRACHEA_MAX_STEP_MM",
    "TRACHEA_MIN_LENGTH_MM",
    "AIRWAY_MAX_VOLUME_ML",
    "MAIN_BRONCHUS_MM",
    "Airway",
    "find_airway",
]

logger = logging.getLogger(__name__)

AIRWAY_LUMEN_HU = -950.0
"""First air threshold (HU) of the airway growth from the tracked column: the lumen. It is raised in steps of
25 HU up to :data:`AIRWAY_HIGHEST_HU` until the growth shows the split into the main bronchi, and never to a value
at which it leaks into the lung (:data:`AIRWAY_MAX_VOLUME_ML`). Normal parenchyma lies around -850 HU, the airway
lumen at -1000 HU."""
AIRWAY_HIGHEST_HU = -850.0
"""Highest air threshold (HU) of the airway growth."""
TRACHEA_AIR_HU = -500.0
"""Air threshold (HU) of the tracheal column's tracking. Well above the lumen's -1000 HU: at the thoracic inlet the
narrow trachea between the shoulders measures -900 to -600 HU (partial volume, beam hardening)."""
TRACHEA_AREA_MM2 = (40.0, 900.0)
"""In-plane area (mm^2) of the tracheal lumen on one slice: adult tracheal diameters are 13-25 mm (130-490 mm^2),
with room for a child and a dilated trachea."""
TRACHEA_MAX_WIDTH_MM = 40.0
"""Neither side of the tracheal lumen's in-plane bounding box is longer than this (mm)."""
TRACHEA_MAX_OFFSET_MM = 40.0
"""The tracheal lumen's centre lies within this distance (mm, along the left-right axis) of the body's centre."""
TRACHEA_MAX_STEP_MM = 8.0
"""From one slice to the next, the tracked lumen's centre moves less than this (mm, in-plane)."""
TRACHEA_MIN_LENGTH_MM = 20.0
"""A tracked tube shorter than this (mm, cranio-caudal) is not the trachea (an air pocket of the oesophagus, a
slice of bowel)."""
AIRWAY_MAX_VOLUME_ML = 250.0
"""A grown airway larger than this (mL) has leaked into the parenchyma: the threshold is lowered and the growth
redone. Trachea and bronchial tree lumen together are well below it."""
MAIN_BRONCHUS_MM = 30.0
"""Below the carina, the airway is kept to this geodesic distance (mm) along it: the main bronchi (right about
25 mm, left about 50 mm long, the left one partly covered). The lobar bronchi and beyond belong to the lung."""

_THRESHOLD_STEP_HU = 25.0
_MIN_BRANCH_MM2 = 15.0  # an air region smaller than this on a slice below the trachea is not a main bronchus


@dataclass
class Airway:
    """The central airway of a scan, on the grid it was found on.

    Attributes:
        lumen: ``(X, Y, Z)`` bool, the air of the trachea and the main bronchi.
        trachea: ``(X, Y, Z)`` bool, the tracheal air column above the carina (part of ``lumen``).
        carina_index: axial index of the first slice below the trachea (the carina), or ``None`` when the scan
            ends before the airway splits.
        threshold_hu: the air threshold the growth used.
        factors: block sizes per axis of the grid it was found on, relative to the CT it belongs to (the lung
            mask's working grid, :func:`~infnet_monai.postprocessing.lung.working_factors`); ``(1, 1, 1)`` when
            found on the CT's own grid.
    """

    lumen: np.ndarray
    trachea: np.ndarray
    carina_index: int | None
    threshold_hu: float
    factors: tuple[int, int, int] = (1, 1, 1)


def _tube_candidates(air: np.ndarray, body: np.ndarray, spacing) -> list[list[tuple[float, float, np.ndarray]]]:
    """Per axial slice, the compact midline air regions: ``(x_mm, y_mm, region mask)``."""
    pixel = spacing[0] * spacing[1]
    lo, hi = TRACHEA_AREA_MM2
    out: list[list[tuple[float, float, np.ndarray]]] = []
    # slice first, so that every slice is contiguous
    air_in_body = np.ascontiguousarray(np.moveaxis(air & body, 2, 0))
    body_rows = np.moveaxis(body.any(axis=1), 1, 0)  # (Z, X): the body's extent along axis 0 per slice
    for k, sl in enumerate(air_in_body):
        found: list[tuple[float, float, np.ndarray]] = []
        if sl.any():
            xs = np.flatnonzero(body_rows[k])
            centre_x = 0.5 * (xs[0] + xs[-1]) * spacing[0]
            labels, n = connected_components(sl[:, :, None], 26)  # in-plane 8-connected
            labels = labels[:, :, 0]
            areas = label_counts(labels, n) * pixel  # the area test first: most air regions fail it
            for i, box in enumerate(ndi.find_objects(labels), start=1):
                width = max((box[0].stop - box[0].start) * spacing[0], (box[1].stop - box[1].start) * spacing[1])
                if not lo <= areas[i] <= hi or width > TRACHEA_MAX_WIDTH_MM:
                    continue
                region = labels[box] == i
                cx, cy = (float(c) for c in ndi.center_of_mass(region))
                x_mm, y_mm = (box[0].start + cx) * spacing[0], (box[1].start + cy) * spacing[1]
                if abs(x_mm - centre_x) > TRACHEA_MAX_OFFSET_MM:
                    continue
                mask = np.zeros(sl.shape, dtype=bool)
                mask[box] = region
                found.append((x_mm, y_mm, mask))
        out.append(found)
    return out


def _longest_track(candidates, spacing) -> list[tuple[int, np.ndarray]]:
    """The longest chain of candidates on consecutive slices (centres closer than :data:`TRACHEA_MAX_STEP_MM`),
    from the top down; ties go to the larger mean area. ``[(slice index, region), ...]``."""
    best: list[tuple[int, np.ndarray, int]] = []
    best_key = (0, 0.0)
    active: list[tuple[float, float, list[tuple[int, np.ndarray, int]]]] = []
    for k in range(len(candidates) - 1, -1, -1):  # superior to inferior
        extended = []
        for x, y, mask in candidates[k]:
            prev = [t for t in active if np.hypot(t[0] - x, t[1] - y) < TRACHEA_MAX_STEP_MM]
            chain = max((t[2] for t in prev), key=len, default=[])
            extended.append((x, y, chain + [(k, mask, int(mask.sum()))]))  # the area counted once
        for _, _, chain in active + extended:
            key = (len(chain), float(np.mean([area for _, _, area in chain])))
            if key > best_key:
                best, best_key = chain, key
        active = extended
    return [(k, mask) for k, mask, _ in best]


def _grow(volume_hu: np.ndarray, body: np.ndarray, seeds: np.ndarray, threshold: float, max_voxels: int) -> np.ndarray | None:
    """The air below ``threshold`` connected to ``seeds`` (with them), or ``None`` when it exceeds ``max_voxels``
    (a leak into the lung)."""
    labels, _ = connected_components(((volume_hu < threshold) & body) | seeds, 6)
    ids = np.unique(labels[seeds])
    grown = np.isin(labels, ids[ids > 0])
    return None if np.count_nonzero(grown) > max_voxels else grown


def _branches(grown: np.ndarray, k: int, pixel_mm2: float) -> int:
    """Separate air regions of at least :data:`_MIN_BRANCH_MM2` on slice ``k`` of the airway."""
    labels, n = connected_components(grown[:, :, k : k + 1], 26)  # in-plane 8-connected
    return int((np.bincount(labels.ravel())[1:] * pixel_mm2 >= _MIN_BRANCH_MM2).sum()) if n else 0


def _carina(grown: np.ndarray, top: int, bottom: int, spacing) -> int | None:
    """The highest slice of the split below the tracked column (``top`` to ``bottom``), where the airway holds two
    branches (the main bronchi); ``None`` when the air column ends without splitting. The tracked column may run on
    into the steeper right main bronchus, so the split is looked for upward from its bottom first."""
    pixel = spacing[0] * spacing[1]
    if _branches(grown, bottom, pixel) >= 2:
        k = bottom
        while k + 1 <= top and _branches(grown, k + 1, pixel) >= 2:
            k += 1
        return k
    for k in range(bottom - 1, -1, -1):
        n = _branches(grown, k, pixel)
        if n >= 2:
            return k
        if n == 0:
            return None
    return None


def _geodesic_ball(region: np.ndarray, start: np.ndarray, steps: int) -> np.ndarray:
    """The voxels of ``region`` within ``steps`` face-steps of ``start`` inside ``region``; grown inside the bounding
    box of ``region``, which holds every voxel it can reach."""
    reached = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return reached
    box = bounding_box(region)
    sub_region = region[box]
    sub = start[box] & sub_region
    for _ in range(steps):
        grown = ndi.binary_dilation(sub, structure=FACE_3D) & sub_region
        if (grown == sub).all():
            break
        sub = grown
    reached[box] = sub
    return reached


def find_airway(
    volume_hu: np.ndarray, spacing_mm: Sequence[float], body: np.ndarray, air_top: int | None = None
) -> Airway | None:
    """Trachea and main bronchi of a CT volume, or ``None`` when the scan shows no trachea (an abdominal scan, a
    slab of lung).

    Args:
        volume_hu: ``(X, Y, Z)`` CT in HU, RAS. Works on any grid; the pipeline passes its ~2 mm working grid.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        body: ``(X, Y, Z)`` bool, the body with its cavities filled (air outside it is never airway).
        air_top: the highest axial index holding air inside the body (the lungs or the trachea). The trachea
            reaches it, or the top of the scan (within :data:`TRACHEA_MIN_LENGTH_MM`): a midline air tube lower
            down (the oesophagus or bowel of an abdominal scan that holds only the lung bases) is not taken for it.

    Returns:
        :class:`Airway` on the grid of ``volume_hu``.
    """
    volume_hu = check_volume(volume_hu, "volume_hu")
    spacing = check_spacing_mm(spacing_mm)
    body = np.asarray(body, dtype=bool)
    track = _longest_track(_tube_candidates(volume_hu < TRACHEA_AIR_HU, body, spacing), spacing)
    if len(track) * spacing[2] < TRACHEA_MIN_LENGTH_MM:
        logger.debug("find_airway: no tracheal air column (longest midline tube %.0f mm).", len(track) * spacing[2])
        return None
    if air_top is not None:
        reach = min(int(air_top), volume_hu.shape[2] - 1 - int(round(TRACHEA_MIN_LENGTH_MM / spacing[2])))
        if track[0][0] < reach:
            logger.debug("find_airway: the midline air tube ends below the lungs' top; not a trachea.")
            return None
    seeds = np.zeros(volume_hu.shape, dtype=bool)
    for k, mask in track:
        seeds[:, :, k] = mask
    max_voxels = int(AIRWAY_MAX_VOLUME_ML / (float(np.prod(spacing)) / 1000.0))
    top, bottom = track[0][0], track[-1][0]
    grown, threshold, carina = seeds, TRACHEA_AIR_HU, None
    # the lowest threshold first: the lumen alone; higher ones reach narrower bronchi, until the split shows
    for t in np.arange(AIRWAY_LUMEN_HU, AIRWAY_HIGHEST_HU + 1.0, _THRESHOLD_STEP_HU):
        candidate = _grow(volume_hu, body, seeds, float(t), max_voxels)
        if candidate is None:
            break  # leaks into the lung: keep the last growth that did not
        grown, threshold = candidate, float(t)
        carina = _carina(grown, top, bottom, spacing)
        if carina is not None:
            break
    z = np.arange(volume_hu.shape[2])[None, None, :]
    if carina is None:  # no split in the scan: the tracked column's stretch of the airway
        trachea = grown & (z >= bottom) & (z <= top)
        return Airway(lumen=trachea, trachea=trachea, carina_index=None, threshold_hu=threshold)
    trachea = grown & (z > carina)
    below = grown & (z <= carina)
    start = np.zeros_like(below)
    start[:, :, carina] = below[:, :, carina]
    steps = int(round(MAIN_BRONCHUS_MM / float(np.mean(spacing))))
    bronchi = _geodesic_ball(below, start, steps)
    return Airway(lumen=trachea | bronchi, trachea=trachea, carina_index=int(carina), threshold_hu=threshold)
