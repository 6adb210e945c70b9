"""Small array helpers shared by the post-processing and statistics code."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "bounding_box", "slabwise", "count_where", "label_components", "component_sizes", "fortran_order", "SLAB_SLICES",
]

SLAB_SLICES = 32
"""Slices per slab in :func:`slabwise` and :func:`count_where`: their temporaries are this many slices, not the
whole volume (a boolean 512 x 512 x 1200 temporary is 0.3 GB, a float32 one 1.3 GB)."""


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


def slabwise(fn: Callable[..., np.ndarray], *arrays: np.ndarray, dtype=bool) -> np.ndarray:
    """``fn(*arrays)`` for an element-wise ``fn``, computed slab by slab along the last axis so that its temporaries
    stay small; the result has the first array's shape and ``dtype``."""
    arrays = tuple(np.asarray(a) for a in arrays)
    out = np.empty(arrays[0].shape, dtype=dtype)
    for z0 in range(0, out.shape[-1], SLAB_SLICES):
        out[..., z0 : z0 + SLAB_SLICES] = fn(*(a[..., z0 : z0 + SLAB_SLICES] for a in arrays))
    return out


def count_where(fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> int:
    """Number of ``True`` voxels of the element-wise ``fn(*arrays)``, counted slab by slab (no full-size
    temporary)."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = arrays[0].shape[-1]
    return sum(int(np.count_nonzero(fn(*(a[..., z0 : z0 + SLAB_SLICES] for a in arrays)))) for z0 in range(0, n, SLAB_SLICES))


def label_components(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label`` with uint16 labels when they fit (half the memory of int32 on long scans), else int32."""
    try:
        return ndi.label(mask, structure=structure, output=np.uint16)
    except RuntimeError:  # more than 65535 components
        return ndi.label(mask, structure=structure, output=np.int32)


def component_sizes(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Voxels per label (index 0 the background), like ``np.bincount(labels.ravel())`` but counted slab by slab:
    ``bincount`` casts its input to int64, an 8-bytes-per-voxel copy (1 GB for a 512 x 430 x 1120 lung box)."""
    n = int(labels.max()) if n is None else int(n)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for z0 in range(0, labels.shape[-1], SLAB_SLICES):
        sizes += np.bincount(labels[..., z0 : z0 + SLAB_SLICES].ravel(), minlength=n + 1)[: n + 1]
    return sizes


_TILE = 64
"""Edge of the blocks :func:`fortran_order` transposes one at a time (each block's source and destination stay in the
CPU's cache)."""


def fortran_order(array: np.ndarray, dtype=None) -> np.ndarray:
    """``array`` as a Fortran-ordered (first axis fastest) array with the same values (cast to ``dtype`` when given):
    itself when it already is one of that type, else one copy made block by block along the first two axes (the cast
    happens in the same pass: no intermediate copy).

    NIfTI stores voxels first axis fastest, so nibabel copies a C-ordered volume into that order as it writes; for a
    512 x 512 x 248 mask numpy's whole-array strided copy takes about twice as long as these blocks (0.45 against
    0.2 s, float32 0.9 against 0.3 s)."""
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    if array.flags.f_contiguous and array.dtype == dtype:
        return array
    if array.ndim < 2:
        return np.ascontiguousarray(array, dtype=dtype)
    out = np.empty(array.shape[::-1], dtype=dtype)  # C order, axes reversed: the transpose is Fortran order
    view = array.T  # the same axes as ``out``
    for i in range(0, array.shape[0], _TILE):
        for j in range(0, array.shape[1], _TILE):
            out[..., j : j + _TILE, i : i + _TILE] = view[..., j : j + _TILE, i : i + _TILE]
    return out.T
