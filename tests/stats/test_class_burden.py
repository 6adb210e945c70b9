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
