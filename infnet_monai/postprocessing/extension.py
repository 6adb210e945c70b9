# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""The pathology-inclusive lung: infection that the network finds against the Hounsfield-unit lung joins it.

Arrays follow :mod:`infnet_monai.postprocessing.lung` (RAS, axis 2 axial, lung labels 1 right and 2 left).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from infnet_monai.postprocessing.lung import DOME_MIN_AREA_MM2, LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL, lung_holes
from infnet_monai.postprocessing.morphology import check_volume, connected_components, row_slabs
from infnet_monai.postprocessing.thorax import below_lung, lung_floor, thoracic_envelope
from infnet_monai.utils.arrays import SLAB_SLICES, bounding_box
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "EXTENSION_MAX_HU",
    "EXTENSION_THRESHOLD",
    "EXTENSION_MIN_AREA_FRACTION",
    "EXTENSION_EDGE_RISE",
    "EXTENSION_EDGE_RISE_MM",
    "extension_slices",
    "extend_lung",
    "extension_threshold_for",
]

logger = logging.getLogger(__name__)

EXTENSION_MAX_HU = 200.0
"""Voxels denser than this (HU: bone, contrast, metal) are never added to the lung by :func:`extend_lung`;
consolidation measures about -100 to +100 HU."""

EXTENSION_THRESHOLD = 0.3
"""Infection probability at or above which tissue against the lung joins it (:func:`extend_lung`). Below the
infection threshold (0.5), so the lung also takes in the uncertain rim of a consolidation: on the 50 labeled slices
rebuilt as CT, 96.6% of the true infection lies inside the lung at 0.5 and 96.9% at 0.3, while the infection found on
the real scans in ``shared/`` does not change (``scripts/evaluate_3d.py``)."""


def extension_threshold_for(threshold: float) -> float:
    """The lung extension's probability threshold for an infection ``threshold``: :data:`EXTENSION_THRESHOLD`, or the
    infection threshold when that is lower, so that the lung takes in every lesion it touches. The one place this
    rule lives (the settings, the post-processing and the bundle call it)."""
    return float(min(float(threshold), EXTENSION_THRESHOLD))
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
    lung = np.asarray(lung)
    ok = np.zeros((3, lung.shape[2]), dtype=bool)
    total = np.zeros(lung.shape[2], dtype=np.int64)
    areas = {lab: np.zeros(lung.shape[2], dtype=np.int64) for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)}
    for rows in row_slabs(lung.shape):  # the axial area profiles, in one pass
        part = lung[rows]
        total += np.count_nonzero(part > 0, axis=(0, 1))
        for lab, area in areas.items():
            area += np.count_nonzero(part == lab, axis=(0, 1))
    if not total.any() or not _holds_widest_level(total, float(spacing_mm[2])):
        return ok
    for lab, area in areas.items():
        if area.max() > 0:
            ok[lab] = (area >= min_area_fraction * area.max()) & (area > 0)
    return ok


def _nearest_lung_labels(labels: np.ndarray, where: np.ndarray, spacing) -> np.ndarray:
    """The label (right or left lung) of the lung voxel of ``labels`` nearest to each voxel of ``where``, in mm.

    Both squared distance maps come from ``edt`` (exact Euclidean distance transforms, in threads): about 3x faster
    than scipy's feature transform over the same box, which also holds every voxel's nearest index. A voxel exactly as
    far from both lungs goes to the right lung (scipy's tie-breaking, which this replaces, is an implementation
    detail; no such voxel occurs on the real scans in ``shared/``)."""
    import edt
    import torch

    anisotropy = tuple(float(s) for s in spacing)
    threads = max(1, int(torch.get_num_threads()))  # the threads the run was given (OMP_NUM_THREADS)
    right, left = (
        edt.edtsq(labels != lab, anisotropy=anisotropy, black_border=False, parallel=threads)[where]
        for lab in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)
    )
    return np.where(right <= left, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL).astype(labels.dtype)


def _join_nearest_lung(out: np.ndarray, added: np.ndarray, box: tuple[slice, ...], spacing, per_label: np.ndarray) -> None:
    """Give each voxel of ``added`` (a mask on ``box`` of ``out``) the label of the nearest lung voxel of ``out``
    (spacing-aware), on the box around the added voxels 2 voxels wider, unless that lung may not be extended on its
    slice (``per_label``); ``out`` is changed in place."""
    tight = bounding_box(added)
    near = tuple(
        slice(max(b.start + t.start - 2, 0), min(b.start + t.stop + 2, size)) for b, t, size in zip(box, tight, out.shape)
    )
    add = np.zeros(tuple(s.stop - s.start for s in near), dtype=bool)
    src = tuple(slice(max(s.start - b.start, 0), min(s.stop, b.stop) - b.start) for s, b in zip(near, box))
    dst = tuple(slice(max(b.start - s.start, 0), max(b.start - s.start, 0) + (w.stop - w.start)) for s, b, w in zip(near, box, src))
    add[dst] = added[src]
    sub = out[near]
    sub[add] = _nearest_lung_labels(sub, add, spacing)
    z = np.arange(near[2].start, near[2].stop)[None, None, :]
    sub[add & ~per_label[sub, np.broadcast_to(z, sub.shape)]] = 0
    add &= sub > 0
    logger.debug("extend_lung: %.1f mL of infection against the lung added to it.", add.sum() * float(np.prod(spacing)) / 1000.0)


def _keep_inside_thorax(found: np.ndarray, lung: np.ndarray, volume_hu: np.ndarray, spacing) -> None:
    """``found`` (changed in place) without the voxels below the lung (the diaphragm and the organs beneath it) and
    outside the thoracic envelope (the chest wall outside the ribs)."""
    floor = lung_floor(lung)
    z = np.flatnonzero(found.any(axis=(0, 1)))
    if z.size:
        z0, z1 = int(z[0]), int(z[-1]) + 1
        for rows in row_slabs(found.shape):  # the slices holding found voxels, slabs of whole rows
            found[rows, :, z0:z1] &= ~below_lung(floor[rows], z0, z1)
    slices = np.flatnonzero(found.any(axis=(0, 1)))
    for start in range(0, slices.size, SLAB_SLICES):
        part = slices[start : start + SLAB_SLICES]
        found[:, :, part] &= thoracic_envelope(volume_hu, lung, spacing, part)


def extend_lung(
    lung: np.ndarray,
    probability: np.ndarray,
    volume_hu: np.ndarray,
    spacing_mm: Sequence[float],
    threshold: float = EXTENSION_THRESHOLD,
    max_hu: float = EXTENSION_MAX_HU,
    min_area_fraction: float = EXTENSION_MIN_AREA_FRACTION,
    in_place: bool = False,
    thorax: bool = True,
    dome_min_area_mm2: float = DOME_MIN_AREA_MM2,
) -> np.ndarray:
    """Pathology-inclusive lung: the Hounsfield-unit lung plus the infection found against it.

    Dense consolidation at the pleura, the mediastinum or the diaphragm has soft-tissue density, so a lung mask from
    Hounsfield units (:func:`~infnet_monai.postprocessing.lung.lung_mask`) leaves it out, and with it the disease of
    the sickest patients. The infection model sees it. Every 3D component (26-connected) of
    ``probability >= threshold`` that touches the lung joins it, without voxels denser than ``max_hu`` (bone), only
    on the slices :func:`extension_slices` allows, and (``thorax``) only inside the thoracic envelope and above the
    diaphragm: infection is always inside the bony thorax, and what lies under the lung (the liver and spleen
    domes, the stomach, the heart) is not lung. Each added voxel takes the label of the nearest lung voxel, and the
    holes of each lung are then filled as :func:`~infnet_monai.postprocessing.lung.lung_mask` fills them
    (:func:`~infnet_monai.postprocessing.morphology.fill_enclosed_holes`): what the added infection encloses joins
    the lung, an organ's dome that shows as an island in the lung base and opens below stays out. (Filling every
    in-plane hole put a 22 mL soft-tissue dome under the left diaphragm of ``covid_ct_md_P001`` back into the lung
    that the Hounsfield-unit mask had left out.)

    Args:
        lung: ``(X, Y, Z)`` label map from :func:`lung_mask` (RAS).
        probability: ``(X, Y, Z)`` infection probability in [0, 1].
        volume_hu: ``(X, Y, Z)`` CT in Hounsfield units.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        threshold: probability at or above which a voxel may be added.
        max_hu: voxels above this density are never added.
        min_area_fraction: see :data:`EXTENSION_MIN_AREA_FRACTION`.
        in_place: extend a ``uint8`` ``lung`` itself instead of a copy (saves one mask's memory on long scans).
        thorax: add only inside the thoracic envelope (the hull of the lung and the ribs next to it) and never below
            the lung (:mod:`~infnet_monai.postprocessing.thorax`); ``False`` lifts both limits.
        dome_min_area_mm2: holes that open into non-lung tissue through the slice above or below and reach this
            in-plane area (mm^2) stay unfilled (:data:`~infnet_monai.postprocessing.lung.DOME_MIN_AREA_MM2`, as the
            lung mask); ``inf`` fills every in-plane hole.

    Returns:
        ``uint8`` label map like ``lung``, a superset of it.
    """
    lung = check_volume(lung, "lung")
    for name, arr in (("probability", probability), ("volume_hu", volume_hu)):
        if np.shape(arr) != lung.shape:
            raise ValueError(f"{name} must have the lung's shape {lung.shape}, got {np.shape(arr)}.")
    spacing = check_spacing_mm(spacing_mm)
    if not dome_min_area_mm2 >= 0:
        raise ValueError(f"dome_min_area_mm2 must be >= 0, got {dome_min_area_mm2}.")
    probability, volume_hu = np.asarray(probability), np.asarray(volume_hu)
    out = lung if in_place and lung.dtype == np.uint8 else np.asarray(lung, dtype=np.uint8).copy()
    per_label = extension_slices(out, spacing, min_area_fraction)  # all False without lung
    allowed = per_label.any(axis=0)
    if not allowed.any():
        return out
    # slab by slab on the allowed slices' range, and the rest inside bounding boxes: no full-size temporaries on long
    # scans
    found = np.zeros(out.shape, dtype=bool)
    z = np.flatnonzero(allowed)
    zs = slice(int(z[0]), int(z[-1]) + 1)
    for rows in row_slabs(out.shape):
        found[rows, :, zs] = (
            (probability[rows, :, zs] >= threshold) & (volume_hu[rows, :, zs] <= max_hu) & (out[rows, :, zs] == 0)
            & allowed[zs]
        )
    if thorax and found.any():
        _keep_inside_thorax(found, out, volume_hu, spacing)
    if not found.any():
        return out
    box = bounding_box(found, (1, 1, 1))
    inside = out[box] > 0
    labels, n = connected_components(found[box] | inside, 26)
    attached = np.zeros(n + 1, dtype=bool)
    attached[labels[inside]] = True
    attached[0] = False
    added = attached[labels] & found[box]  # on ``box``
    del labels, found, inside
    if not added.any():
        return out
    _join_nearest_lung(out, added, box, spacing, per_label)
    for lab, b, filled, _ in lung_holes(out, spacing, dome_min_area_mm2):
        region = out[b]
        region[filled & (region == 0)] = lab
    return out
