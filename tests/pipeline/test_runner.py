"""The cohort runner on its own (infnet_monai.pipeline.runner), with a stand-in predictor: the lock on OUTPUT, one
error row per bad case whatever it raises, error cells on one line, and the case bar that ends at N/N."""

from __future__ import annotations

import csv
from pathlib import Path

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
        nib.save(nib.Nifti1Image(hu, np.diag([20.0, 20.0, 3.0, 1.0])), str(folder / f"{name}.nii.gz"))  # lungs of a chest's size
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


def test_a_deep_folder_leaves_the_problem_whole_in_the_error_cell(tmp_path):
    from infnet_monai.io import CaseError

    deep = tmp_path.joinpath(*["a hospital share with a long name"] * 8)
    deep.parent.mkdir(parents=True)
    src = _cohort(deep)
    problem = "gap of 4 mm between slices 7 and 9 (2x the median spacing of 2 mm): slice(s) are missing. Export it again."
    report = _runner(a=CaseError(f"{src / 'a.nii.gz'}: {problem}")).run(src, tmp_path / "out")
    row = report.rows[0]
    assert len(str(src)) > 250 and row["source_path"] == str(src / "a.nii.gz")  # the whole path has its own column
    assert row["error"] == f"a.nii.gz: {problem}"  # named from its folder, the problem not cut


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


def test_the_lock_refusal_names_pid_and_host_and_the_cli_exits_2(tmp_path, tiny_model, tiny_class_model, capsys):
    import os
    import socket

    from infnet_monai.cli import main

    src, out = _cohort(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    held = FileLock(str(out / LOCK_FILE))
    held.acquire()
    try:
        (out / ".infnet-covid.owner").write_text(f'{{"pid": 4242, "host": "{socket.gethostname()}", "started": "x"}}')
        models = ["--model", str(tiny_model), "--class-model", str(tiny_class_model)]
        code = main(["segment", str(src), "-o", str(out), *models, "--device", "cpu", "-q"])
        assert code == 2
        err = capsys.readouterr().err
        assert "is in use by PID 4242 on " + socket.gethostname() in err
        assert not (out / "burden.csv").exists()
    finally:
        held.release()
    report = _runner().run(src, out)  # a run writes its own owner file while it holds the lock, and removes it
    assert report.exit_code == 0 and not (out / ".infnet-covid.owner").exists()
    assert os.getpid() > 0


def test_an_empty_lung_is_status_no_lung_not_ok(tmp_path):
    class NoLung(HalfLung):
        def __call__(self, case, keep_probability=False, progress=None):
            result = super().__call__(case)
            result.lung[:] = 0
            result.row["lung_volume_ml"] = 0.0
            return result

    src, out = _cohort(tmp_path / "in", names=("a",)), tmp_path / "out"
    report = CohortRunner(NoLung(), CaseWriter([MaskVolumes()])).run(src, out)
    (row,) = report.rows
    assert row["status"] == "no_lung" and "no lung found" in row["error"] and "a.nii.gz" in row["error"]
    assert report.exit_code == 0 and (out / "a" / "stats.json").is_file()  # its masks are written all the same


def test_burden_csv_lists_every_finished_case_while_the_run_goes_on(tmp_path):
    src, out = _cohort(tmp_path / "in"), tmp_path / "out"
    seen = []

    class Watching(HalfLung):
        def __call__(self, case, keep_probability=False, progress=None):
            table = out / "burden.csv"
            seen.append([r["case_id"] for r in csv.DictReader(table.open())] if table.exists() else [])
            return super().__call__(case)

    CohortRunner(Watching(), CaseWriter([MaskVolumes()])).run(src, out)
    assert seen == [[], ["a"], ["a", "b"]]  # a kill during c leaves a and b in the table


def test_rank_rows_files_are_merged_into_one_table(tmp_path):
    from types import SimpleNamespace

    from infnet_monai.pipeline.runner import ROWS_FILE

    out = tmp_path / "out"
    out.mkdir()
    runner = _runner()
    other = {"1": {"case_id": "b", "status": "ok"}}  # what rank 1 has finished
    (out / ROWS_FILE.format(rank=1)).write_text(__import__("json").dumps(other))
    runner._write_partial_table({0: {"case_id": "a", "status": "error"}, 2: {"case_id": "c", "status": "ok"}}, out, SimpleNamespace(rank=0))
    rows = list(csv.DictReader((out / "burden.csv").open()))
    assert [(r["case_id"], r["status"]) for r in rows] == [("a", "error"), ("b", "ok"), ("c", "ok")]


def test_output_inside_a_series_folder_and_foreign_case_folders_are_refused(tmp_path, tiny_model):
    from infnet_monai.data.phantom import make_chest_phantom
    from infnet_monai.testing.dicom import write_dicom_series

    phantom = make_chest_phantom(shape=(32, 32, 16), spacing_mm=(10.0, 10.0, 16.0), seed=0)
    data = tmp_path / "data"
    series = write_dicom_series(np.round(phantom.volume_hu).astype(np.int16), phantom.affine, data / "p2")
    nib.save(nib.Nifti1Image(np.round(phantom.volume_hu).astype(np.int16), phantom.affine), str(data / "p2.nii.gz"))
    before = sorted(p.name for p in series.iterdir())
    with pytest.raises(ValueError, match="into the DICOM series folder"):
        _runner().run(data, series / "out")
    # segment data/p2.nii.gz -o data: the case folder data/p2 is the series folder
    report = _runner().run(data / "p2.nii.gz", data)
    assert report.rows[0]["status"] == "error" and "already holds other files" in report.rows[0]["error"]
    assert sorted(p.name for p in series.iterdir()) == before


def test_strict_makes_passed_over_paths_error_rows_and_dropped_slices_are_named(tmp_path):
    from infnet_monai.data.phantom import make_chest_phantom
    from infnet_monai.testing.dicom import write_dicom_series

    src = _cohort(tmp_path / "in", names=("a",))
    (src / ".hidden.nii.gz").write_bytes(b"x")
    (src / "gone.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    phantom = make_chest_phantom(shape=(32, 32, 16), spacing_mm=(10.0, 10.0, 16.0), seed=0)
    series = write_dicom_series(np.round(phantom.volume_hu).astype(np.int16), phantom.affine, src / "series")
    (series / "IM0008.dcm").write_bytes(b"")  # a slice lost in a copy
    plain = _runner().run(src, tmp_path / "plain")
    assert [r["case_id"] for r in plain.rows] == ["a", "series"]
    series_row = plain.rows[1]
    assert series_row["status"] == "error" and "gap" in series_row["error"]
    assert "IM0008.dcm: empty file (0 bytes)" in series_row["error"]
    strict = _runner().run(src, tmp_path / "strict", strict=True)
    errors = {r["case_id"]: r["error"] for r in strict.rows if r["status"] == "error"}
    assert any("hidden file" in e for e in errors.values()) and any("broken link" in e for e in errors.values())


def test_followup_table_from_a_pairs_file(tmp_path):
    src, out = _cohort(tmp_path / "in"), tmp_path / "out"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("baseline_case_id,followup_case_id\na,c\n")
    report = _runner().run(src, out, pairs=pairs)
    rows = list(csv.DictReader((out / "followup.csv").open()))
    assert [(r["baseline_case_id"], r["followup_case_id"]) for r in rows] == [("a", "c")] and report.followup


def test_a_kill_at_any_rename_leaves_a_table_with_every_finished_case(tmp_path, monkeypatch):
    """Every file is published by a rename (infnet_monai.utils.files.atomic_write); a kill (here an interrupt) at
    each of them in turn leaves a burden.csv that lists every case whose stats.json exists."""
    import os

    import infnet_monai.utils.files as files

    src = _cohort(tmp_path / "in")
    real_replace = os.replace
    calls = []

    def counting(a, b):
        calls.append(b)
        return real_replace(a, b)

    monkeypatch.setattr(files.os, "replace", counting)
    _runner().run(src, tmp_path / "count")
    monkeypatch.setattr(files.os, "replace", real_replace)
    n_renames = len(calls)
    assert sum(Path(c).name == "stats.json" for c in calls) == 3

    for k in range(n_renames):
        out = tmp_path / f"out{k}"
        seen = []

        def killing(a, b, k=k):
            if len(seen) == k:
                raise KeyboardInterrupt
            seen.append(b)
            return real_replace(a, b)

        monkeypatch.setattr(files.os, "replace", killing)
        with pytest.raises(KeyboardInterrupt):
            _runner().run(src, out)
        monkeypatch.setattr(files.os, "replace", real_replace)
        finished = {p.parent.name for p in out.glob("*/stats.json")}
        listed = {r["case_id"] for r in csv.DictReader((out / "burden.csv").open())} if (out / "burden.csv").exists() else set()
        assert finished <= listed, (k, Path(calls[k]).name, finished, listed)
        assert not list(out.glob("**/*.part*")), k


def test_no_lung_counts_apart_resumes_as_finished_and_a_tiny_section_is_not_a_lung(tmp_path, caplog):
    """A scan whose "lung" is a few cm2 of air (sinuses of a head CT) is no_lung, not ok; no_lung is not a failure
    in the counts, the exit code or --resume."""
    import logging

    src = _cohort(tmp_path / "in", names=("chest",))
    hu = np.full((12, 10, 6), -800, dtype=np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([1.0, 1.0, 10.0, 1.0])), str(src / "head.nii.gz"))  # 3.6 mL, 0.6 cm2
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="infnet_monai"):
        report = _runner().run(src, out)
    rows = {r["case_id"]: r for r in report.rows}
    assert rows["chest"]["status"] == "ok" and rows["head"]["status"] == "no_lung"
    assert "covers at most 0.6 cm2 of an axial slice, under the 20 cm2" in rows["head"]["error"]
    assert rows["head"]["largest_lung_section_cm2"] == 0.6 and rows["chest"]["largest_lung_section_cm2"] == 240.0
    assert report.exit_code == 0 and report.counts() == "2 case(s): 1 ok, 1 no_lung, 0 failed"
    assert "2 case(s): 1 ok, 1 no_lung, 0 failed" in report.summary()
    assert "2 case(s): 1 ok, 1 no_lung, 0 failed" in caplog.text
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/stats.json")}
    again = _runner().run(src, out, resume=True)
    assert [r["status"] for r in again.rows] == ["ok", "no_lung"]
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/stats.json")} == before  # both skipped


def test_rows_carry_the_version_an_absolute_source_path_and_iso_dates(tmp_path, monkeypatch):
    from infnet_monai import __version__
    from infnet_monai.io.outputs import iso_date

    src = _cohort(tmp_path / "in", names=("a",))
    monkeypatch.chdir(tmp_path)
    report = CohortRunner(HalfLung(), CaseWriter([MaskVolumes()]), settings={"infnet_monai_version": __version__}).run(
        Path("in"), Path("out")
    )
    stored = __import__("json").loads((tmp_path / "out" / "a" / "stats.json").read_text())
    assert stored["source_path"] == str(src / "a.nii.gz") and Path(stored["source_path"]).is_absolute()
    assert stored["infnet_monai_version"] == __version__ and report.rows[0]["status"] == "ok"
    assert iso_date("20200305") == "2020-03-05" and iso_date("2020-03-05") == "2020-03-05"
    assert iso_date("") == "" and iso_date(None) == "" and iso_date("20201399") == "20201399"
