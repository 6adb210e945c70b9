"""Tests of infnet_monai.postprocessing.postprocess_infection on hand-built arrays."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
import pytest

from infnet_monai.postprocessing import postprocess_infection

SPACING = (0.7, 0.8, 2.5)  # mm; voxel volume 1.4 mm^3


def _lung(shape=(10, 10, 6)) -> np.ndarray:
    lung = np.zeros(shape, dtype=np.uint8)
    lung[1:9, 1:9, 1:5] = 1
    lung[5:9, 1:9, 1:5] = 2  # label values do not matter, only > 0
    return lung


def test_threshold_is_inclusive_and_restricted_to_lung():
    lung = _lung()
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[3, 3, 2] = 0.5  # exactly at threshold, inside lung: kept
    prob[6, 6, 3] = 0.49  # below threshold: dropped
    prob[0, 0, 0] = 0.99  # outside lung: dropped
    out = postprocess_infection(prob, lung, SPACING, min_lesion_volume_mm3=0.0)
    assert out.dtype == np.uint8 and out.shape == lung.shape
    expected = np.zeros(lung.shape, dtype=np.uint8)
    expected[3, 3, 2] = 1
    np.testing.assert_array_equal(out, expected)


def test_small_components_dropped_by_volume():
    lung = _lung()
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[2, 2, 2] = 1.0  # 1 voxel = 1.4 mm^3
    prob[5:7, 5:7, 2] = 1.0  # 4 voxels = 5.6 mm^3
    out = postprocess_infection(prob, lung, SPACING, min_lesion_volume_mm3=5.0)
    assert out[2, 2, 2] == 0
    assert out[5:7, 5:7, 2].all() and out.sum() == 4
    # 5.6 mm^3 < 6.0 mm^3: everything goes
    assert not postprocess_infection(prob, lung, SPACING, min_lesion_volume_mm3=6.0).any()


def test_26_connectivity():
    lung = _lung()
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[3, 3, 2] = 1.0
    prob[4, 4, 3] = 1.0  # touches the first voxel only by a corner
    # one lesion of 2 voxels = 2.8 mm^3 >= 2.0; as two 1.4 mm^3 lesions both would be dropped
    out = postprocess_infection(prob, lung, SPACING, min_lesion_volume_mm3=2.0)
    assert out[3, 3, 2] == 1 and out[4, 4, 3] == 1


def test_every_output_lesion_passes_every_filter():
    """The in-plane clean-up runs before the 3D filters: it never leaves a fragment that the 3D filters would drop."""
    prob = np.zeros((40, 40, 12), dtype=np.float32)
    prob[5:20, 5:20, 2:10] = 1.0  # 225 mm2 per slice over 8 slices of 2 mm = 16 mm: shorter than 20 mm ...
    prob[11:13, 11:13, 0:12] = 1.0  # ... but a 4 mm2 thread runs through it over all 12 slices (24 mm)
    prob[25:38, 25:38, 0:12] = 1.0  # a true lesion: 169 mm2 over 24 mm
    lung = np.ones(prob.shape, dtype=np.uint8)
    spacing = (1.0, 1.0, 2.0)
    out = postprocess_infection(prob, lung, spacing, min_lesion_volume_mm3=300, min_lesion_extent_mm=20, min_lesion_area_mm2=100)
    labels, n = ndi.label(out, structure=np.ones((3, 3, 3)))
    assert n == 1 and out[25:38, 25:38, :].all() and not out[:20, :20, :].any()
    for sl in ndi.find_objects(labels):
        assert (sl[2].stop - sl[2].start) * spacing[2] >= 20
    # the thread-joined lesion is judged without the thread: 16 mm, removed; with the extent rule off it stays
    loose = postprocess_infection(prob, lung, spacing, min_lesion_volume_mm3=300, min_lesion_extent_mm=0, min_lesion_area_mm2=100)
    assert loose[5:20, 5:20, 2:10].all() and not loose[11:13, 11:13, 0:2].any()


def test_empty_probability():
    lung = _lung()
    out = postprocess_infection(np.zeros(lung.shape), lung, SPACING)
    assert out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probability": np.zeros((4, 4, 4)), "lung": np.zeros((4, 4, 5))},
        {"probability": np.zeros((4, 4)), "lung": np.zeros((4, 4))},
        {"probability": np.zeros((4, 4, 4)), "lung": np.zeros((4, 4, 4)), "spacing_mm": (1.0, -1.0, 1.0)},
        {"probability": np.zeros((4, 4, 4)), "lung": np.zeros((4, 4, 4)), "min_lesion_volume_mm3": -1.0},
        {"probability": np.zeros((4, 4, 4)), "lung": np.zeros((4, 4, 4)), "basal_rim_max_share": 0.0},
        {"probability": np.zeros((4, 4, 4)), "lung": np.zeros((4, 4, 4)), "basal_rim_mm": -1.0},
        {"probability": np.zeros((4, 4, 4)), "lung": np.zeros((4, 4, 4)), "volume_hu": np.zeros((4, 4, 3))},
    ],
)
def test_invalid_arguments(kwargs):
    kwargs.setdefault("spacing_mm", SPACING)
    with pytest.raises(ValueError):
        postprocess_infection(**kwargs)


def test_min_lesion_area_removes_small_in_plane_pieces_only():
    from infnet_monai.postprocessing import postprocess_infection

    prob = np.zeros((40, 40, 6), dtype=np.float32)
    prob[5:20, 5:20, 1:5] = 1.0  # 15 x 15 px = 225 mm2 per slice at 1 mm
    prob[10:13, 10:13, 5] = 1.0  # a 9 mm2 tail of the same lesion on the next slice
    prob[30:33, 30:33, 0:6] = 1.0  # a thin 9 mm2 tube through every slice
    lung = np.ones(prob.shape, dtype=np.uint8)
    out = postprocess_infection(prob, lung, (1.0, 1.0, 2.0), min_lesion_volume_mm3=0, min_lesion_area_mm2=100)
    assert out[5:20, 5:20, 1:5].all()
    assert not out[:, :, 5][10:13, 10:13].any()
    assert not out[30:33, 30:33, :].any()
    kept_all = postprocess_infection(prob, lung, (1.0, 1.0, 2.0), min_lesion_volume_mm3=0, min_lesion_area_mm2=0)
    assert kept_all.sum() == int((prob > 0).sum())
    # anisotropic pixels: 15 x 15 px of 0.5 x 0.5 mm is 56 mm2, below 100
    small = postprocess_infection(prob, lung, (0.5, 0.5, 2.0), min_lesion_volume_mm3=0, min_lesion_area_mm2=100)
    assert not small.any()
    with pytest.raises(ValueError):
        postprocess_infection(prob, lung, (1.0, 1.0, 2.0), min_lesion_area_mm2=-1)


def test_through_plane_window_judges_lesions_by_what_the_neighbouring_slices_see():
    from infnet_monai.postprocessing.infection import infection_and_nodules, through_plane_slices

    assert [through_plane_slices(6.0, dz) for dz in (1.0, 1.25, 2.0, 2.5, 5.0)] == [7, 5, 3, 3, 1]
    assert through_plane_slices(0.0, 2.0) == 1
    prob = np.zeros((24, 24, 12), dtype=np.float32)
    prob[4:14, 4:14, 2:10] = 0.9  # a lesion seen on 8 slices
    prob[4:14, 4:14, 6] = 0.3  # that one slice calls weakly: its neighbours do not lift it
    prob[18:21, 18:21, 5] = 0.95  # a call on one slice only
    lung = np.ones(prob.shape, dtype=np.uint8)
    kwargs = {"min_lesion_volume_mm3": 0.0}
    off, _ = infection_and_nodules(prob, lung, (1.0, 1.0, 2.0), **kwargs)
    on, _ = infection_and_nodules(prob, lung, (1.0, 1.0, 2.0), through_plane_mm=6.0, **kwargs)
    assert off[18:21, 18:21, 5].all() and not on[18:21, 18:21, 5].any()
    assert on[4:14, 4:14, 2:6].all() and on[4:14, 4:14, 7:10].all()  # the lesion's end slices too: (0 + 0.9 + 0.9) / 3
    assert not on[:, :, 6].any()  # the window never adds a voxel the slice itself does not call
    assert not (on & ~off).any()
    # a lesion that passes stays whole: its weak top and bottom slices are not trimmed, though the window alone
    # would not reach the threshold there ((0 + 0.6 + 0.6) / 3)
    weak = np.zeros_like(prob)
    weak[4:14, 4:14, 2:8] = 0.6
    weak[18:21, 18:21, 4] = 0.95  # one slice: (0 + 0.95 + 0) / 3 in the window
    whole, _ = infection_and_nodules(weak, lung, (1.0, 1.0, 2.0), through_plane_mm=6.0, **kwargs)
    assert whole[4:14, 4:14, 2:8].all() and not whole[18:21, 18:21].any()
    # the window judges with the gates: seen through it this lesion spans 4 slices (8 mm), so a 10-mm extent gate
    # drops it whole, which 12 mm as drawn would pass
    assert infection_and_nodules(weak, lung, (1.0, 1.0, 2.0), min_lesion_extent_mm=10.0, **kwargs)[0][4:14, 4:14, 2:8].all()
    assert not infection_and_nodules(weak, lung, (1.0, 1.0, 2.0), min_lesion_extent_mm=10.0, through_plane_mm=6.0,
                                     **kwargs)[0].any()
    # 5-mm slices: the neighbours are too far apart for a 6-mm window, nothing changes
    thick, _ = infection_and_nodules(prob, lung, (1.0, 1.0, 5.0), through_plane_mm=6.0, **kwargs)
    assert np.array_equal(thick, infection_and_nodules(prob, lung, (1.0, 1.0, 5.0), **kwargs)[0])
    with pytest.raises(ValueError, match="through_plane_mm"):
        infection_and_nodules(prob, lung, (1.0, 1.0, 2.0), through_plane_mm=-1.0)


def test_min_lesion_depth_removes_bands_along_the_lung_edge_however_long():
    spacing = (0.8, 0.8, 2.0)
    lung = np.zeros((60, 60, 30), dtype=np.uint8)
    lung[5:55, 5:55, 2:28] = 1
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[5:9, 10:50, 4:26] = 1.0  # a band 4 voxels (3.2 mm) thick on the pleura, 44 mm long: reaches 3.2 mm
    prob[22:38, 22:38, 10:18] = 1.0  # a patch in the middle of the lung: reaches 12.8 mm (in-plane) and 18 mm in z
    band, patch = np.zeros(lung.shape, bool), np.zeros(lung.shape, bool)
    band[5:9, 10:50, 4:26], patch[22:38, 22:38, 10:18] = True, True
    gates = dict(min_lesion_volume_mm3=0.0, min_lesion_extent_mm=0.0)
    off = postprocess_infection(prob, lung, spacing, **gates).astype(bool)
    np.testing.assert_array_equal(off, band | patch)
    out = postprocess_infection(prob, lung, spacing, min_lesion_depth_mm=6.0, **gates).astype(bool)
    np.testing.assert_array_equal(out, patch)  # the band goes whole, the patch stays whole
    # the band's deepest voxel lies 4 voxels of 0.8 mm from the chest wall: kept at 3.2 mm, not a hair beyond
    np.testing.assert_array_equal(postprocess_infection(prob, lung, spacing, min_lesion_depth_mm=3.2, **gates), off)
    np.testing.assert_array_equal(postprocess_infection(prob, lung, spacing, min_lesion_depth_mm=3.3, **gates), patch)
    assert not postprocess_infection(prob, lung, spacing, min_lesion_depth_mm=21.0, **gates).any()
    with pytest.raises(ValueError, match="min_lesion_depth_mm"):
        postprocess_infection(prob, lung, spacing, min_lesion_depth_mm=-1)


def test_min_lesion_depth_does_not_take_the_scan_edge_for_the_pleura():
    """A scan of three slices through the middle of a lung (a slice rebuilt as a volume, or a scan that cuts the lung):
    a patch 10 mm from the chest wall reaches 10 mm, although no voxel is more than 1.5 slices from the scan's edge."""
    lung = np.zeros((40, 40, 3), dtype=np.uint8)
    lung[2:38, 2:38, :] = 1
    prob = np.zeros(lung.shape, dtype=np.float32)
    prob[8:20, 8:20, :] = 1.0  # deepest voxel 18 voxels of 1 mm from the chest wall
    gates = dict(min_lesion_volume_mm3=0.0, min_lesion_extent_mm=0.0)
    kept = postprocess_infection(prob, lung, (1.0, 1.0, 5.0), min_lesion_depth_mm=10.0, **gates)
    np.testing.assert_array_equal(kept, prob >= 0.5)
    assert not postprocess_infection(prob, lung, (1.0, 1.0, 5.0), min_lesion_depth_mm=18.5, **gates).any()


def test_lesions_reaching_depth_agrees_with_a_whole_volume_distance_transform():
    from infnet_monai.postprocessing.infection import lesions_reaching_depth

    rng = np.random.default_rng(0)
    spacing = (0.7, 0.9, 2.5)
    lung = ndi.binary_opening(rng.random((48, 40, 20)) > 0.25, iterations=1)
    lung[0] = False  # one face with no lung on it; the others cut the lung
    lesions = ndi.binary_dilation(rng.random(lung.shape) > 0.97, iterations=1) & lung
    labels, n = ndi.label(lesions, np.ones((3, 3, 3)))
    reach = 9  # voxels: beyond the largest depth tried along every axis (9 x 0.7 mm > 5 mm)
    grown = np.pad(np.pad(lung, reach, mode="edge"), 1)  # the scan's edge is not outside: the lung goes on
    depth = ndi.distance_transform_edt(grown, sampling=spacing)[reach + 1 : -reach - 1, reach + 1 : -reach - 1, reach + 1 : -reach - 1]
    for depth_mm in (0.5, 1.0, 2.0, 3.0, 5.0):
        expected = np.zeros(n + 1, dtype=bool)
        for i in range(1, n + 1):
            expected[i] = depth[labels == i].max() >= depth_mm
        np.testing.assert_array_equal(lesions_reaching_depth(labels, n, lung, spacing, depth_mm, (0, 0, 0)), expected)
    box = (slice(3, 45), slice(2, 38), slice(1, 19))  # labels on a box of the lung, as the post-processing passes them
    sub, m = ndi.label(lesions[box], np.ones((3, 3, 3)))
    got = lesions_reaching_depth(sub, m, lung, spacing, 2.0, [b.start for b in box])
    for i in range(1, m + 1):
        assert got[i] == (depth[box][sub == i].max() >= 2.0)
