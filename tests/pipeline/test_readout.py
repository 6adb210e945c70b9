"""The read-out files of a cohort run end to end (DICOM SR, lesion table, zones, follow-up), on a synthetic chest CT
written as a DICOM series twice for one patient, with the tiny model of ``conftest.py``: every figure in them must
agree with ``stats.json``, whatever the model finds."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from infnet_monai.cli import main
from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.io.dicom_sr import read_dicom_sr
from infnet_monai.stats.readout import case_readout, to_ras
from infnet_monai.stats.zones import ZONE_COLUMNS, ZONE_KEYS
from infnet_monai.stats.burden import BURDEN_FIELDS
from infnet_monai.testing.fuzz import write_dicom_series

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model) -> Path:
    phantom = make_chest_phantom(shape=(64, 64, 32), spacing_mm=(5.0, 5.0, 8.0), seed=1)
    hu = np.round(phantom.volume_hu).astype(np.int16)
    root = tmp_path_factory.mktemp("readout")
    write_dicom_series(hu, phantom.affine, root / "cohort" / "scan 1", patient_id="P7")
    write_dicom_series(hu, phantom.affine, root / "cohort" / "scan 2", patient_id="P7")
    out = root / "out"
    code = main(["segment", str(root / "cohort"), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "-q"])
    assert code == 0
    return out


def _stats(run: Path, case: str) -> dict:
    return json.loads((run / case / "stats.json").read_text(encoding="utf-8"))


def test_the_sr_holds_the_burden_of_stats_json_and_references_the_seg(run):
    stats = _stats(run, "scan_1")
    sr = read_dicom_sr(run / "scan_1" / "measurements.dcm")
    infection = sr["measurements"]["infection"]
    assert abs(infection["volume"][0] - stats["infection_volume_ml"]) <= 0.01 and infection["volume"][1] == "ml"
    assert sr["measurements"]["right lung"]["volume"][0] == pytest.approx(stats["right_lung_volume_ml"], abs=0.01)
    import pydicom

    seg = pydicom.dcmread(run / "scan_1" / "segmentation.dcm", stop_before_pixels=True)
    assert sr["segmentation_sop_instance_uid"] == seg.SOPInstanceUID
    assert stats["dicom_sr_path"].endswith("measurements.dcm")


def test_lesion_volumes_add_up_to_the_infection_volume(run):
    stats = _stats(run, "scan_1")
    with open(run / "scan_1" / "lesions.csv", encoding="utf-8", newline="") as f:
        lesions = list(csv.DictReader(f))
    assert len(lesions) == stats["lesion_count"]
    assert sum(float(r["volume_ml"]) for r in lesions) == pytest.approx(stats["infection_volume_ml"], abs=0.1)
    volumes = [float(r["volume_ml"]) for r in lesions]
    assert volumes == sorted(volumes, reverse=True)


def test_zone_percentages_average_to_the_lung_percent(run):
    stats = _stats(run, "scan_1")
    zones = stats["zones"]
    assert list(zones) == list(ZONE_KEYS)
    lung = sum(z["lung_volume_ml"] for z in zones.values())
    weighted = sum(z["lung_volume_ml"] * (z["infection_percent"] or 0.0) for z in zones.values()) / lung
    assert weighted == pytest.approx(stats["infection_percent"], abs=1e-6)
    assert stats["zone_score"] == sum(z["score"] for z in zones.values())
    assert set(ZONE_COLUMNS) <= set(BURDEN_FIELDS)
    with open(run / "burden.csv", encoding="utf-8", newline="") as f:
        row = next(csv.DictReader(f))
    assert int(row["zone_score"]) == stats["zone_score"] and row["study_date"] == "20200401"


def test_a_patient_given_twice_gets_a_followup_row(run):
    with open(run / "followup.csv", encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["patient_id"], row["baseline_case_id"], row["followup_case_id"]) == ("P7", "scan_1", "scan_2")
    assert float(row["infection_volume_change_ml"]) == 0.0 and row["trend"] == "stable"
    assert "follow-up" in (run / "report.html").read_text(encoding="utf-8").lower()


def test_readout_does_not_depend_on_the_storage_orientation():
    rng = np.random.default_rng(0)
    lung = np.zeros((20, 16, 12), np.uint8)
    lung[2:9, 3:13, 1:11], lung[11:18, 3:13, 2:10] = 2, 1  # RAS: axis 0 toward the right, so the right lung is higher
    infection = ((rng.random(lung.shape) < 0.3) & (lung > 0)).astype(np.uint8)
    image = rng.normal(-700, 50, lung.shape)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = (-10, 20, 30)
    ras, _ = case_readout(infection, lung, image, affine)
    # the same voxels stored left-posterior-superior with the affine that says so
    lps_affine = affine @ np.array([[-1, 0, 0, 19], [0, -1, 0, 15], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    stored = [a[::-1, ::-1] for a in (infection, lung, image)]
    lps, lesions = case_readout(*stored, lps_affine)
    (back, _, _), back_affine = to_ras(stored, lps_affine)
    assert np.array_equal(back, infection) and np.allclose(back_affine, affine)
    for zone in ZONE_KEYS:
        a, b = ras["zones"][zone]["infection_percent"], lps["zones"][zone]["infection_percent"]
        assert (math.isnan(a) and math.isnan(b)) or a == b
    assert ras["zone_score"] == lps["zone_score"]
    assert sum(r["volume_ml"] for r in lesions) == pytest.approx(infection.sum() * 0.8 * 0.7 * 2.5 / 1000)
