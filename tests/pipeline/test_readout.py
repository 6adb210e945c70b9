"""The read-out files of a cohort run end to end (DICOM SR, lesion table, zones, follow-up), on a synthetic chest CT
written as a DICOM series twice for one patient, with the tiny model of ``conftest.py``: every figure in them must
agree with ``stats.json``, whatever the model finds. Then the read-out of hand-made masks (nodule-like lesions, a scan
that cuts the lungs) and, through the predictor's post-processing, of a phantom with a solid nodule."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi

from infnet_monai.cli import main
from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.io.dicom_sr import read_dicom_sr
from infnet_monai.io.outputs import json_value, write_csv_atomic
from infnet_monai.pipeline.components import ct_postprocessing, ct_preprocessing, split_slicewise
from infnet_monai.pipeline.predictor import VolumePredictor, apply_steps
from infnet_monai.stats.lesions import LESION_COLUMNS, write_lesion_csv
from infnet_monai.stats.readout import case_readout, to_ras
from infnet_monai.stats.zones import ZONE_COLUMNS, ZONE_KEYS, ZONES_WITHHELD_LUNGS_CUT
from infnet_monai.stats.burden import BURDEN_FIELDS
from infnet_monai.testing.dicom import write_dicom_series

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model, tiny_class_model) -> Path:
    phantom = make_chest_phantom(shape=(64, 64, 32), spacing_mm=(5.0, 5.0, 8.0), seed=1)
    hu = np.round(phantom.volume_hu).astype(np.int16)
    root = tmp_path_factory.mktemp("readout")
    write_dicom_series(hu, phantom.affine, root / "cohort" / "scan 1", patient_id="P7")
    write_dicom_series(hu, phantom.affine, root / "cohort" / "scan 2", patient_id="P7")
    out = root / "out"
    models = ["--model", str(tiny_model), "--class-model", str(tiny_class_model)]
    code = main(["segment", str(root / "cohort"), "-o", str(out), *models, "--device", "cpu", "-q"])
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
        table = list(csv.DictReader(f))
    lesions = [r for r in table if r["kind"] == "infection"]
    nodules = [r for r in table if r["kind"] == "nodule_like"]
    assert len(lesions) + len(nodules) == len(table) and table[: len(lesions)] == lesions  # nodule-like rows last
    assert len(lesions) == stats["lesion_count"] and len(nodules) == stats["nodule_like_lesion_count"]
    assert [r["lesion_id"] for r in table] == [str(i) for i in range(1, len(table) + 1)]
    assert [n["lesion_id"] for n in stats["nodule_like_lesions"]] == [int(r["lesion_id"]) for r in nodules]
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
    assert stats["lungs_cut_by_scan"] is False and stats["zones_withheld"] is None
    assert set(ZONE_COLUMNS) <= set(BURDEN_FIELDS)
    with open(run / "burden.csv", encoding="utf-8", newline="") as f:
        row = next(csv.DictReader(f))
    assert int(row["zone_score"]) == stats["zone_score"] and row["zones_withheld"] == ""
    assert row["study_date"] == "2020-04-01"  # ISO 8601 in every table


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


# hand-made masks: voxel (i, j, k) -> RAS (-10 + 0.8 i, 20 + 0.7 j, 30 + 2.5 k) -> LPS (10 - 0.8 i, -20 - 0.7 j, ...)
_AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.7, 0, 20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
_VOXEL_ML = 0.8 * 0.7 * 2.5 / 1000


def _masks_with_a_nodule():
    """Lungs on slices 1-10 (left) and 2-9 (right), two infection lesions and a 2 x 3 x 2 voxel nodule-like one
    (mean index (15.5, 10, 3.5): LPS (-2.4, -27, 38.75) mm) apart from them."""
    lung = np.zeros((20, 16, 12), np.uint8)
    lung[2:9, 3:13, 1:11], lung[11:18, 3:13, 2:10] = 2, 1  # RAS: axis 0 toward the right, so the right lung is higher
    infection = np.zeros(lung.shape, np.uint8)
    infection[3:6, 4:8, 2:5] = 1  # left lung, 36 voxels
    infection[12:14, 4:6, 6:8] = 1  # right lung, 8 voxels
    nodules = np.zeros(lung.shape, np.uint8)
    nodules[15:17, 9:12, 3:5] = 1
    image = np.full(lung.shape, -850.0)
    image[infection > 0], image[nodules > 0] = -500.0, 30.0
    return infection, lung, image, nodules


def test_nodule_like_lesions_are_listed_after_the_infection_with_their_position():
    infection, lung, image, nodules = _masks_with_a_nodule()
    fields, rows = case_readout(infection, lung, image, _AFFINE, nodules=nodules)
    without, rows_without = case_readout(infection, lung, image, _AFFINE)
    assert [r["kind"] for r in rows] == ["infection", "infection", "nodule_like"]
    assert rows[:2] == rows_without  # the infection's rows as without the nodules: same ids, same values
    assert [r["lesion_id"] for r in rows] == [1, 2, 3]
    assert sum(r["volume_ml"] for r in rows if r["kind"] == "infection") == pytest.approx(44 * _VOXEL_ML)
    nodule = rows[2]
    centroid = (nodule["centroid_lps_x_mm"], nodule["centroid_lps_y_mm"], nodule["centroid_lps_z_mm"])
    assert centroid == pytest.approx((-2.4, -27.0, 38.75))
    low = (nodule["bbox_lps_min_x_mm"], nodule["bbox_lps_min_y_mm"], nodule["bbox_lps_min_z_mm"])
    assert low == pytest.approx((-2.8, -27.7, 37.5))  # voxel centres i 15-16, j 9-11, k 3-4
    assert nodule["volume_ml"] == pytest.approx(12 * _VOXEL_ML) and nodule["mean_hu"] == pytest.approx(30.0)
    assert nodule["lung_side"] == "right" and nodule["zone"] == "right_lower" and nodule["slices"] == 2
    assert nodule["ggo_volume_ml"] is None and nodule["consolidation_volume_ml"] is None  # not infection: no class
    assert nodule["largest_axial_diameter_mm"] == pytest.approx(np.hypot(0.8, 1.4))
    assert fields["nodule_like_lesions"] == [
        {"lesion_id": 3, "volume_ml": 0.0168, "centroid_lps_mm": [-2.4, -27.0, 38.75],
         "largest_axial_diameter_mm": 1.61, "lung_side": "right"},
    ]  # fmt: skip
    assert "nodule_like_lesions" not in without
    assert {k: v for k, v in fields.items() if k != "nodule_like_lesions"} == without  # zones of the infection only
    # the same voxels stored left-posterior-superior: the same rows
    lps_affine = _AFFINE @ np.array([[-1, 0, 0, 19], [0, -1, 0, 15], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    stored = [a[::-1, ::-1] for a in (infection, lung, image, nodules)]
    assert case_readout(*stored[:3], lps_affine, nodules=stored[3])[1] == rows


def test_a_scan_that_cuts_the_lungs_gets_no_zones(tmp_path):
    infection, lung, image, nodules = _masks_with_a_nodule()
    whole, rows = case_readout(infection, lung, image, _AFFINE, nodules=nodules)
    cut, cut_rows = case_readout(infection, lung, image, _AFFINE, nodules=nodules, lungs_cut_by_scan=True)
    assert whole["zones_withheld"] is None and whole["zone_score"] is not None
    assert cut["zones_withheld"] == ZONES_WITHHELD_LUNGS_CUT and "lungs_cut_by_scan" in ZONES_WITHHELD_LUNGS_CUT
    assert cut["zones"] is None and all(cut[c] is None for c in ZONE_COLUMNS)
    assert cut["distribution"] == whole["distribution"]  # ventral / dorsal, peripheral / central: on every slice
    assert [r["zone"] for r in cut_rows] == [None] * 3
    assert [{**r, "zone": None} for r in rows] == cut_rows  # everything else as on a whole scan
    # files: empty cells in burden.csv and lesions.csv, null in stats.json
    write_csv_atomic([{"case_id": "cut", "status": "ok", **cut}], tmp_path / "burden.csv")
    with open(tmp_path / "burden.csv", encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert all(row[c] == "" for c in ZONE_COLUMNS) and row["zones_withheld"] == ZONES_WITHHELD_LUNGS_CUT
    stats = json.loads(json.dumps({k: json_value(v) for k, v in cut.items()}))
    assert stats["zone_score"] is None and stats["zones"] is None and stats["right_upper_infection_percent"] is None
    write_lesion_csv(cut_rows, tmp_path / "lesions.csv")
    with open(tmp_path / "lesions.csv", encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(LESION_COLUMNS) and [r["zone"] for r in table] == ["", "", ""]
    assert [r["kind"] for r in table] == ["infection", "infection", "nodule_like"]


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut"])
def test_the_predictor_keeps_the_nodules_on_the_input_grid(cut):
    """A phantom with a solid ball of 10 mm radius in the aerated right lung, stored LPS (so the post-processing
    inverts the RAS orientation), with an infection probability of 1 on its lesions and on the ball: the ball comes
    back as a nodule-like lesion, on the input's grid, at its place; cut to 20 of its 40 slices, the zones are
    withheld."""
    phantom = make_chest_phantom(shape=(96, 96, 40), spacing_mm=(3.0, 3.0, 5.0), seed=1)
    spacing = phantom.spacing_mm
    free = (phantom.lung == 1) & ~ndi.binary_dilation(phantom.infection > 0, iterations=3)
    centre = np.unravel_index(np.argmax(ndi.distance_transform_edt(free, sampling=spacing)), free.shape)
    i, j, k = np.indices(free.shape, sparse=True)
    ball = sum(((a - c) * s) ** 2 for a, c, s in zip((i, j, k), centre, spacing)) <= 10.0**2
    hu = phantom.volume_hu.copy()
    hu[ball] = 40.0
    probability = ((phantom.infection > 0) | ball).astype(np.float16)
    affine, z0 = phantom.affine, int(centre[2]) - 10 if cut else 0
    if cut:
        hu, probability, ball = hu[..., z0 : z0 + 20], probability[..., z0 : z0 + 20], ball[..., z0 : z0 + 20]
        affine = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, z0], [0, 0, 0, 1]], dtype=float)
    flip = np.array([[-1, 0, 0, hu.shape[0] - 1], [0, -1, 0, hu.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    lps = affine @ flip
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(hu[::-1, ::-1])[None]), affine=torch.as_tensor(lps))
    preprocessing = ct_preprocessing()
    predictor = VolumePredictor(lambda x: x, preprocessing, None, ct_postprocessing(split_slicewise(preprocessing)[0]))
    data = apply_steps(predictor.volume_preprocessing, {"image": image})  # on the RAS grid: the phantom's own
    data["pred"] = MetaTensor(torch.from_numpy(probability[None]), meta=dict(data["image"].meta))
    result = predictor.finish(data)

    assert result.nodules is not None and result.nodules.dtype == np.uint8 and result.nodules.shape == hu.shape
    assert (result.nodules[::-1, ::-1][ball] == 1).all()  # the whole ball, at its place on the LPS grid
    assert not (result.nodules & result.infection).any()
    voxel_ml = float(np.prod(spacing)) / 1000
    assert result.row["nodule_like_volume_ml"] == pytest.approx(np.count_nonzero(result.nodules) * voxel_ml)
    world = affine @ np.array([float(centre[0]), float(centre[1]), float(centre[2] - z0), 1.0])
    expected = pytest.approx((-world[0], -world[1], world[2]))  # LPS
    found = [r for r in result.lesions if r["kind"] == "nodule_like"]
    assert len(found) == result.row["nodule_like_lesion_count"] >= 1
    (nodule,) = [r for r in found if tuple(r[f"centroid_lps_{a}_mm"] for a in "xyz") == expected]
    assert nodule["volume_ml"] == pytest.approx(np.count_nonzero(ball) * voxel_ml)
    assert nodule["lesion_id"] > result.row["lesion_count"] and nodule["lung_side"] == "right"
    infection_rows = [r for r in result.lesions if r["kind"] == "infection"]
    assert len(infection_rows) == result.row["lesion_count"]
    assert sum(r["volume_ml"] for r in infection_rows) == pytest.approx(result.row["infection_volume_ml"])
    assert [n["lesion_id"] for n in result.row["nodule_like_lesions"]] == [r["lesion_id"] for r in found]
    assert result.row["lungs_cut_by_scan"] is cut
    if cut:
        assert result.row["zones_withheld"] == ZONES_WITHHELD_LUNGS_CUT and result.row["zones"] is None
        assert all(result.row[c] is None for c in ZONE_COLUMNS) and nodule["zone"] is None
    else:
        assert result.row["zones_withheld"] is None and isinstance(result.row["zone_score"], int)
        assert nodule["zone"].startswith("right_")


def test_the_read_out_is_a_step_of_the_chain_and_of_the_bundle_before_the_inversion():
    """Zones and lesions are computed once, on the RAS grid inside the post-processing (issue 35): no RAS -> input ->
    RAS round trip, and the bundle configures the same step."""
    import json
    from pathlib import Path

    from monai.transforms import Compose, Invertd

    from infnet_monai.pipeline.components import ct_postprocessing
    from infnet_monai.stats import CaseReadoutd

    steps = list(ct_postprocessing(Compose([])).transforms)
    kinds = [type(t) for t in steps]
    assert CaseReadoutd in kinds and kinds.index(CaseReadoutd) < kinds.index(Invertd)
    config = json.loads((Path(__file__).parents[2] / "bundles/infnet_covid/configs/inference.json").read_text())
    targets = [step["_target_"] for step in config["postprocessing"]["transforms"]]
    assert "infnet_monai.stats.CaseReadoutd" in targets
    assert targets.index("infnet_monai.stats.CaseReadoutd") < targets.index("Invertd")
