"""Tests of the Hounsfield-unit helpers (infnet_monai.io.hounsfield) on synthetic volumes; the checks on real scans
and broken copies of them are in test_volume.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from infnet_monai.io import hounsfield
from infnet_monai.io.hounsfield import INT16_HU_RANGE, compact_hu


def test_voxel_counts_by_slab_equal_whole_volume_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hounsfield, "_COUNT_SLAB", 1000)  # many slabs and a partial last one
    values = torch.from_numpy(np.random.default_rng(0).integers(-3000, 5000, size=(1, 17, 19, 23)).astype(np.int16))
    counts = hounsfield._count_voxels(values, lambda v: v < -1024, lambda v: v == -3000, lambda v: (v > 0) & (v < 100))
    expected = [(values < -1024).sum(), (values == -3000).sum(), ((values > 0) & (values < 100)).sum()]
    assert counts == [int(n) for n in expected] and min(counts) > 0
    floats = values.float()
    floats[0, 3, 4, 5] = float("nan")
    assert hounsfield._count_voxels(floats, lambda v: ~np.isfinite(v)) == [1]


@pytest.mark.parametrize(
    "values, dtype",
    [
        ([-1024, 0, 3071], torch.int16),  # integer HU from a wider type: int16
        ([INT16_HU_RANGE[0], INT16_HU_RANGE[1]], torch.int16),
        ([INT16_HU_RANGE[0] - 1, 0], torch.float32),  # no room left for the raw-value correction
        ([0.5, 1000.25], torch.float32),
    ],
)
def test_compact_hu_keeps_values_in_the_smallest_type(values, dtype) -> None:
    source = MetaTensor(torch.tensor(values, dtype=torch.int32 if isinstance(values[0], int) else torch.float64))
    out = compact_hu(source)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.numpy().astype(np.float64), np.asarray(values, dtype=np.float64))
