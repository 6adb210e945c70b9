"""The fuzz cohort (:mod:`infnet_monai.testing.fuzz`): over 100 broken and valid variants of a synthetic chest CT, as
NIfTI and as a DICOM series, through the whole command line. No run crashes, every input has exactly one row of one
line, no broken input comes back ``ok``, every valid one does, and the inputs are left byte-identical."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from infnet_monai.cli import main
from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.pipeline.runner import MAX_ERROR_CHARS
from infnet_monai.testing.dicom import write_dicom_series
from infnet_monai.testing.fuzz import MUTATIONS, fuzz_inputs, sha_tree

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> tuple[Path, Path]:
    phantom = make_chest_phantom(shape=(64, 64, 32), spacing_mm=(5.0, 5.0, 8.0), seed=0)
    hu = np.round(phantom.volume_hu).astype(np.int16)
    root = tmp_path_factory.mktemp("seeds")
    nib.save(nib.Nifti1Image(hu, phantom.affine), str(root / "chest.nii.gz"))
    return root / "chest.nii.gz", write_dicom_series(hu, phantom.affine, root / "chest_dicom")


def test_the_generator_has_at_least_60_kinds_of_damage():
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    assert sum(m.expect == "refused" for m in MUTATIONS) >= 60
    assert sum(m.expect == "ok" for m in MUTATIONS) >= 15  # valid encodings that must still be read


def test_fuzz_cohort_no_crash_one_row_each_no_broken_input_ok(tmp_path, seeds, tiny_model, tiny_class_model):
    cohort = tmp_path / "cohort"
    made = fuzz_inputs(cohort, *seeds, seed=0)
    assert len(made) == len(MUTATIONS)
    before = sha_tree(cohort)
    out = tmp_path / "out"
    models = ["--model", str(tiny_model), "--class-model", str(tiny_class_model)]
    code = main(["segment", str(cohort), "-o", str(out), *models, "--device", "cpu", "-q"])
    assert code == 1  # some cases failed: the run itself finished
    with open(out / "burden.csv", encoding="utf-8", newline="") as f:
        text = f.read()
    rows = list(csv.DictReader(text.splitlines()))
    assert len(text.splitlines()) == len(rows) + 1  # no cell spans lines
    by_entry: dict[str, list[dict]] = {}
    for row in rows:
        by_entry.setdefault(Path(row["source_path"]).relative_to(cohort).parts[0], []).append(row)
    assert sorted(by_entry) == sorted(made)
    wrong = []
    for name, mutation in made.items():
        (row,) = by_entry[name]
        assert len(row["error"]) <= MAX_ERROR_CHARS
        if mutation.expect == "refused" and row["status"] == "ok":
            wrong.append(f"{name}: broken but ok")
        if mutation.expect == "ok" and row["status"] != "ok":
            wrong.append(f"{name}: valid but {row['status']}: {row['error']}")
        if row["status"] == "error":
            assert name.split(".nii")[0] in row["error"] or str(cohort) in row["error"], (name, row["error"])
    assert not wrong, wrong
    # one geometry per case: the written masks' voxel volume times their voxel count gives the reported mL
    checked = 0
    for name, mutation in made.items():
        (row,) = by_entry[name]
        if row["status"] != "ok":
            continue
        lung = nib.load(str(out / row["case_id"] / "lung.nii.gz"))
        voxel_ml = abs(float(np.linalg.det(lung.affine[:3, :3]))) / 1000.0
        assert np.count_nonzero(np.asarray(lung.dataobj)) * voxel_ml == pytest.approx(float(row["lung_volume_ml"]), rel=1e-4), name
        checked += 1
    assert checked >= 20
    assert sha_tree(cohort) == before  # inputs untouched
    assert not list(out.rglob("*.part*"))
