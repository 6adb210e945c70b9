# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Spacing-aware morphology on 3D masks, shared by the lung, airway, thorax and infection code.

Arrays follow the pipeline's convention (:mod:`infnet_monai.postprocessing.lung`): ``(X, Y, Z)`` in RAS, axis 2 the
axial axis, ``spacing_mm`` the voxel size in mm along axes ``(0, 1, 2)``. Balls are exact Euclidean balls in
millimetres (distance transforms), so anisotropic voxels are handled; the array border is never treated as
background, so a structure cut by the first or last slice is not eroded there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.utils.arrays import bounding_box, label_components

__all__ = [
    "FACE_3D",
    "FULL_3D",
    "AXIAL_4",
    "AXIAL_8",
    "check_volume",
    "distance_mm",
    "dilate_mm",
    "closing_mm",
    "fill_holes_axial",
    "fill_enclosed_holes",
    "block_mean",
    "upsample_labels",
    "axial_convex_hull",
]

FACE_3D = ndi.generate_binary_structure(3, 1)
"""3D 6-connectivity (faces)."""
FULL_3D = ndi.generate_binary_structure(3, 3)
"""3D 26-connectivity."""
AXIAL_4 = np.zeros((3, 3, 3), dtype=bool)
AXIAL_4[:, :, 1] = ndi.generate_binary_structure(2, 1)
"""In-plane 4-connectivity, no link between axial slices."""
AXIAL_8 = np.zeros((3, 3, 3), dtype=bool)
AXIAL_8[:, :, 1] = True
"""In-plane 8-connectivity, no link between axial slices."""


def check_volume(volume: np.ndarray, name: str) -> np.ndarray:
    """``volume`` as an array, after checking that it is a non-empty 3D array (the message names it)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3D array (axes 0, 1, 2 in RAS order), got shape {volume.shape}.")
    if volume.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {volume.shape}.")
    return volume


def distance_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to the nearest ``True`` voxel of ``mask`` (0 inside it)."""
    return ndi.distance_transform_edt(~np.asarray(mask, dtype=bool), sampling=spacing)


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Dilation by an exact Euclidean ball of ``radius_mm``; a new array (``mask`` itself is not changed)."""
    mask = np.asarray(mask, dtype=bool)
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return distance_mm(mask, spacing) <= radius_mm


def closing_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Morphological closing by a Euclidean ball of ``radius_mm`` (dilation, then erosion of the dilation)."""
    mask = np.asarray(mask, dtype=bool)
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    dilated = dilate_mm(mask, radius_mm, spacing)
    return ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm


def fill_holes_axial(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of every axial slice (``mask[:, :, k]``) filled, each slice on its own."""
    return ndi.binary_fill_holes(mask, structure=AXIAL_4)


def fill_enclosed_holes(
    mask: np.ndarray, spacing: Sequence[float], max_open_area_mm2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the holes of ``mask`` that are enclosed, never a dome that opens below or above.

    A hole is a voxel that the in-plane hole filling of its axial slice adds (a vessel, a lesion, an organ's dome
    seen as an island in the lung). The holes are grouped into 3D components (6-connected). A component is *open*
    when one of its voxels has an axial neighbour (the slice above or below) that is neither ``mask`` nor a hole:
    it continues, through the next slice, into tissue that the mask does not surround, as the liver and spleen
    domes do into the abdomen. An open component whose largest in-plane area reaches ``max_open_area_mm2`` is not
    filled; the small open ones (vessels leaving through the hilum) and all closed ones (lesions and vessels
    inside the lung) are. The first and last slices of the array are not a border: a hole cut by them is not open
    there.

    Args:
        mask: ``(X, Y, Z)`` boolean mask.
        spacing: voxel size in mm along axes ``(0, 1, 2)``.
        max_open_area_mm2: an open hole component with an in-plane area (on its largest slice) at least this large
            stays unfilled.

    Returns:
        ``(filled, open_holes)``: the filled mask (a new array), and the voxels of the open components left
        unfilled.
    """
    mask = np.asarray(mask, dtype=bool)
    filled = fill_holes_axial(mask)
    holes = filled & ~mask
    unfilled = np.zeros(mask.shape, dtype=bool)
    if not holes.any():
        return filled, unfilled
    box = bounding_box(holes, (0, 0, 1))
    sub_holes, sub_mask = holes[box], mask[box]
    outside = ~sub_mask & ~sub_holes
    touching = np.zeros(sub_holes.shape, dtype=bool)
    touching[:, :, :-1] |= outside[:, :, 1:]
    touching[:, :, 1:] |= outside[:, :, :-1]
    touching &= sub_holes
    labels, n = label_components(sub_holes, FACE_3D)
    is_open = np.zeros(n + 1, dtype=bool)
    is_open[np.unique(labels[touching])] = True
    is_open[0] = False
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    objects = ndi.find_objects(labels)
    for i in np.flatnonzero(is_open):
        area = (labels[objects[i - 1]] == i).sum(axis=(0, 1)).max() * pixel_mm2
        is_open[i] = area >= max_open_area_mm2
    rejected = is_open[labels]
    unfilled[box] = rejected
    filled[box] &= ~rejected
    return filled, unfilled


def block_mean(volume: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean (float32) over non-overlapping blocks of ``factors`` voxels; trailing voxels that do not fill a block are
    cut.

    Written out rather than scikit-image's ``block_reduce``: that pads a partial block with a constant, which would
    pull the mean of the last block towards it, and sums in float64, eight bytes a voxel for a whole CT."""
    n = [s // f for s, f in zip(volume.shape, factors)]
    cropped = volume[: n[0] * factors[0], : n[1] * factors[1], : n[2] * factors[2]]
    blocks = cropped.reshape(n[0], factors[0], n[1], factors[1], n[2], factors[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def upsample_labels(labels: np.ndarray, factors: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling by integer ``factors`` onto ``shape``; trailing voxels cut by :func:`block_mean`
    copy the last block (the exact inverse of its grid, which a resampling by spacing would not give)."""
    out = labels
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    pad = [(0, int(s) - o) for s, o in zip(shape, out.shape)]
    if any(p[1] for p in pad):
        out = np.pad(out, pad, mode="edge")
    return out


def axial_convex_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of ``mask`` in every axial slice (scikit-image's ``convex_hull_image``); empty slices stay
    empty."""
    from skimage.morphology import convex_hull_image

    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        sl = mask[:, :, k]
        if np.count_nonzero(sl) < 3:
            out[:, :, k] = sl
            continue
        box = bounding_box(sl)
        out[box + (k,)] = convex_hull_image(sl[box])
    return out
