"""Tests of CT volumes rebuilt from labeled 2D slices (infnet_monai.data.rebuild)."""

from __future__ import annotations

import numpy as np
import pytest

from infnet_monai.data.rebuild import REBUILD_AIR_HU, REBUILD_WALL_HU, grey_to_hu, slice_to_volume


def test_grey_to_hu_inverts_the_lung_window():
    hu = grey_to_hu(np.array([0, 255, 51], dtype=np.uint8))
    assert hu.dtype == np.float32
    assert hu[0] == pytest.approx(-1060.0)
    assert hu[1] == pytest.approx(195.0)
    assert hu[2] == pytest.approx(-1060.0 + 51 * 1255 / 255)  # linear: -809 HU
    assert grey_to_hu(np.array([0, 255]), window_hu=(-1000.0, 0.0)).tolist() == pytest.approx([-1000.0, 0.0])
    assert np.all(np.diff(grey_to_hu(np.arange(256))) > 0)


def test_slice_to_volume_layout_with_defaults():
    h, w = 12, 9
    grey = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[3:5, 2:7] = 255  # 0 / 255 masks are read as 0 / 1
    vol = slice_to_volume(grey, mask)
    assert vol.volume_hu.shape == (h + 100, w + 100, 3) and vol.volume_hu.dtype == np.float32
    assert vol.mask.shape == vol.volume_hu.shape and vol.mask.dtype == np.uint8
    np.testing.assert_array_equal(vol.affine, np.diag([-0.75, -0.75, 5.0, 1.0]))
    for k in range(3):  # identical slices
        plane = vol.volume_hu[:, :, k]
        # the slice itself, at offset air + wall = 50
        np.testing.assert_allclose(plane[50 : 50 + h, 50 : 50 + w], grey_to_hu(grey))
        # 20 px soft-tissue wall ring, 30 px air ring
        ring = np.zeros(plane.shape, dtype=bool)
        ring[30:-30, 30:-30] = True
        ring[50 : 50 + h, 50 : 50 + w] = False
        assert (plane[ring] == REBUILD_WALL_HU).all() and REBUILD_WALL_HU == 40.0
        outer = np.ones(plane.shape, dtype=bool)
        outer[30:-30, 30:-30] = False
        assert (plane[outer] == REBUILD_AIR_HU).all() and REBUILD_AIR_HU == -1000.0
        lab = vol.mask[:, :, k]
        assert set(np.unique(lab)) == {0, 1}
        expected = np.zeros(plane.shape, dtype=np.uint8)
        expected[53:55, 52:57] = 1
        np.testing.assert_array_equal(lab, expected)


def test_slice_to_volume_options_and_no_mask():
    grey = np.full((6, 5), 128, dtype=np.uint8)
    vol = slice_to_volume(grey, wall_px=2, air_px=3, n_slices=4, slice_mm=2.5, pixel_mm=0.5)
    assert vol.mask is None
    assert vol.volume_hu.shape == (6 + 10, 5 + 10, 4)
    np.testing.assert_array_equal(vol.affine, np.diag([-0.5, -0.5, 2.5, 1.0]))
    plane = vol.volume_hu[:, :, 0]
    assert (plane[:3] == REBUILD_AIR_HU).all() and (plane[3:5, 3:-3] == REBUILD_WALL_HU).all()
    assert plane[5:11, 5:10] == pytest.approx(float(grey_to_hu(np.uint8(128))))


def test_slice_to_volume_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2D"):
        slice_to_volume(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="mask shape"):
        slice_to_volume(np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 5), dtype=np.uint8))
