# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""CT volumes rebuilt from labeled 2D slices, for measuring the 3D pipeline against radiologists' masks.

No public COVID-19 CT volume with voxel labels fits in this project's data, so 3D accuracy is measured on the
labeled COVID-SemiSeg slices turned back into CT: the 8-bit lung window is inverted to Hounsfield units, the slice
is surrounded by a soft-tissue wall and air, and repeated along the axial axis. The construction follows the
project's acceptance protocol (grey ``g`` -> ``-1060 + g * 1255 / 255`` HU, 20 px wall at 40 HU, 30 px of air,
3 slices of 5 mm, 0.75 mm pixels, array axes pointing to the patient's left, posterior and superior).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infnet_monai.transforms.ct import LUNG_WINDOW_HU

__all__ = ["RebuiltVolume", "grey_to_hu", "slice_to_volume", "REBUILD_WALL_HU", "REBUILD_AIR_HU"]

REBUILD_WALL_HU = 40.0
"""Hounsfield value of the soft-tissue wall drawn around the slice (muscle)."""
REBUILD_AIR_HU = -1000.0
"""Hounsfield value of the air around the wall."""


@dataclass
class RebuiltVolume:
    """A slice rebuilt as a CT volume: ``volume_hu`` and ``mask`` are ``(X, Y, Z)``, ``affine`` maps voxel indices
    to RAS millimetres (axes point to the patient's left, posterior, superior)."""

    volume_hu: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray


def grey_to_hu(grey: np.ndarray, window_hu: tuple[float, float] = LUNG_WINDOW_HU) -> np.ndarray:
    """Invert the 8-bit lung window: grey 0 -> ``window_hu[0]``, grey 255 -> ``window_hu[1]`` (float32 HU)."""
    lower, upper = (float(v) for v in window_hu)
    return (lower + np.asarray(grey, dtype=np.float32) * (upper - lower) / 255.0).astype(np.float32)


def slice_to_volume(
    grey: np.ndarray,
    mask: np.ndarray | None = None,
    wall_px: int = 20,
    air_px: int = 30,
    n_slices: int = 3,
    slice_mm: float = 5.0,
    pixel_mm: float = 0.75,
) -> RebuiltVolume:
    """Rebuild a CT volume from one 8-bit lung-windowed slice (and optionally its 0/1 or 0/255 mask).

    Args:
        grey: ``(H, W)`` uint8 slice as stored by COVID-SemiSeg (rows along the patient's left, columns posterior).
        mask: ``(H, W)`` label of the slice; non-zero is infection.
        wall_px: width (pixels) of the soft-tissue wall around the slice.
        air_px: width (pixels) of the air around the wall.
        n_slices: number of identical axial slices.
        slice_mm: slice spacing (mm).
        pixel_mm: in-plane pixel size (mm).

    Returns:
        :class:`RebuiltVolume` with ``volume_hu`` float32 and ``mask`` uint8 0/1 of shape
        ``(H + 2 * (wall_px + air_px), W + 2 * (wall_px + air_px), n_slices)``.
    """
    grey = np.asarray(grey)
    if grey.ndim != 2:
        raise ValueError(f"grey must be a 2D slice, got shape {grey.shape}.")
    if mask is not None and np.shape(mask) != grey.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from the slice's {grey.shape}.")
    pad = wall_px + air_px
    plane = np.full((grey.shape[0] + 2 * pad, grey.shape[1] + 2 * pad), REBUILD_AIR_HU, dtype=np.float32)
    plane[air_px : plane.shape[0] - air_px, air_px : plane.shape[1] - air_px] = REBUILD_WALL_HU
    plane[pad : pad + grey.shape[0], pad : pad + grey.shape[1]] = grey_to_hu(grey)
    volume = np.repeat(plane[:, :, None], n_slices, axis=2)
    label = None
    if mask is not None:
        lab = np.zeros(plane.shape, dtype=np.uint8)
        lab[pad : pad + grey.shape[0], pad : pad + grey.shape[1]] = np.asarray(mask) > 0
        label = np.repeat(lab[:, :, None], n_slices, axis=2)
    # axes toward the patient's left (-x in RAS), posterior (-y) and superior (+z)
    affine = np.diag([-pixel_mm, -pixel_mm, slice_mm, 1.0])
    return RebuiltVolume(volume_hu=volume, mask=label, affine=affine)
