"""The cohort runner on its own (infnet_monai.pipeline.runner), with a stand-in predictor: the lock on OUTPUT, one
error row per bad case whatever it raises, error cells on one line, and the case bar that ends at N/N."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from filelock import FileLock

from infnet_monai.io.volume import load_ct
from infnet_monai.pipeline.predictor import CaseResult
from infnet_monai.pipeline.runner import LOCK_FILE, MAX_ERROR_CHARS, CohortRunner, OutputLockedError
from infnet_monai.pipeline.writer import CaseWriter, MaskVolumes


class HalfLung:
    """Stands in for a VolumePredictor: the lower half of every volume is "lung", nothing is infection; a case named
    in ``fail`` raises the exception given for it."""

    device = torch.device("cpu")
    network_fn = None

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.fail = fail or {}

    def __call__(self, case, keep_probability=False, progress=None) -> CaseResult:
        if case.case_id in self.fail:
            raise self.fail[case.case_id]
        image = load_ct(case)
        shape = tuple(image.shape[1:])
        lung = np.zeros(shape, dtype=np.uint8)
        lung[:, : shape[1] // 2] = 1
        row = {"lung_volume_ml": float(lung.sum()) * float(np.prod(np.asarray(image.pixdim[:3]))) / 1000.0, "shape": list(shape)}
        return CaseResult(row=row, infection=np.zeros(shape, np.uint8), lung=lung, affine=image.affine.numpy())


def _cohort(folder, names=("a", "b", "c")):
    folder.mkdir()
    for i, name in enumerate(names):
        hu = np.full((12, 10, 6), -800 + 10 * i, dtype=np.int16)
        nib.save(nib.Nifti1Image(hu, np.diag([2.0, 2.0, 3.0, 1.0])), str(folder / f"{name}.nii.gz"))
    return folder


def _runner(**fail) -> CohortRunner:
    return CohortRunner(HalfLung(fail), CaseWriter([MaskVolumes()]), settings={"threshold": 0.5})


def test_a_second_run_on_the_same_output_is_refused_and_touches_nothing(tmp_path):
    src, out = _cohort(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    held = FileLock(str(out / LOCK_FILE))
    held.acquire()
    try:
        stale = out / ".burden.csv.123.part.csv"  # the first run's temporary file: not the second run's to delete
        stale.write_text("x")
        with pytest.raises(OutputLockedError, match="is in use by"):
            _runner().run(src, out)
        assert stale.exists() and not (out / "burden.csv").exists() and not (out / "a").exists()
    finally:
        held.release()
    report = _runner().run(src, out)  # free again: the run goes ahead, and cleans up what a killed run left
    assert report.exit_code == 0 and not stale.exists()
    assert [r["case_id"] for r in report.rows] == ["a", "b", "c"]


def test_any_exception_of_a_case_is_its_error_row_and_the_others_finish(tmp_path):
    from nibabel.spatialimages import HeaderDataError

    src, out = _cohort(tmp_path / "in"), tmp_path / "out"
    trace = "Traceback (most recent call last):\n" + "  File 'x.py', line 1\n" * 400 + "HeaderDataError: bad qform"
    report = _runner(a=HeaderDataError("qform has NaN"), b=KeyError(trace)).run(src, out)
    assert [r["status"] for r in report.rows] == ["error", "error", "ok"] and report.exit_code == 1
    a, b = report.rows[0]["error"], report.rows[1]["error"]
    assert "a.nii.gz" in a and "HeaderDataError" in a and "qform has NaN" in a
    assert "\n" not in b and len(b) <= MAX_ERROR_CHARS and "b.nii.gz" in b
    with open(out / "burden.csv", newline="") as f:
        lines = f.read().splitlines()
    assert len(lines) == 4  # header and one line per case: no cell spans lines
    assert [r["status"] for r in csv.DictReader(lines)] == ["error", "error", "ok"]


def test_keyboard_interrupt_is_not_an_error_row(tmp_path):
    src = _cohort(tmp_path / "in")
    with pytest.raises(KeyboardInterrupt):
        _runner(a=KeyboardInterrupt()).run(src, tmp_path / "out")


def test_the_case_bar_ends_at_n_of_n(tmp_path):
    import io

    from tqdm import tqdm

    bars = []

    def progress(items):
        bars.append(tqdm(items, file=io.StringIO()))
        return bars[-1]

    report = _runner().run(_cohort(tmp_path / "in"), tmp_path / "out", progress=progress)
    assert len(report.rows) == 3 and bars[0].n == bars[0].total == 3
