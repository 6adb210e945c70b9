# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Where lung infection can be: inside the rib cage, above the diaphragm.

Three reference-free regions of a chest CT, each computed slice by slice or column by column so that long scans stay
in bounded memory:

- :func:`lung_floor`: per column ``(x, y)`` the lowest slice of the lung. Tissue below it, under the lung, is the
  diaphragm and what lies beneath (liver, spleen, stomach, heart): :func:`below_lung`.
- :func:`thoracic_envelope`: per axial slice the convex hull of the lung and of the ribs, spine and sternum next to
  it (bone above :data:`BONE_HU` within :data:`RIB_SEARCH_MM` of the lung), on slices that show such bone. The
  chest wall muscles outside the ribs lie outside it.
- :func:`bony_thorax`: per axial slice the convex hull of all bone above :data:`BONE_HU` inside the body, the
  reference of the anatomical self-check "infection outside the bony thorax"
  (:mod:`infnet_monai.stats.anatomy`).

Arrays follow :mod:`infnet_monai.postprocessing.lung` (RAS, axis 2 axial, larger index superior).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.morphology import axial_convex_hull, row_slabs
from infnet_monai.utils.arrays import bounding_box

__all__ = [
    "BONE_HU",
    "RIB_SEARCH_MM",
    "MIN_RIB_AREA_MM2",
    "lung_floor",
    "below_lung",
    "thoracic_envelope",
    "bony_thorax",
]

BONE_HU = 200.0
"""Voxels above this (HU) are bone (cortical bone measures 700-3000 HU, cancellous bone 200-700 HU)."""
RIB_SEARCH_MM = 25.0
"""Bone within this in-plane distance (mm) of the lung bounds the thoracic envelope: the ribs lie 5-15 mm outside
the pleura; the scapula, the humerus and the clavicle further out are left out, so that the muscles between them
and the ribs are not taken as thorax."""
MIN_RIB_AREA_MM2 = 100.0
"""A slice with less bone than this (mm^2) next to its lung shows no rib cage (a volume rebuilt from a slice, a
scan whose field of view stops inside the ribs): the envelope does not constrain it."""


def lung_floor(lung: np.ndarray) -> np.ndarray:
    """Per column ``(x, y)`` the lowest axial index holding lung, ``-1`` where the column holds none; ``(X, Y)`` int."""
    lung = np.asarray(lung)
    floor = np.full(lung.shape[:2], -1, dtype=np.int32)
    for rows in row_slabs(lung.shape):  # whole columns, a slab at a time: small temporaries
        inside = lung[rows] > 0
        has = inside.any(axis=2)
        floor[rows][has] = inside.argmax(axis=2)[has]
    return floor


def below_lung(floor: np.ndarray, z0: int, z1: int) -> np.ndarray:
    """Voxels of slices ``z0:z1`` that lie below the lung in their column (:func:`lung_floor`): ``(X, Y, z1 - z0)``
    bool."""
    z = np.arange(z0, z1, dtype=np.int32)[None, None, :]
    return z < floor[:, :, None]


def thoracic_envelope(
    volume_hu: np.ndarray, lung: np.ndarray, spacing_mm: Sequence[float], slices: Sequence[int] | np.ndarray
) -> np.ndarray:
    """The thoracic envelope on the axial ``slices`` asked for (see the module docstring); ``(X, Y, len(slices))``
    bool, all ``True`` on a slice without a rib cage next to its lung.

    Args:
        volume_hu: ``(X, Y, Z)`` CT in HU.
        lung: ``(X, Y, Z)`` lung mask or label map (voxels > 0).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        slices: axial indices.
    """
    slices = [int(k) for k in slices]
    # the slices asked for gathered at once (whole columns in C order) and put first, so that each slice is contiguous
    lung_part = np.ascontiguousarray(np.moveaxis(np.asarray(lung[:, :, slices]) > 0, 2, 0))
    hu_part = np.ascontiguousarray(np.moveaxis(np.asarray(volume_hu[:, :, slices]), 2, 0))
    out = np.ones((len(slices), *lung.shape[:2]), dtype=bool)
    sampling = (float(spacing_mm[0]), float(spacing_mm[1]))
    pixel_mm2 = sampling[0] * sampling[1]
    pad = [int(np.ceil(RIB_SEARCH_MM / s)) + 1 for s in sampling]
    for i, (lung_k, hu_k) in enumerate(zip(lung_part, hu_part)):
        if not lung_k.any():
            continue
        box = bounding_box(lung_k, pad)
        near = ndi.distance_transform_edt(~lung_k[box], sampling=sampling) <= RIB_SEARCH_MM
        bone = (hu_k[box] > BONE_HU) & near & ~lung_k[box]
        if np.count_nonzero(bone) * pixel_mm2 < MIN_RIB_AREA_MM2:
            continue
        out[i] = False
        out[i][box] = axial_convex_hull((lung_k[box] | bone)[:, :, None])[:, :, 0]
    return np.ascontiguousarray(np.moveaxis(out, 0, 2))


def bony_thorax(volume_hu: np.ndarray, body: np.ndarray | None, slices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per axial slice of ``slices``, the convex hull of the bone (above :data:`BONE_HU`) inside ``body`` (``None``:
    all of it); ``(X, Y, len(slices))`` bool, empty on a slice without bone."""
    slices = [int(k) for k in slices]
    if not slices:
        return np.zeros((*volume_hu.shape[:2], 0), dtype=bool)
    bone = np.stack([np.asarray(volume_hu[:, :, k]) > BONE_HU for k in slices], axis=2)
    if body is not None:
        bone &= np.stack([np.asarray(body[:, :, k]) for k in slices], axis=2)
    return axial_convex_hull(bone)
