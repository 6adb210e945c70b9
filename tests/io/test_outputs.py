"""Tests of infnet_monai.io.outputs: what a case skipped by ``--resume`` brings back from its stored outputs."""

import json
import math

import nibabel as nib
import numpy as np
import pytest

from infnet_monai.io import discover_cases
from infnet_monai.io.outputs import (
    CSV_FILE,
    STATS_FILE,
    case_fields,
    completed_row,
    json_value,
    reference_header,
    write_case_volumes,
    write_csv_atomic,
    write_text_atomic,
)


@pytest.fixture()
def stored_case(tmp_path):
    """A finished case as the runner leaves it: its masks and a stats.json whose undefined statistics (the percents
    of an empty left lung) are stored as null; returns ``(case, output folder, the original row)``."""
    shape = (6, 5, 4)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    source = tmp_path / "in" / "one_lung.nii.gz"
    source.parent.mkdir()
    nib.save(nib.Nifti1Image(np.full(shape, -1000, dtype=np.int16), affine), str(source))
    (case,) = discover_cases(source)
    out = tmp_path / "out"
    case_dir = out / case.case_id
    case_dir.mkdir(parents=True)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[3:, 1:4, 1:3] = 1  # the right lung only
    infection = np.zeros(shape, dtype=np.uint8)
    infection[4, 2, 1] = 1
    row = case_fields(case)
    row.update(write_case_volumes(case_dir, reference_header(case, affine), infection, lung))
    row.update(
        {
            "status": "ok", "error": "", "shape": list(shape), "spacing_mm": [2.0, 2.0, 3.0],
            "lung_volume_ml": 0.216, "right_lung_volume_ml": 0.216, "left_lung_volume_ml": 0.0,
            "infection_volume_ml": 0.012, "infection_percent": 100.0 / 18.0,
            "right_lung_infection_percent": 100.0 / 18.0, "left_lung_infection_percent": math.nan,
            "lesion_count": 1, "largest_lesion_ml": 0.012, "slices_with_infection": 1,
            "trachea_in_lung_percent": math.nan, "lungs_cut_by_scan": True, "qc_flags": ["lungs_cut_by_scan"],
            "seconds": 1.25,
        }
    )
    write_text_atomic(json.dumps({k: json_value(v) for k, v in row.items()}, indent=2), case_dir / STATS_FILE)
    return case, out, row


def test_resumed_row_restores_null_statistics_as_nan(stored_case):
    case, out, row = stored_case
    stored = json.loads((out / case.case_id / STATS_FILE).read_text())
    assert stored["left_lung_infection_percent"] is None and stored["trachea_in_lung_percent"] is None
    restored = completed_row(case, out)
    assert restored is not None
    for key in ("left_lung_infection_percent", "trachea_in_lung_percent"):
        assert isinstance(restored[key], float) and math.isnan(restored[key]), key
    assert restored["right_lung_infection_percent"] == pytest.approx(row["right_lung_infection_percent"])


def test_resumed_row_writes_the_same_burden_csv_row(stored_case, tmp_path):
    case, out, row = stored_case
    write_csv_atomic([row], tmp_path / "original.csv")
    write_csv_atomic([completed_row(case, out)], out / CSV_FILE)
    original = (tmp_path / "original.csv").read_text(encoding="utf-8")
    resumed = (out / CSV_FILE).read_text(encoding="utf-8")
    assert ",nan," in original
    assert resumed == original
