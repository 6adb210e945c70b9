"""Overview pictures: radiological convention, physical aspect ratio, orientation independence, overlays."""

import numpy as np
import pytest

from infnet_monai.visualize import COLOURS, overview_image
from infnet_monai.visualize.overview import display_plane, to_ras


def _case(shape=(40, 30, 12)):
    """Air-filled box lungs in soft tissue, RAS voxel axes: right lung at high x (patient's right), left at low x."""
    hu = np.full(shape, 40.0, dtype=np.float32)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[24:36, 6:24, 2:10] = 1  # right lung: larger x in RAS
    lung[4:16, 6:24, 2:10] = 2
    hu[lung > 0] = -850.0
    infection = np.zeros(shape, dtype=np.uint8)
    infection[26:30, 8:12, 4:8] = 1  # in the right lung, anterior part (large y is anterior)
    classes = infection.copy()
    classes[26:28, 8:12, 4:8] = 2
    return hu, lung, infection, classes


def _pixels(image, colour):
    arr = np.asarray(image)
    return np.argwhere((arr == np.asarray(colour, dtype=np.uint8)).all(-1))


def test_display_puts_patient_right_on_the_left_and_anterior_up():
    plane = np.zeros((4, 3))  # (x: right is high, y: anterior is high)
    plane[3, 2] = 1.0  # right, anterior
    shown = display_plane(plane)
    assert shown.shape == (3, 4) and shown[0, 0] == 1.0  # top-left


def test_overview_size_colours_and_sides():
    hu, lung, infection, classes = _case()
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    img = overview_image(hu, lung, infection, affine, classes, {"infection_volume_ml": 1.5}, "case_1", "v")
    assert img.mode == "RGB" and img.width >= 800
    right, left = _pixels(img, COLOURS["right lung"]), _pixels(img, COLOURS["left lung"])
    assert len(right) and len(left)
    # the first mosaic tile: right-lung contour on the left half of the tile, left-lung contour on the right half
    tile_right = right[right[:, 1] < 256]
    tile_left = left[left[:, 1] < 256]
    assert tile_right[:, 1].mean() < tile_left[:, 1].mean()


def test_overview_does_not_depend_on_the_voxel_order():
    hu, lung, infection, classes = _case()
    ras = np.diag([0.8, 0.8, 5.0, 1.0])
    a = overview_image(hu, lung, infection, ras, classes)
    # the same scan stored LPS: x and y flipped in the array, with the affine that says so
    lps = ras.copy()
    lps[0, 0], lps[1, 1] = -0.8, -0.8
    lps[:3, 3] = [0.8 * (hu.shape[0] - 1), 0.8 * (hu.shape[1] - 1), 0.0]
    flip = (slice(None, None, -1), slice(None, None, -1))
    b = overview_image(hu[flip], lung[flip], infection[flip], lps, classes[flip])
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_physical_aspect_ratio_of_the_reformat():
    from infnet_monai.visualize.overview import lung_box, reformat_views

    hu, lung, infection, _ = _case()
    spacing = (0.8, 0.8, 5.0)
    arrays = [to_ras(a, np.diag([*spacing, 1.0])) for a in (hu, lung, infection)]
    assert tuple(arrays[0][1]) == spacing
    box = lung_box(arrays[1][0] > 0)
    part = np.asarray(reformat_views(*(a for a, _ in arrays), np.asarray(spacing), box))[18:, :512]
    rows = np.flatnonzero((part != 0).any(axis=(1, 2)))
    cols = np.flatnonzero((part != 0).any(axis=(0, 2)))
    x_mm = (box[0].stop - box[0].start) * 0.8
    z_mm = (box[2].stop - box[2].start) * 5.0
    assert (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1) == pytest.approx(x_mm / z_mm, rel=0.02)
    # no class map: the infection is drawn in the infection colour; no GGO / consolidation colour
    img = overview_image(hu, lung, infection, np.diag([*spacing, 1.0]))
    assert len(_pixels(img, COLOURS["GGO"])) == 0


def test_bad_shapes_are_refused():
    hu, lung, infection, _ = _case()
    with pytest.raises(ValueError, match="one shape"):
        overview_image(hu, lung[:, :, :5], infection, np.eye(4))


def test_mosaic_holds_the_lung_base_and_the_most_infected_slices():
    from infnet_monai.visualize.overview import N_AXIAL, mosaic_slices

    lung = np.zeros((20, 20, 100), dtype=np.uint8)
    lung[2:18, 2:18, 10:90] = 1
    lung[2:4, 2:4, 5:10] = 1  # a sliver below the base: under 5% of the largest area
    labels = np.zeros_like(lung)
    labels[5:15, 5:15, 44] = 1  # the most infected slice, between two evenly spread ones
    labels[5:8, 5:8, 71] = 2
    zs = mosaic_slices(lung, labels)
    assert len(zs) == N_AXIAL and list(zs) == sorted(set(zs))
    assert 10 in zs and 44 in zs and 71 in zs  # the base, then the slices with the most infection
    assert zs.min() >= 5 and zs.max() <= 89


def test_tiles_are_named_by_instance_number_or_from_the_top_with_z_in_mm():
    from infnet_monai.visualize.overview import slice_namer

    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    affine[2, 3] = -100.0  # slice k at z = -100 + 2.5 k mm
    name = slice_namer(affine, (8, 8, 40))
    assert name(0) == "slice 40 of 40 from top, z -100.0 mm"
    assert name(39) == "slice 1 of 40 from top, z -2.5 mm"
    numbers = {round(-100.0 + 2.5 * k, 1): 40 - k for k in range(40)}  # the series counts from the top
    assert slice_namer(affine, (8, 8, 40), numbers)(4) == "image 36, z -90.0 mm"
    flipped = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 39], [0, 0, 0, 1]])  # stored top first
    assert slice_namer(flipped, (8, 8, 40))(0) == "slice 40 of 40 from top, z -100.0 mm"  # the RAS slice 0
