# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Assertions for whole-scan masks in tests."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["assert_masks_equal"]


def assert_masks_equal(actual: Any, expected: Any, name: str = "mask") -> None:
    """Fail unless the two arrays have the same shape and the same value in every voxel.

    ``numpy.testing.assert_array_equal`` checks NaN and infinity positions first and builds its message from the whole
    arrays: about 2.5 s for one 512 x 512 x 148 mask. This compares once and, on a failure, says how many voxels
    differ and where the first one is."""
    a, b = np.asarray(actual), np.asarray(expected)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: shape {a.shape} != {b.shape}")
    if np.array_equal(a, b):
        return
    differ = a != b
    first = tuple(int(i) for i in np.argwhere(differ)[0])
    raise AssertionError(
        f"{name}: {int(np.count_nonzero(differ))} of {a.size} voxels differ, the first at {first} "
        f"({a[first]!r} != {b[first]!r})"
    )
