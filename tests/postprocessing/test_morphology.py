"""Spacing-aware morphology (infnet_monai.postprocessing.morphology)."""

import numpy as np
import pytest

from infnet_monai.postprocessing.morphology import (
    axial_convex_hull,
    block_mean,
    check_volume,
    closing_mm,
    dilate_mm,
    upsample_labels,
)


def test_dilation_is_spacing_aware():
    mask = np.zeros((9, 9, 7), dtype=bool)
    mask[4, 4, 3] = True
    # 1.0 mm reaches the axis-0 neighbours (0.7 mm) and axis-1 neighbours (0.8 mm) but not axis 2 (2.5 mm) nor the
    # in-plane diagonal (sqrt(0.7^2 + 0.8^2) = 1.06 mm)
    out = dilate_mm(mask, 1.0, (0.7, 0.8, 2.5))
    expected = np.zeros(mask.shape, dtype=bool)
    expected[3:6, 4, 3] = True
    expected[4, 3:6, 3] = True
    np.testing.assert_array_equal(out, expected)
    assert mask.sum() == 1  # the input is not changed


def test_closing_fills_a_gap_narrower_than_the_ball_and_keeps_the_border():
    mask = np.zeros((30, 30, 10), dtype=bool)
    mask[5:25, 5:25, :] = True
    mask[14:16, 5:25, :] = False  # a 2 mm slit
    closed = closing_mm(mask, 3.0, (1.0, 1.0, 1.0))
    assert closed[14:16, 8:22, :].all()
    assert (closed >= mask).all()  # extensive: the first and last slices are not eroded either


def test_block_mean_and_upsampling_round_trip():
    labels = np.zeros((7, 6, 5), dtype=np.uint8)
    labels[2:6, 0:4, 1:5] = 1
    coarse = block_mean(labels.astype(np.float32), (2, 2, 1))
    assert coarse.shape == (3, 3, 5)
    back = upsample_labels((coarse > 0.5).astype(np.uint8), (2, 2, 1), labels.shape)
    assert back.shape == labels.shape and back[2:6, 0:4, 1:5].all()


def test_axial_convex_hull_per_slice():
    mask = np.zeros((20, 20, 3), dtype=bool)
    mask[2, 2, 0] = mask[2, 17, 0] = mask[17, 2, 0] = mask[17, 17, 0] = True
    hull = axial_convex_hull(mask)
    assert hull[2:18, 2:18, 0].all() and not hull[:, :, 1:].any()


def test_check_volume_names_the_array():
    with pytest.raises(ValueError, match="lung must be a 3D array"):
        check_volume(np.zeros((3, 3)), "lung")
