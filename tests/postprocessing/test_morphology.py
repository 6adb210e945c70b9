"""Spacing-aware morphology (infnet_monai.postprocessing.morphology)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from infnet_monai.postprocessing import morphology
from infnet_monai.postprocessing.morphology import (
    AXIAL_4,
    BALL_DILATION_MAX_COLUMNS,
    axial_convex_hull,
    block_mean,
    check_volume,
    closing_mm,
    connected_components,
    convex_hull_2d,
    dilate_mm,
    fill_holes_axial,
    label_counts,
    row_slabs,
    rowwise,
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


# ---------------------------------------------------------------------------------------------------- fast paths
def _random_masks(seed: int, count: int, ndim: int, max_size: int):
    """Random masks of odd sizes (lines and single voxels included), sparse to dense, some of them smoothed."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = tuple(int(n) for n in rng.integers(1, max_size, ndim))
        mask = rng.random(shape) < rng.uniform(0.005, 0.7)
        if i % 3 == 0 and min(shape) > 2:
            mask = ndi.binary_opening(mask)
        yield mask


@pytest.mark.parametrize("seed", [0, 1])
def test_convex_hull_2d_is_scikit_images_convex_hull_image(seed):
    from skimage.morphology import convex_hull_image

    checked = 0
    for mask in _random_masks(seed, 400, 2, 60):
        if mask.any():
            np.testing.assert_array_equal(convex_hull_2d(mask), convex_hull_image(mask))
            checked += 1
    # a few pixels far apart: long thin hulls, the edges' rounding matters most there
    rng = np.random.default_rng(seed)
    for _ in range(200):
        mask = np.zeros(tuple(rng.integers(2, 80, 2)), dtype=bool)
        mask[rng.integers(0, mask.shape[0], 3), rng.integers(0, mask.shape[1], 3)] = True
        np.testing.assert_array_equal(convex_hull_2d(mask), convex_hull_image(mask))
        checked += 1
    assert checked > 500
    assert not convex_hull_2d(np.zeros((4, 5), dtype=bool)).any()


def test_axial_convex_hull_matches_scikit_image_slice_by_slice():
    from skimage.morphology import convex_hull_image

    rng = np.random.default_rng(3)
    mask = ndi.binary_dilation(rng.random((50, 40, 6)) < 0.004, iterations=2)
    mask[:, :, 2] = False  # an empty slice stays empty
    mask[:, :, 3] = False
    mask[7, 9, 3], mask[30, 31, 3] = True, True  # two pixels: kept as they are
    hull = axial_convex_hull(mask)
    for k in range(mask.shape[2]):
        if np.count_nonzero(mask[:, :, k]) >= 3:
            np.testing.assert_array_equal(hull[:, :, k], convex_hull_image(mask[:, :, k]))
        else:
            np.testing.assert_array_equal(hull[:, :, k], mask[:, :, k])


@pytest.mark.parametrize("ndim, connectivity, rank", [(3, 6, 1), (3, 18, 2), (3, 26, 3), (2, 4, 1), (2, 8, 2)])
def test_connected_components_are_numbered_as_scipy_numbers_them(ndim, connectivity, rank):
    structure = ndi.generate_binary_structure(ndim, rank)
    for mask in _random_masks(ndim * 100 + connectivity, 150, ndim, 30 if ndim == 3 else 70):
        expected, n = ndi.label(mask, structure=structure)
        labels, m = connected_components(mask, connectivity)
        assert m == n
        np.testing.assert_array_equal(labels, expected)
    # lines (two axes of length 1) and views that are not C-contiguous
    line = np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
    if ndim == 3:
        for shape in ((8, 1, 1), (1, 8, 1), (1, 1, 8)):
            labels, n = connected_components(line.reshape(shape), connectivity)
            assert n == 3 and labels.ravel().tolist() == [1, 1, 0, 2, 0, 0, 3, 3]
    mask = next(_random_masks(9, 1, ndim, 30))
    view = np.swapaxes(mask, 0, 1)
    np.testing.assert_array_equal(connected_components(view, connectivity)[0], ndi.label(view, structure=structure)[0])


def test_connected_components_numbering_is_restored_when_out_of_order():
    rng = np.random.default_rng(4)
    mask = rng.random((20, 30, 10)) < 0.3
    expected, n = ndi.label(mask, structure=np.ones((3, 3, 3)))
    shuffled = np.concatenate(([0], rng.permutation(np.arange(1, n + 1)))).astype(np.uint16)[expected]
    np.testing.assert_array_equal(morphology._numbered_in_c_order(shuffled, n, chunk=7), expected)


def test_connected_components_falls_back_to_scipy_when_cc3d_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("maximum length exception")

    monkeypatch.setattr(morphology.cc3d, "connected_components", broken)
    mask = np.random.default_rng(8).random((15, 12, 10)) < 0.4
    labels, n = connected_components(mask, 6)
    expected, m = ndi.label(mask)
    assert n == m
    np.testing.assert_array_equal(labels, expected)


def test_connected_components_rejects_an_unknown_connectivity():
    with pytest.raises(ValueError, match="connectivity must be"):
        connected_components(np.ones((3, 3), dtype=bool), 6)


def test_fill_holes_axial_is_scipys_per_slice_hole_filling():
    for mask in _random_masks(5, 150, 3, 40):
        np.testing.assert_array_equal(fill_holes_axial(mask), ndi.binary_fill_holes(mask, structure=AXIAL_4))
    # more slices than one slab
    mask = np.random.default_rng(6).random((20, 20, 70)) < 0.6
    np.testing.assert_array_equal(fill_holes_axial(mask), ndi.binary_fill_holes(mask, structure=AXIAL_4))


@pytest.mark.parametrize("radius_mm", [0.5, 1.25, 3.0, 5.0, 7.3, 30.0])
def test_dilation_and_closing_are_the_distance_transforms_thresholds(radius_mm):
    rng = np.random.default_rng(int(radius_mm * 10))
    spacings = [(0.703125, 0.703125, 1.25), (1.40625, 1.40625, 2.5), (0.6, 0.8, 3.0), (1.0, 1.0, 1.0), (2.0, 0.7, 0.5)]
    for i, mask in enumerate(_random_masks(int(radius_mm * 100), 60, 3, 28)):
        spacing = spacings[i % len(spacings)]
        if not mask.any():
            continue
        dilated = ndi.distance_transform_edt(~mask, sampling=spacing) <= radius_mm
        np.testing.assert_array_equal(dilate_mm(mask, radius_mm, spacing), dilated)
        if not dilated.all():
            closed = ndi.distance_transform_edt(dilated, sampling=spacing) > radius_mm
            np.testing.assert_array_equal(closing_mm(mask, radius_mm, spacing), closed)
    # both ways are taken: the ball as structuring element and the distance transform
    assert np.count_nonzero(morphology._ball(1.25, spacings[0]).any(axis=0)) <= BALL_DILATION_MAX_COLUMNS
    assert np.count_nonzero(morphology._ball(30.0, spacings[3]).any(axis=0)) > BALL_DILATION_MAX_COLUMNS


def test_label_counts_rowwise_and_row_slabs():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 6, (30, 20, 9)).astype(np.uint16)
    where = rng.random(labels.shape) < 0.5
    np.testing.assert_array_equal(label_counts(labels, 5, chunk=100), np.bincount(labels.ravel(), minlength=6))
    np.testing.assert_array_equal(label_counts(labels, 5, where, chunk=77), np.bincount(labels[where], minlength=6))
    slabs = list(row_slabs((2000, 512, 40)))
    assert len(slabs) > 1 and slabs[0].start == 0 and slabs[-1].stop >= 2000
    assert all(a.stop == b.start for a, b in zip(slabs, slabs[1:]))
    a, b = rng.random((3000, 10, 10)), rng.random((3000, 10, 10))
    np.testing.assert_array_equal(rowwise(lambda x, y: x > y, a, b), a > b)
