"""Tests of infnet_monai.stats.infection_burden with volumes built and counted by hand."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from infnet_monai.stats import BURDEN_FIELDS, BURDEN_KEYS, infection_burden

SPACING = (0.7, 0.8, 2.5)  # mm
VOXEL_ML = 0.7 * 0.8 * 2.5 / 1000.0  # 1.4 mm^3 = 0.0014 mL


def _case() -> tuple[np.ndarray, np.ndarray]:
    lung = np.zeros((10, 8, 6), dtype=np.uint8)
    lung[1:5, 1:7, 1:5] = 2  # left lung (smaller axis-0 indices): 4 * 6 * 4 = 96 voxels
    lung[5:9, 1:7, 0:5] = 1  # right lung: 4 * 6 * 5 = 120 voxels
    infection = np.zeros_like(lung)
    infection[6:8, 2:4, 1:3] = 1  # lesion A, right lung: 2 * 2 * 2 = 8 voxels, slices 1-2
    infection[2, 2, 2] = 1  # lesion B, left lung: two voxels touching only by a corner, slices 2-3
    infection[3, 3, 3] = 1
    infection[2:4, 5, 4] = 1  # lesion C, left lung: 2 voxels, slice 4
    return infection, lung


def test_keys_and_field_order():
    result = infection_burden(*_case(), SPACING)
    assert tuple(result) == BURDEN_KEYS
    assert BURDEN_FIELDS == (
        "case_id", "status", "error", "source_path", "patient_id", "study_date", "series_instance_uid", "shape", "spacing_mm",
        "lung_volume_ml", "right_lung_volume_ml", "left_lung_volume_ml", "infection_volume_ml", "infection_percent",
        "right_lung_infection_percent", "left_lung_infection_percent", "lesion_count", "largest_lesion_ml",
        "slices_with_infection",
        "ggo_volume_ml", "consolidation_volume_ml", "ggo_percent", "consolidation_percent",
        "right_ggo_volume_ml", "right_consolidation_volume_ml", "right_ggo_percent", "right_consolidation_percent",
        "left_ggo_volume_ml", "left_consolidation_volume_ml", "left_ggo_percent", "left_consolidation_percent",
        "nodule_like_lesion_count", "nodule_like_volume_ml",
        "zone_score", "zones_withheld",
        "right_upper_infection_percent", "right_middle_infection_percent", "right_lower_infection_percent",
        "left_upper_infection_percent", "left_middle_infection_percent", "left_lower_infection_percent",
        "trachea_in_lung_percent", "infection_outside_thorax_ml", "band_like_infection_ml", "lungs_cut_by_scan", "qc_flags", "dropped_files",
        "infection_mask_path", "infection_classes_path", "lung_mask_path", "seconds",
    )  # fmt: skip


def test_exact_values_anisotropic_spacing():
    result = infection_burden(*_case(), SPACING)
    assert result["lung_volume_ml"] == pytest.approx(216 * 0.0014, rel=1e-12)
    assert result["right_lung_volume_ml"] == pytest.approx(120 * 0.0014, rel=1e-12)
    assert result["left_lung_volume_ml"] == pytest.approx(96 * 0.0014, rel=1e-12)
    assert result["infection_volume_ml"] == pytest.approx(12 * 0.0014, rel=1e-12)
    assert result["infection_percent"] == pytest.approx(100.0 * 12 / 216, rel=1e-12)
    assert result["right_lung_infection_percent"] == pytest.approx(100.0 * 8 / 120, rel=1e-12)
    assert result["left_lung_infection_percent"] == pytest.approx(100.0 * 4 / 96, rel=1e-12)
    assert result["lesion_count"] == 3  # B's two corner-touching voxels are one lesion (26-connectivity)
    assert result["largest_lesion_ml"] == pytest.approx(8 * 0.0014, rel=1e-12)
    assert result["slices_with_infection"] == 4  # axial slices 1, 2, 3, 4
    assert isinstance(result["lesion_count"], int) and isinstance(result["slices_with_infection"], int)


def test_corner_touching_is_one_lesion():
    infection = np.zeros((4, 4, 4), dtype=np.uint8)
    infection[0, 0, 0] = 1
    infection[1, 1, 1] = 1
    lung = np.ones_like(infection)
    result = infection_burden(infection, lung, SPACING)
    assert result["lesion_count"] == 1
    assert result["largest_lesion_ml"] == pytest.approx(2 * VOXEL_ML, rel=1e-12)


def test_empty_infection():
    _, lung = _case()
    result = infection_burden(np.zeros_like(lung), lung, SPACING)
    assert result["infection_volume_ml"] == 0.0
    assert result["infection_percent"] == 0.0
    assert result["right_lung_infection_percent"] == 0.0
    assert result["left_lung_infection_percent"] == 0.0
    assert result["lesion_count"] == 0
    assert result["largest_lesion_ml"] == 0.0
    assert result["slices_with_infection"] == 0


def test_empty_lung_gives_nan_percentages(caplog):
    infection, lung = _case()
    with caplog.at_level(logging.DEBUG, logger="infnet_monai.stats.burden"):
        result = infection_burden(infection, np.zeros_like(lung), SPACING)
    assert result["lung_volume_ml"] == 0.0
    for key in ("infection_percent", "right_lung_infection_percent", "left_lung_infection_percent"):
        assert math.isnan(result[key])
    assert "NaN" in caplog.text
    assert result["infection_volume_ml"] == pytest.approx(12 * 0.0014, rel=1e-12)  # the mask as given
    assert result["lesion_count"] == 3


def test_missing_side_gives_nan_for_that_side():
    infection, lung = _case()
    lung[lung == 2] = 0
    result = infection_burden(infection, lung, SPACING)
    assert math.isnan(result["left_lung_infection_percent"])
    assert result["right_lung_infection_percent"] == pytest.approx(100.0 * 8 / 120, rel=1e-12)
    assert result["left_lung_volume_ml"] == 0.0


def test_right_left_split():
    lung = np.zeros((6, 2, 1), dtype=np.uint8)
    lung[:3] = 2  # left: 6 voxels
    lung[3:] = 1  # right: 6 voxels
    infection = np.zeros_like(lung)
    infection[3:, :, 0] = 1  # the whole right lung
    result = infection_burden(infection, lung, (1.0, 1.0, 1.0))
    assert result["right_lung_infection_percent"] == 100.0
    assert result["left_lung_infection_percent"] == 0.0
    assert result["infection_percent"] == 50.0
    assert result["right_lung_volume_ml"] == pytest.approx(0.006, rel=1e-12)


def test_infection_outside_lung_counts_as_given():
    infection, lung = _case()
    infection[0, 0, 0] = 1  # outside the lung
    result = infection_burden(infection, lung, SPACING)
    assert result["infection_volume_ml"] == pytest.approx(13 * 0.0014, rel=1e-12)
    assert result["infection_percent"] == pytest.approx(100.0 * 13 / 216, rel=1e-12)
    assert result["right_lung_infection_percent"] == pytest.approx(100.0 * 8 / 120, rel=1e-12)


@pytest.mark.parametrize(
    "infection, lung, spacing",
    [
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SPACING),
        (np.zeros((4, 4)), np.zeros((4, 4)), SPACING),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (0.7, 0.0, 2.5)),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (0.7, 0.8)),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (0.7, -0.8, 2.5)),
    ],
)
def test_invalid_inputs(infection, lung, spacing):
    with pytest.raises(ValueError):
        infection_burden(infection, lung, spacing)


def test_nodule_burden_counts_components_and_volume():
    from infnet_monai.stats import nodule_burden

    nodules = np.zeros((10, 10, 10), dtype=np.uint8)
    nodules[1:3, 1:3, 1:3] = 1
    nodules[6:9, 6:9, 6:9] = 1
    out = nodule_burden(nodules, (1.0, 1.0, 2.0))
    assert out == {"nodule_like_lesion_count": 2, "nodule_like_volume_ml": pytest.approx((8 + 27) * 2.0 / 1000.0)}
    assert nodule_burden(np.zeros((4, 4, 4)), (1.0, 1.0, 1.0)) == {"nodule_like_lesion_count": 0, "nodule_like_volume_ml": 0.0}
