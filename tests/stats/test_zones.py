"""Tests of infnet_monai.stats.zones with hand-built volumes whose zones, scores and distributions are known exactly."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from infnet_monai.stats.burden import infection_burden
from infnet_monai.stats.zones import (
    DISTRIBUTION_KEYS,
    ZONE_COLUMNS,
    ZONE_KEYS,
    ZONE_SCORE_BINS,
    majority_zone,
    peripheral_mask,
    percent_to_zone_score,
    slice_thirds,
    ZONES_WITHHELD_LUNGS_CUT,
    zone_columns,
    zone_distribution,
)

SPACING = (0.7, 0.8, 2.5)  # mm
VOXEL_ML = 0.0014  # 0.7 * 0.8 * 2.5 mm^3


def _case() -> tuple[np.ndarray, np.ndarray]:
    """Right lung: 9 slices (k 0-8, thirds of 3 slices, 72 voxels each); left lung: 10 slices (k 1-10, thirds of
    3 / 4 / 3 slices: 72 / 96 / 72 voxels). Both 4 x 6 voxels per slice, with a gap (x = 5) between them."""
    lung = np.zeros((11, 8, 12), dtype=np.uint8)
    lung[1:5, 1:7, 1:11] = 2  # left lung (smaller axis-0 indices in RAS)
    lung[6:10, 1:7, 0:9] = 1  # right lung
    infection = np.zeros_like(lung)
    infection[6:10, 1:7, 0:3] = 1  # right lower: 72 / 72 = 100 %, one lesion
    infection[6:9, 1:7, 4] = 1  # right middle: 18 / 72 = 25 %, one lesion (slice 3 is free)
    infection[1:4, 1:7, 1:4] = 1  # left lower: 54 / 72 = 75 %
    infection[1:5, 4:7, 4:8] = 1  # left middle: 48 / 96 = 50 %, touching left lower: one lesion, 54 of its voxels lower
    infection[1, 1, 10] = 1  # left upper: 1 / 72, one lesion
    infection[0, 0, 0] = 1  # outside the lung: ignored
    infection[5, 3, 4] = 1  # in the gap: ignored, so it does not join the left and right lesions it touches
    return infection, lung


def test_keys_and_columns():
    assert ZONE_KEYS == ("right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower")
    assert DISTRIBUTION_KEYS == (
        "right_ventral", "right_dorsal", "right_peripheral", "right_central",
        "left_ventral", "left_dorsal", "left_peripheral", "left_central",
    )  # fmt: skip
    assert ZONE_COLUMNS == ("zone_score", *(f"{z}_infection_percent" for z in ZONE_KEYS))
    result = zone_distribution(*_case(), SPACING)
    assert tuple(result) == ("zones", "zone_score", "distribution")
    assert tuple(result["zones"]) == ZONE_KEYS
    assert tuple(result["distribution"]) == DISTRIBUTION_KEYS
    for zone in result["zones"].values():
        assert tuple(zone) == ("lung_volume_ml", "infection_volume_ml", "infection_percent", "score", "lesion_count")
    for part in result["distribution"].values():
        assert tuple(part) == ("lung_volume_ml", "infection_volume_ml", "infection_percent")


def test_exact_zones_scores_and_lesions():
    zones = zone_distribution(*_case(), SPACING)["zones"]
    expected = {  # zone: (lung voxels, infected voxels, percent, score, lesions)
        "right_upper": (72, 0, 0.0, 0, 0),
        "right_middle": (72, 18, 25.0, 2, 1),
        "right_lower": (72, 72, 100.0, 5, 1),
        "left_upper": (72, 1, 100.0 / 72, 1, 1),
        "left_middle": (96, 48, 50.0, 3, 0),
        "left_lower": (72, 54, 75.0, 4, 1),  # the left lesion: 54 voxels lower, 48 middle
    }
    for name, (n_lung, n_inf, percent, score, lesions) in expected.items():
        zone = zones[name]
        assert zone["lung_volume_ml"] == pytest.approx(n_lung * VOXEL_ML, rel=1e-12), name
        assert zone["infection_volume_ml"] == pytest.approx(n_inf * VOXEL_ML, rel=1e-12), name
        assert zone["infection_percent"] == pytest.approx(percent, rel=1e-12), name
        assert zone["score"] == score and isinstance(zone["score"], int), name
        assert zone["lesion_count"] == lesions and isinstance(zone["lesion_count"], int), name


def test_zone_score_and_flat_columns():
    result = zone_distribution(*_case(), SPACING)
    assert result["zone_score"] == 15 and isinstance(result["zone_score"], int)  # 0 + 2 + 5 + 1 + 3 + 4
    columns = zone_columns(result)
    assert tuple(columns) == ZONE_COLUMNS
    assert columns["zone_score"] == 15
    assert columns["right_lower_infection_percent"] == pytest.approx(100.0)
    assert columns["left_middle_infection_percent"] == pytest.approx(50.0)


def test_thirds_are_counted_from_the_top_of_each_lung():
    thirds = slice_thirds(_case()[1])
    # right lung, slices 0-8: superior (large k) is upper
    assert thirds[1].tolist() == [2, 2, 2, 1, 1, 1, 0, 0, 0, -1, -1, -1]
    # left lung, slices 1-10: 3 / 4 / 3
    assert thirds[2].tolist() == [-1, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, -1]


@pytest.mark.parametrize(
    "percent, score",
    [(0.0, 0), (1e-9, 1), (4.9, 1), (5.0, 2), (25.0, 2), (25.1, 3), (50.0, 3), (50.1, 4), (75.0, 4), (75.1, 5),
     (100.0, 5), (float("nan"), 0)],
)  # fmt: skip
def test_score_bin_edges(percent, score):
    assert percent_to_zone_score(percent) == score


def test_score_edges_through_volumes():
    """5 % and 25 % of a zone exactly (1 / 20 and 1 / 4 of its voxels) score 2; just below 5 % scores 1."""
    lung = np.zeros((10, 10, 3), dtype=np.uint8)
    lung[:, :, :] = 1  # right lung, 100 voxels per slice: one slice per third
    infection = np.zeros_like(lung)
    infection[0, :5, 2] = 1  # upper: 5 / 100
    infection[:5, :5, 1] = 1  # middle: 25 / 100
    infection[0, :4, 0] = 1  # lower: 4 / 100
    zones = zone_distribution(infection, lung, (1.0, 1.0, 1.0))["zones"]
    assert [zones[z]["infection_percent"] for z in ("right_upper", "right_middle", "right_lower")] == [5.0, 25.0, 4.0]
    assert [zones[z]["score"] for z in ("right_upper", "right_middle", "right_lower")] == [2, 2, 1]


def test_bins_can_be_overridden_and_are_validated():
    custom = ((1, 0.0, False), (10, 60.0, True))  # any infection 1, >= 60 % 10
    result = zone_distribution(*_case(), SPACING, bins=custom)
    assert [result["zones"][z]["score"] for z in ZONE_KEYS] == [0, 1, 10, 1, 1, 10]
    assert result["zone_score"] == 23
    assert ZONE_SCORE_BINS[1] == (2, 5.0, True)
    with pytest.raises(ValueError, match="increase"):
        percent_to_zone_score(10.0, bins=((1, 5.0, False), (2, 5.0, True)))
    with pytest.raises(ValueError, match="score"):
        zone_distribution(*_case(), SPACING, bins=((1.5, 0.0, False),))
    with pytest.raises(ValueError, match="at least one"):
        percent_to_zone_score(10.0, bins=())


def test_partition_invariants_on_irregular_lungs():
    rng = np.random.default_rng(3)
    shape = (24, 20, 17)
    field = ndi.gaussian_filter(rng.random(shape), 2.0)
    lung = np.zeros(shape, dtype=np.uint8)
    body = field > np.quantile(field, 0.35)
    lung[12:][body[12:]] = 1
    lung[:12][body[:12]] = 2
    infection = (ndi.gaussian_filter(rng.random(shape), 1.5) > 0.52).astype(np.uint8)  # also outside the lung
    assert np.any(infection & (lung == 0)) and np.any(infection & (lung > 0))
    result = zone_distribution(infection, lung, SPACING)
    reference = infection_burden(infection * (lung > 0), lung, SPACING)

    zones = result["zones"].values()
    lung_ml = sum(z["lung_volume_ml"] for z in zones)
    infected_ml = sum(z["infection_volume_ml"] for z in zones)
    assert lung_ml == pytest.approx(reference["lung_volume_ml"], rel=1e-12)
    assert infected_ml == pytest.approx(reference["infection_volume_ml"], rel=1e-12)
    assert 100.0 * infected_ml / lung_ml == pytest.approx(reference["infection_percent"], rel=1e-12)
    assert sum(z["lesion_count"] for z in zones) == reference["lesion_count"]  # both 26-connected
    dist = result["distribution"]
    for side in ("right", "left"):
        side_ml = reference[f"{side}_lung_volume_ml"]
        side_inf = sum(result["zones"][f"{side}_{t}"]["infection_volume_ml"] for t in ("upper", "middle", "lower"))
        for a, b in (("ventral", "dorsal"), ("peripheral", "central")):
            total_lung = dist[f"{side}_{a}"]["lung_volume_ml"] + dist[f"{side}_{b}"]["lung_volume_ml"]
            assert total_lung == pytest.approx(side_ml)
            total_inf = dist[f"{side}_{a}"]["infection_volume_ml"] + dist[f"{side}_{b}"]["infection_volume_ml"]
            assert total_inf == pytest.approx(side_inf)
            assert dist[f"{side}_{a}"]["lung_volume_ml"] > 0 and dist[f"{side}_{b}"]["lung_volume_ml"] > 0


def test_infection_outside_the_lung_is_ignored():
    result = zone_distribution(*_case(), SPACING)
    total = sum(z["infection_volume_ml"] for z in result["zones"].values())
    assert total == pytest.approx(193 * VOXEL_ML, rel=1e-12)  # 72 + 18 + 54 + 48 + 1; the two outside voxels not
    assert sum(z["lesion_count"] for z in result["zones"].values()) == 4


def test_empty_zones_are_nan_without_logging(caplog):
    lung = np.zeros((6, 6, 5), dtype=np.uint8)
    lung[1:5, 1:5, 1:3] = 1  # right lung of 2 slices: upper and lower thirds only; no left lung
    infection = np.zeros_like(lung)
    infection[2, 2, 2] = 1
    with caplog.at_level(logging.DEBUG):
        result = zone_distribution(infection, lung, SPACING)
    assert not caplog.records
    zones = result["zones"]
    assert zones["right_upper"]["infection_percent"] == pytest.approx(100.0 / 16) and zones["right_upper"]["score"] == 2
    assert zones["right_lower"]["infection_percent"] == 0.0
    for name in ("right_middle", "left_upper", "left_middle", "left_lower"):
        assert math.isnan(zones[name]["infection_percent"]), name
        assert zones[name]["score"] == 0 and zones[name]["lung_volume_ml"] == 0.0
    assert math.isnan(result["distribution"]["left_ventral"]["infection_percent"])
    assert result["zone_score"] == 2
    one_slice = np.zeros_like(lung)
    one_slice[1:5, 1:5, 3] = 1  # one slice: all in the middle third
    assert slice_thirds(one_slice)[1].tolist() == [-1, -1, -1, 1, -1]


def test_ventral_dorsal_split():
    lung = np.zeros((4, 9, 3), dtype=np.uint8)
    lung[1:3, 1:6, :] = 1  # right lung rows j 1-5 (odd): ventral (anterior = larger j) rows 4-5, dorsal rows 1-3
    infection = np.zeros_like(lung)
    infection[1:3, 5, :] = 1  # the most anterior row: 6 voxels
    infection[1, 1, 0] = 1  # the most posterior row: 1 voxel
    dist = zone_distribution(infection, lung, (1.0, 2.0, 1.0))["distribution"]  # 2 mm^3 voxels
    assert dist["right_ventral"]["lung_volume_ml"] == pytest.approx(2 * 2 * 3 * 0.002)
    assert dist["right_dorsal"]["lung_volume_ml"] == pytest.approx(3 * 2 * 3 * 0.002)
    assert dist["right_ventral"]["infection_volume_ml"] == pytest.approx(6 * 0.002)
    assert dist["right_dorsal"]["infection_volume_ml"] == pytest.approx(1 * 0.002)
    assert dist["right_ventral"]["infection_percent"] == pytest.approx(50.0)
    assert dist["right_dorsal"]["infection_percent"] == pytest.approx(100.0 / 18)
    # the main case: rows 1-6, left lung infection mostly anterior (rows 4-6)
    dist = zone_distribution(*_case(), SPACING)["distribution"]
    assert dist["left_ventral"]["infection_volume_ml"] == pytest.approx(75 * VOXEL_ML)
    assert dist["left_dorsal"]["infection_volume_ml"] == pytest.approx(28 * VOXEL_ML)
    assert dist["left_ventral"]["lung_volume_ml"] == pytest.approx(120 * VOXEL_ML)


def test_peripheral_square_isotropic_and_anisotropic():
    lung = np.zeros((9, 9, 1), dtype=np.uint8)
    lung[1:8, 1:8, 0] = 2  # a 7 x 7 left lung slice: depths 1, 2, 3, 4 voxels from the edge
    # 1 mm pixels: depth 1..4 mm, limit 4 / 3 mm: the outer ring (24 voxels) is peripheral
    ring = np.zeros((9, 9), dtype=bool)
    ring[1:8, 1:8] = True
    ring[2:7, 2:7] = False
    assert np.array_equal(peripheral_mask(lung, (1.0, 1.0, 5.0))[..., 0], ring)
    # 0.5 mm along axis 0: depth min(0.5 * r0, 1.0 * r1) <= 2.0, limit 2 / 3 mm: only the two outer columns (r0 = 1)
    columns = np.zeros((9, 9), dtype=bool)
    columns[[1, 7], 1:8] = True
    assert np.array_equal(peripheral_mask(lung, (0.5, 1.0, 5.0))[..., 0], columns)
    assert np.array_equal(peripheral_mask(lung, (1.0, 0.5, 5.0))[..., 0], columns.T)
    infection = np.zeros_like(lung)
    infection[1, 1:8, 0] = 1  # a peripheral column: 7 voxels
    infection[4, 4, 0] = 1  # the centre
    dist = zone_distribution(infection, lung, (0.5, 1.0, 2.0))["distribution"]  # 1 mm^3 voxels
    assert dist["left_peripheral"]["lung_volume_ml"] == pytest.approx(14e-3)
    assert dist["left_central"]["lung_volume_ml"] == pytest.approx(35e-3)
    assert dist["left_peripheral"]["infection_volume_ml"] == pytest.approx(7e-3)
    assert dist["left_central"]["infection_volume_ml"] == pytest.approx(1e-3)
    assert dist["left_peripheral"]["infection_percent"] == pytest.approx(50.0)


def test_peripheral_lung_at_the_array_edge():
    lung = np.full((5, 5, 2), 1, dtype=np.uint8)  # fills the slices: beyond the array counts as outside the lung
    mask = peripheral_mask(lung, (1.0, 1.0, 1.0))
    assert mask[..., 0].sum() == 16 and not mask[2, 2, 0] and mask[0, 0, 1]


def test_peripheral_mask_matches_whole_slice_distances():
    """Cropping each slice to its lung's box changes nothing: compare with uncropped distance maps."""
    rng = np.random.default_rng(7)
    shape = (30, 26, 6)
    body = ndi.gaussian_filter(rng.random(shape), (2.5, 2.5, 1)) > 0.5
    lung = np.zeros(shape, dtype=np.uint8)
    lung[15:][body[15:]] = 1
    lung[:15][body[:15]] = 2  # the lungs touch: each is outside the other
    spacing = (0.7, 0.9, 2.0)
    expected = np.zeros(shape, dtype=bool)
    for k in range(shape[2]):
        for label in (1, 2):
            inside = lung[:, :, k] == label
            if inside.any():
                depth = ndi.distance_transform_edt(np.pad(inside, 1), sampling=spacing[:2])[1:-1, 1:-1]
                expected[:, :, k] |= inside & (3 * depth <= depth.max() + 1e-9)
    assert expected.any() and (expected != (lung > 0)).any()
    assert np.array_equal(peripheral_mask(lung, spacing), expected)
    box = (slice(5, 20), slice(3, 25), slice(2, 5))
    assert np.array_equal(peripheral_mask(lung, spacing, box), expected[box])


def test_lesion_ties_go_to_the_uppermost_zone_then_right():
    assert majority_zone(np.array([0, 3, 3, 0, 0, 0])) == 1  # right middle over right lower
    assert majority_zone(np.array([0, 0, 3, 0, 3, 0])) == 4  # left middle over right lower
    assert majority_zone(np.array([2, 0, 0, 2, 0, 0])) == 0  # right upper over left upper
    assert majority_zone(np.array([0, 1, 0, 0, 0, 2])) == 5
    assert majority_zone(np.array([[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]])).tolist() == [1, 3]
    lung = np.zeros((4, 4, 6), dtype=np.uint8)
    lung[1:3, 1:3, :] = 1  # 6 slices: thirds of 2
    infection = np.zeros_like(lung)
    infection[1, 1, 3:5] = 1  # one voxel in the middle third (k 3), one in the upper (k 4)
    zones = zone_distribution(infection, lung, (1.0, 1.0, 1.0))["zones"]
    assert zones["right_upper"]["lesion_count"] == 1 and zones["right_middle"]["lesion_count"] == 0


def test_classes_add_volumes_per_zone():
    infection, lung = _case()
    classes = np.zeros_like(lung)
    classes[6:10, 1:7, 0:2] = 1  # right lower: 48 GGO
    classes[6:10, 1:7, 2] = 2  # right lower: 24 consolidation
    classes[1, 1, 10] = 2  # left upper: 1 consolidation
    zones = zone_distribution(infection, lung, SPACING, classes=classes)["zones"]
    assert zones["right_lower"]["ggo_volume_ml"] == pytest.approx(48 * VOXEL_ML)
    assert zones["right_lower"]["consolidation_volume_ml"] == pytest.approx(24 * VOXEL_ML)
    assert zones["left_upper"]["consolidation_volume_ml"] == pytest.approx(VOXEL_ML)
    assert zones["left_upper"]["ggo_volume_ml"] == 0.0


def test_zones_by_height_can_be_withheld_and_the_distribution_stays():
    """A scan that cuts the lungs: no thirds, scores or per-zone figures (``None``, empty CSV cells); the ventral /
    dorsal and peripheral / central distribution is that of the whole computation."""
    infection, lung = _case()
    classes = (infection > 0).astype(np.uint8)
    whole = zone_distribution(infection, lung, SPACING, classes=classes)
    withheld = zone_distribution(infection, lung, SPACING, classes=classes, by_height=False)
    assert tuple(withheld) == ("zones", "zone_score", "distribution")
    assert withheld["zones"] is None and withheld["zone_score"] is None
    np.testing.assert_equal(withheld["distribution"], whole["distribution"])  # NaN (no peripheral voxel) equal too
    columns = zone_columns(withheld)
    assert tuple(columns) == ZONE_COLUMNS and all(v is None for v in columns.values())
    assert ZONES_WITHHELD_LUNGS_CUT.startswith("the scan does not cover the whole lung (lungs_cut_by_scan)")


def test_bad_inputs_raise():
    infection, lung = _case()
    with pytest.raises(ValueError, match="same shape"):
        zone_distribution(infection, lung[..., :5], SPACING)
    bad = lung.copy()
    bad[0, 0, 0] = 3
    with pytest.raises(ValueError, match="label map"):
        zone_distribution(infection, bad, SPACING)
    with pytest.raises(ValueError, match="spacing_mm"):
        zone_distribution(infection, lung, (1.0, 0.0, 1.0))


def _phantom_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two ellipsoidal lungs with random lesion blobs in and around them, and a random class map."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(60), np.arange(40), np.arange(30), indexing="ij", sparse=True)
    lung = np.zeros((60, 40, 30), dtype=np.uint8)
    lung[((x - 18) / 14.0) ** 2 + ((y - 20) / 16.0) ** 2 + ((z - 15) / 13.0) ** 2 <= 1] = 2
    lung[((x - 42) / 14.0) ** 2 + ((y - 20) / 16.0) ** 2 + ((z - 14) / 14.0) ** 2 <= 1] = 1
    infection = ndi.binary_dilation(rng.random(lung.shape) < 0.002, iterations=2).astype(np.uint8)
    classes = np.where(infection > 0, rng.integers(1, 3, lung.shape), 0).astype(np.uint8)
    return infection, lung, classes


@pytest.mark.parametrize("seed", [0, 1])
def test_zone_distribution_with_a_given_peripheral_mask_is_the_same(seed):
    infection, lung, classes = _phantom_case(seed)
    expected = zone_distribution(infection, lung, SPACING, classes)
    assert expected["distribution"]["right_peripheral"]["infection_volume_ml"] > 0  # not a vacuous comparison
    given = zone_distribution(infection, lung, SPACING, classes, peripheral=peripheral_mask(lung, SPACING))
    assert given == expected
    with pytest.raises(ValueError, match="peripheral must have"):
        zone_distribution(infection, lung, SPACING, peripheral=np.zeros((3, 3, 3), dtype=bool))
