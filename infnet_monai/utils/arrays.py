"""Small array helpers shared by the post-processing and statistics code."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bounding_box"]


def bounding_box(mask: np.ndarray, pad: Sequence[int] | None = None) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of ``mask`` as slices, grown by ``pad`` voxels per axis and clipped.

    Args:
        mask: a non-empty array with at least one non-zero voxel.
        pad: voxels added on both sides, per axis (default none).

    Raises:
        ValueError: when ``mask`` has no non-zero voxel.
    """
    mask = np.asarray(mask)
    pad = tuple(pad) if pad is not None else (0,) * mask.ndim
    box = []
    for axis, p in enumerate(pad):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if idx.size == 0:
            raise ValueError("bounding_box of an empty mask.")
        box.append(slice(max(int(idx[0]) - p, 0), min(int(idx[-1]) + 1 + p, mask.shape[axis])))
    return tuple(box)
