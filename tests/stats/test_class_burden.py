import math

import numpy as np
import pytest

from infnet_monai.stats.burden import BURDEN_FIELDS, CLASS_BURDEN_KEYS, class_burden


def test_class_burden_exact_on_a_hand_built_volume():
    lung = np.zeros((10, 4, 5), np.uint8)
    lung[:5], lung[5:] = 1, 2  # right 100 voxels, left 100 voxels
    classes = np.zeros_like(lung)
    classes[0:2, :, 0] = 1  # 8 GGO voxels in the right lung
    classes[5, :, 0] = 2  # 4 consolidation voxels in the left lung
    classes[6, 0, 0] = 1  # 1 GGO voxel in the left lung
    out = class_burden(classes, lung, (2.0, 1.0, 0.5))  # 1 mm3 per voxel
    assert tuple(out) == CLASS_BURDEN_KEYS
    assert out["ggo_volume_ml"] == pytest.approx(9e-3)
    assert out["consolidation_volume_ml"] == pytest.approx(4e-3)
    assert out["ggo_percent"] == pytest.approx(100 * 9 / 200)
    assert out["consolidation_percent"] == pytest.approx(100 * 4 / 200)
    assert out["right_ggo_volume_ml"] == pytest.approx(8e-3) and out["right_consolidation_volume_ml"] == 0
    assert out["right_ggo_percent"] == pytest.approx(8.0) and out["right_consolidation_percent"] == 0
    assert out["left_ggo_percent"] == pytest.approx(1.0) and out["left_consolidation_percent"] == pytest.approx(4.0)
    assert set(CLASS_BURDEN_KEYS) <= set(BURDEN_FIELDS)


def test_class_burden_empty_lung_is_nan_and_bad_shapes_raise():
    classes = np.zeros((3, 3, 3), np.uint8)
    out = class_burden(classes, np.zeros_like(classes), (1, 1, 1))
    assert math.isnan(out["ggo_percent"]) and out["ggo_volume_ml"] == 0
    with pytest.raises(ValueError, match="same shape"):
        class_burden(classes, np.zeros((3, 3, 2)), (1, 1, 1))


def test_burden_counts_match_direct_counts_over_several_slabs():
    from infnet_monai.stats.burden import infection_burden

    rng = np.random.default_rng(0)
    shape = (1500, 40, 30)  # several slabs of rows
    lung = rng.integers(0, 4, shape).astype(np.uint8)  # label 3: counted as lung, in neither side
    infection = (rng.random(shape) < 0.1).astype(np.uint8)
    classes = rng.integers(0, 3, shape).astype(np.uint8)
    voxel_ml = 1e-3
    burden = infection_burden(infection, lung, (1.0, 1.0, 1.0))
    assert burden["lung_volume_ml"] == pytest.approx(np.count_nonzero(lung) * voxel_ml)
    assert burden["right_lung_volume_ml"] == pytest.approx(np.count_nonzero(lung == 1) * voxel_ml)
    left_infected = np.count_nonzero((infection > 0) & (lung == 2))
    assert burden["left_lung_infection_percent"] == pytest.approx(100.0 * left_infected / np.count_nonzero(lung == 2))
    out = class_burden(classes, lung, (1.0, 1.0, 1.0))
    assert out["consolidation_volume_ml"] == pytest.approx(np.count_nonzero(classes == 2) * voxel_ml)
    right_ggo = np.count_nonzero((classes == 1) & (lung == 1))
    assert out["right_ggo_percent"] == pytest.approx(100.0 * right_ggo / np.count_nonzero(lung == 1))
    assert out["ggo_percent"] == pytest.approx(100.0 * np.count_nonzero(classes == 1) / np.count_nonzero(lung))
