""""Never lose a case": the cohort pipeline and the CLI under broken inputs, crashes, full disks and unsafe models.

Every test builds its inputs in ``tmp_path`` from the real scans of ``../shared/data/ct`` and runs the tiny
random-weight model of ``conftest.py``: what is checked (rows, messages, files, exit codes) does not depend on the
model's quality. Unit-level checks of each input class live in ``tests/io/test_volume.py``; here every class goes
through the whole pipeline and must end as exactly one clear row of ``burden.csv``.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

import infnet_monai.io.outputs as outputs_module
from infnet_monai.pipeline.runner import LOCK_FILE
from infnet_monai.cli import main
from infnet_monai.io.cases import sanitize_case_id
from infnet_monai.stats.burden import BURDEN_FIELDS
from infnet_monai.utils.files import atomic_write

pytestmark = [
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

REPO = Path(__file__).resolve().parents[2]
# columns that legitimately differ between two runs of the same cohort
VOLATILE = {"seconds", "stage_seconds", "infection_mask_path", "infection_classes_path", "lung_mask_path", "command_line", "lesions_path", "dicom_seg_path", "dicom_sr_path"}


# ---------------------------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def ct_dir(data_dir: Path) -> Path:
    return data_dir / "ct"


@pytest.fixture(scope="module")
def hu(ct_dir: Path) -> np.ndarray:
    return np.asarray(nib.load(ct_dir / "abdomen_3mm_small.nii.gz").dataobj)


_TINY_HEAD: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _tiny_head(tiny_class_model):
    """The tiny GGO / consolidation head for every run of this module: the shipped one costs 20 times the tiny
    Inf-Net's time on every slice, and these tests are about the run, not the classes."""
    _TINY_HEAD[:] = [tiny_class_model]


def _segment(inp: Path, out: Path, model: Path, *extra: str) -> int:
    head = ["--class-model", str(_TINY_HEAD[0])]
    return main(["segment", str(inp), "-o", str(out), "--model", str(model), *head, "--device", "cpu", "-q", *extra])


def _rows(out: Path) -> list[dict]:
    with open(out / "burden.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(BURDEN_FIELDS)
        return list(reader)


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def _sha_tree(root: Path) -> dict[str, str]:
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _all_paths(root: Path, skip: Path | None = None) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip is None or not (p == skip or skip in p.parents)}


def _parts(out: Path) -> list[Path]:
    return sorted(out.rglob("*.part*"))


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # contents only: the shared data is read-only
    return dst


def _save(data: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def _dicom_copy(src: Path, dst: Path, modify=None, skip: tuple[int, ...] = ()) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(src.iterdir())):
        if i in skip:
            continue
        ds = pydicom.dcmread(f)
        if modify is not None:
            modify(ds, i)
        ds.save_as(dst / f.name)
    return dst


def _set(keyword: str, value):
    return lambda ds, i: setattr(ds, keyword, value)


def _tilt(ds: pydicom.Dataset, i: int) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + 0.5 * i, z]  # 0.5 mm per slice: about 14 degrees over 2 mm slices


def _assert_case_outputs(case_dir: Path, shape: tuple[int, ...]) -> None:
    for name in ("infection.nii.gz", "lung.nii.gz"):
        img = nib.load(str(case_dir / name))
        assert img.shape == shape, (case_dir, name)
        data = np.asarray(img.dataobj)
        assert data.dtype == np.uint8
    stats = json.loads((case_dir / "stats.json").read_text(encoding="utf-8"))
    assert stats["status"] == "ok" and tuple(stats["shape"]) == shape


def _assert_same_outputs(out_a: Path, out_b: Path) -> None:
    """Same masks, same stats.json and same burden.csv rows (ignoring timings and absolute output paths)."""
    rows_a, rows_b = _rows(out_a), _rows(out_b)
    assert [_stable(r) for r in rows_a] == [_stable(r) for r in rows_b]
    for row in rows_a:
        if row["status"] != "ok":
            continue
        a, b = out_a / row["case_id"], out_b / row["case_id"]
        for name in ("infection.nii.gz", "lung.nii.gz"):
            ia, ib = nib.load(str(a / name)), nib.load(str(b / name))
            assert np.array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj)), (row["case_id"], name)
            assert np.array_equal(ia.affine, ib.affine)
        sa = json.loads((a / "stats.json").read_text(encoding="utf-8"))
        sb = json.loads((b / "stats.json").read_text(encoding="utf-8"))
        assert _stable(sa) == _stable(sb)
    # nothing else: same file names in both trees (no leftovers of the interrupted run)
    assert _all_paths(out_a) == _all_paths(out_b)


# ---------------------------------------------------------------------------------------------------------------------
# 1. a mixed cohort: every broken case is reported, the good ones are segmented, nothing is touched or escapes

# folder/file name under the cohort -> substrings the error must contain (besides the name itself)
BAD = {
    "empty ∅ scan.nii.gz": ["file is empty (0 bytes)"],
    "truncated.nii.gz": ["truncated"],
    "text as nifti.nii.gz": ["not a readable NIfTI image"],
    "flat 2d.nii.gz": ["2D image of shape (122, 101)"],
    "two volumes.nii.gz": ["holds 2 volumes"],
    "one slice.nii.gz": ["1 slice(s)", "at least 2 slices"],
    "nan voxels.nii.gz": ["voxel(s) are NaN or infinite"],
    "random 12-bit.nii.gz": ["values range from 0 to 4095", "not Hounsfield units", "does not look like raw CT"],
    "thick 50mm.nii.gz": ["voxel spacing [3.0, 3.0, 50.0] mm is outside [0.1, 20] mm"],
    "label map.nii.gz": ["no voxel below -500 HU", "label map"],
    "mr only": ["no axial CT series", "(MR, axial"],
    "série manquante": ["gap of 4 mm", "slice(s) are missing"],
    "gantry tilt": ["not stacked along the slice normal", "Gantry-tilted"],
    "uneven spacing": ["non-uniform slice spacing"],
    "duplicate slice": ["duplicate slice position"],
    "dicom cut short": ["pixel data are missing or cut short", "truncated"],
}


NO_LUNG = {"abdomen dicom"}  # 20 abdominal slices below the lungs


def _build_mixed_cohort(root: Path, ct_dir: Path, hu: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Write the cohort; return the good entries (relative path -> expected output shape)."""
    small = ct_dir / "abdomen_3mm_small.nii.gz"
    dicom, chest = ct_dir / "abdomen_dicom", ct_dir / "chest_2slice_dicom"
    # good
    _copy(small, root / "Pätient 1" / "ct scan.nii.gz")
    _dicom_copy(dicom, root / "abdomen dicom")
    _dicom_copy(chest, root / "pid ..\\..\\x", _set("PatientID", "../../x"))  # backslashes in the folder name too
    _dicom_copy(chest, root / "pid a-b", _set("PatientID", "a/b"))
    good = {
        "Pätient 1/ct scan.nii.gz": hu.shape,
        "abdomen dicom": (512, 512, 20),
        "pid ..\\..\\x": (512, 512, 2),
        "pid a-b": (512, 512, 2),
    }
    # bad NIfTI
    (root / "empty ∅ scan.nii.gz").touch()
    (root / "truncated.nii.gz").write_bytes(small.read_bytes()[: small.stat().st_size // 2])
    (root / "text as nifti.nii.gz").write_text("patient list\nnot an image\n" * 50, encoding="utf-8")
    _save(hu[:, :, 15], root / "flat 2d.nii.gz")
    _save(np.stack([hu, hu], -1), root / "two volumes.nii.gz")
    _save(hu[:, :, 15:16], root / "one slice.nii.gz")
    nan = hu.astype(np.float32)
    nan[60, 50, 10:20] = np.nan
    _save(nan, root / "nan voxels.nii.gz")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 4096, size=hu.shape, dtype=np.uint16)
    noise.flat[[0, 1]] = [0, 4095]
    _save(noise, root / "random 12-bit.nii.gz")  # uint16, no scl_slope/scl_inter: "raw" but not CT-like
    _save(hu, root / "thick 50mm.nii.gz", np.diag([3.0, 3.0, 50.0, 1.0]))
    _copy(ct_dir / "abdomen_3mm_lung.nii.gz", root / "label map.nii.gz")
    # bad DICOM
    _dicom_copy(chest, root / "mr only", _set("Modality", "MR"))
    _dicom_copy(dicom, root / "série manquante", skip=(10,))
    _dicom_copy(dicom, root / "gantry tilt", _tilt)

    def uneven(ds: pydicom.Dataset, i: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z - (0.5 if i >= 10 else 0.0)]

    _dicom_copy(dicom, root / "uneven spacing", uneven)

    def duplicate(ds: pydicom.Dataset, i: int) -> None:
        if i == 3:
            x, y, _ = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, -770.5]  # the position of another slice

    _dicom_copy(dicom, root / "duplicate slice", duplicate)
    cut = _dicom_copy(dicom, root / "dicom cut short")
    victim = sorted(cut.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[:60000])  # header intact, pixel data cut: an interrupted copy
    return good


def test_mixed_cohort_every_case_has_one_clear_row(tmp_path, ct_dir, hu, tiny_model, capsys):
    cohort = tmp_path / "cohort ü"
    good = _build_mixed_cohort(cohort, ct_dir, hu)
    entries = sorted(p.name for p in cohort.iterdir())
    assert len(entries) == len(good) + len(BAD)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    out = outputs / "run ñ 1"
    before_inputs = _sha_tree(cohort)
    before_paths = _all_paths(tmp_path)

    assert _segment(cohort, out, tiny_model) == 1

    rows = _rows(out)
    # one row per entry, identified by its source
    by_entry: dict[str, list[dict]] = {}
    for row in rows:
        entry = Path(row["source_path"]).relative_to(cohort).parts[0]
        by_entry.setdefault(entry, []).append(row)
    assert sorted(by_entry) == entries
    assert all(len(v) == 1 for v in by_entry.values()), {k: len(v) for k, v in by_entry.items() if len(v) != 1}
    assert len({r["case_id"] for r in rows}) == len(rows)

    for name, needles in BAD.items():
        (row,) = by_entry[name]
        assert row["status"] == "error", (name, row)
        message = row["error"]
        assert name in message, (name, message)  # names the file or folder
        for needle in needles:
            assert needle in message, (name, needle, message)
        assert not (out / row["case_id"]).exists(), name  # no partial outputs for a refused case

    for rel, shape in good.items():
        (row,) = by_entry[Path(rel).parts[0]]
        if rel in NO_LUNG:  # a valid CT without lung: its masks are written, its figures are not called a finding
            assert row["status"] == "no_lung" and "no lung found" in row["error"] and rel in row["error"], row
            continue
        assert row["status"] == "ok" and row["error"] == "", (rel, row["error"])
        case_dir = out / row["case_id"]
        assert case_dir.parent == out
        assert row["shape"] == "x".join(str(s) for s in shape)
        _assert_case_outputs(case_dir, shape)
    # hostile PatientIDs are kept as data only; the folders are named from the sanitised relative path
    pid1, pid2 = by_entry["pid ..\\..\\x"][0], by_entry["pid a-b"][0]
    assert (pid1["patient_id"], pid2["patient_id"]) == ("../../x", "a/b")
    assert pid1["case_id"] == sanitize_case_id("pid ..\\..\\x") == "pid_.._.._x" and pid2["case_id"] == "pid_a-b"
    assert by_entry["Pätient 1"][0]["case_id"] == "Patient_1_ct_scan"

    # nothing written outside OUTPUT, nothing escapes it, inputs byte-identical, no temporary files
    assert sorted(p.name for p in outputs.iterdir()) == [out.name]
    assert _all_paths(tmp_path, skip=out) == before_paths
    assert all(out.resolve() in p.resolve().parents for p in out.rglob("*"))
    good_ids = [by_entry[Path(rel).parts[0]][0]["case_id"] for rel in good]
    # the lock stays (removing it would race a run that opened it): an empty, hidden file
    assert sorted(p.name for p in out.iterdir()) == sorted(["burden.csv", "report.html", LOCK_FILE, *good_ids])
    assert _sha_tree(cohort) == before_inputs
    assert not _parts(out)
    printed = capsys.readouterr().out
    assert sum(line.startswith("error ") for line in printed.splitlines()) == len(BAD)  # listed under the table


def test_output_inside_input_is_not_scanned(tmp_path, ct_dir, tiny_model):
    cohort = tmp_path / "in"
    _copy(ct_dir / "abdomen_3mm_small.nii.gz", cohort / "a.nii.gz")
    _dicom_copy(ct_dir / "chest_2slice_dicom", cohort / "chest")
    out = cohort / "derived" / "seg"
    before = _sha_tree(cohort)
    for _ in range(2):  # the second run finds the first run's masks inside the input folder: they must be skipped
        assert _segment(cohort, out, tiny_model) == 0
        assert [r["case_id"] for r in _rows(out)] == ["a", "chest"]
    after = {k: v for k, v in _sha_tree(cohort).items() if not k.startswith("derived")}
    assert after == before
    # OUTPUT == INPUT is refused before anything is written
    assert _segment(cohort, cohort, tiny_model) == 2


# ---------------------------------------------------------------------------------------------------------------------
# 2./3. crash, kill, corruption and resume


def _build_three(root: Path, ct_dir: Path, hu: np.ndarray) -> Path:
    """Three small good cases of both kinds (processed in this order: a_first, b_crop, c_chest)."""
    _copy(ct_dir / "abdomen_3mm_small.nii.gz", root / "a first.nii.gz")
    src = nib.load(ct_dir / "abdomen_3mm_small.nii.gz")
    crop = np.ascontiguousarray(hu[10:110, 5:95, 3:27])
    _save(crop, root / "b crop.nii.gz", src.affine @ nib.affines.from_matvec(np.eye(3), [10, 5, 3]))
    _dicom_copy(ct_dir / "chest_2slice_dicom", root / "c chest")
    return root


@pytest.fixture(scope="module")
def three(tmp_path_factory, ct_dir, hu, tiny_model) -> tuple[Path, Path]:
    """The 3-case cohort and its uninterrupted outputs (reference for every resume test)."""
    base = tmp_path_factory.mktemp("three")
    cohort = _build_three(base / "cohort", ct_dir, hu)
    out_a = base / "out_a"
    assert _segment(cohort, out_a, tiny_model) == 0
    assert [r["case_id"] for r in _rows(out_a)] == ["a_first", "b_crop", "c_chest"]
    return cohort, out_a


def _interrupting_writer(case_id: str, name: str, exc: BaseException):
    """A ``write_nifti_atomic`` that writes part of ``case_id/name`` and then fails with ``exc``."""

    def write_nifti_atomic(image, path):
        path = Path(path)

        def write(tmp):
            if path.parent.name == case_id and path.name == name:
                with open(tmp, "wb") as f:
                    f.write(b"\x1f\x8b\x08\x00 half a file")
                raise exc
            nib.save(image, tmp)

        return atomic_write(path, write)

    return write_nifti_atomic


def _stats_mtimes(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/stats.json")}


def test_interrupted_run_resumes_to_identical_outputs(tmp_path, three, tiny_model, monkeypatch):
    cohort, out_a = three
    out_b = tmp_path / "out_b"
    with monkeypatch.context() as m:
        crash = _interrupting_writer("b_crop", "lung.nii.gz", KeyboardInterrupt())
        m.setattr(outputs_module, "write_nifti_atomic", crash)
        assert _segment(cohort, out_b, tiny_model) == 130  # Ctrl-C while writing the 2nd case's lung mask
    assert not _parts(out_b)
    assert [(r["case_id"], r["status"]) for r in _rows(out_b)] == [("a_first", "ok")]
    assert (out_b / "b_crop" / "infection.nii.gz").is_file()  # written before the interruption ...
    assert not (out_b / "b_crop" / "lung.nii.gz").exists() and not (out_b / "b_crop" / "stats.json").exists()
    first = _stats_mtimes(out_b)
    assert list(first) == ["a_first"]

    assert _segment(cohort, out_b, tiny_model, "--resume") == 0
    assert _stats_mtimes(out_b)["a_first"] == first["a_first"]  # skipped, not redone
    _assert_same_outputs(out_a, out_b)


KILLER = r"""
import sys, time
from pathlib import Path
import nibabel as nib
import infnet_monai.io.outputs as outputs
from infnet_monai.cli import main
from infnet_monai.utils.files import atomic_write

marker = Path(sys.argv[1])

def slow_writer(image, path):
    def write(tmp):
        nib.save(image, tmp)
        if path.parent.name == "b_crop" and path.name == "lung.nii.gz":
            marker.write_text("writing")  # the parent kills us now, with the temporary file on disk
            time.sleep(300)
    return atomic_write(path, write)

outputs.write_nifti_atomic = slow_writer
sys.exit(main(sys.argv[2:]))
"""


def test_killed_process_resumes_to_identical_outputs(tmp_path, three, tiny_model):
    cohort, out_a = three
    out_b = tmp_path / "out_b"
    marker = tmp_path / "marker"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", KILLER, str(marker), "segment", str(cohort), "-o", str(out_b)]
    cmd += ["--model", str(tiny_model), "--class-model", str(_TINY_HEAD[0]), "--device", "cpu", "-q"]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 240
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert marker.exists(), f"the run never reached the 2nd case (rc={proc.poll()}): {log.read_text()[-3000:]}"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
    assert (out_b / "a_first" / "stats.json").is_file() and not (out_b / "b_crop" / "stats.json").exists()
    assert [r["case_id"] for r in _rows(out_b)] == ["a_first"]  # the table is valid: it is replaced atomically
    assert _parts(out_b)  # SIGKILL leaves the temporary file: resume must not take it for an output
    first = _stats_mtimes(out_b)["a_first"]

    assert _segment(cohort, out_b, tiny_model, "--resume") == 0
    assert _stats_mtimes(out_b)["a_first"] == first
    assert not _parts(out_b)  # the dead run's temporary files are cleaned up
    _assert_same_outputs(out_a, out_b)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda d: _truncate(d / "infection.nii.gz"), id="infection-truncated"),
        pytest.param(lambda d: _truncate(d / "lung.nii.gz"), id="lung-truncated"),
        pytest.param(lambda d: (d / "lung.nii.gz").unlink(), id="lung-missing"),
        pytest.param(lambda d: _truncate(d / "stats.json"), id="stats-truncated"),
    ],
)
def test_resume_redoes_a_case_with_corrupt_outputs(tmp_path, three, tiny_model, corrupt):
    cohort, out_a = three
    out_c = tmp_path / "out_c"
    shutil.copytree(out_a, out_c)
    before = _stats_mtimes(out_c)
    corrupt(out_c / "b_crop")
    assert _segment(cohort, out_c, tiny_model, "--resume") == 0
    after = _stats_mtimes(out_c)
    assert after["a_first"] == before["a_first"] and after["c_chest"] == before["c_chest"]
    assert after["b_crop"] != before["b_crop"]  # redone
    _assert_same_outputs(out_a, out_c)


def test_resume_with_save_prob_redoes_cases_stored_without_the_probability(tmp_path, three, tiny_model):
    cohort, out_a = three
    out_d = tmp_path / "out_d"
    shutil.copytree(out_a, out_d)  # a run without --save-prob
    before = _stats_mtimes(out_d)
    assert _segment(cohort, out_d, tiny_model, "--resume", "--save-prob") == 0
    after = _stats_mtimes(out_d)
    assert all(after[c] != before[c] for c in before)  # every case redone, now with its probability
    for case in before:
        assert (out_d / case / "probability.nii.gz").is_file()
        for name in ("infection.nii.gz", "lung.nii.gz"):
            a, d = (np.asarray(nib.load(str(o / case / name)).dataobj) for o in (out_a, out_d))
            assert np.array_equal(a, d), (case, name)
    assert _segment(cohort, out_d, tiny_model, "--resume", "--save-prob") == 0
    assert _stats_mtimes(out_d) == after  # complete now: all skipped


# ---------------------------------------------------------------------------------------------------------------------
# 4. unwritable output, full disk


def test_unwritable_output_folder_is_a_usage_error(tmp_path, ct_dir, tiny_model, monkeypatch, capsys):
    src = _copy(ct_dir / "abdomen_3mm_small.nii.gz", tmp_path / "in" / "ct.nii.gz")
    # a path under a regular file: the folder cannot be created (root ignores permission bits, so no chmod here)
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    assert _segment(src, blocker / "out", tiny_model) == 2
    err = capsys.readouterr().err
    assert f"cannot write to output folder '{blocker / 'out'}'" in err and "Not a directory" in err
    assert _segment(src, blocker, tiny_model) == 2
    assert "exists and is not a folder" in capsys.readouterr().err

    # a folder that refuses new files
    out = tmp_path / "readonly"
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(out) in (Path(dir), *Path(dir).parents):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert _segment(src, out, tiny_model) == 2
    err = capsys.readouterr().err
    assert f"cannot write to output folder '{out}': Permission denied" in err
    assert list(out.iterdir()) == []


def _enospc_writer(image, path):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"\x1f\x8b\x08\x00 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    return atomic_write(path, write)


def test_full_disk_while_writing_masks(tmp_path, three, tiny_model, monkeypatch):
    cohort, _ = three
    out = tmp_path / "out"
    monkeypatch.setattr(outputs_module, "write_nifti_atomic", _enospc_writer)
    assert _segment(cohort, out, tiny_model) == 3  # the disk stops the run: the other cases are not tried on it
    (row,) = _rows(out)  # the case it stopped at has its row
    assert row["status"] == "error"
    assert "no space left on the device" in row["error"] and "--resume" in row["error"]
    assert not _parts(out)
    assert not (out / "a_first" / "stats.json").exists() and not (out / "a_first" / "infection.nii.gz").exists()


def test_full_disk_everywhere_is_reported_not_a_traceback(tmp_path, three, tiny_model, monkeypatch, capsys):
    cohort, _ = three
    out = tmp_path / "out"

    def full(path, write):  # every output write of the pipeline fails, burden.csv included
        return _enospc_writer(None, path)

    monkeypatch.setattr(outputs_module, "atomic_write", full)
    monkeypatch.setattr(outputs_module, "write_nifti_atomic", _enospc_writer)
    assert _segment(cohort / "a first.nii.gz", out, tiny_model) == 3  # the run could not go on (not "some cases failed")
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err
    assert not _parts(out)


@pytest.mark.parametrize("failing", ["segmentation.dcm", "measurements.dcm", "overview.png"])
def test_full_disk_during_the_dicom_outputs_stops_the_run_and_resume_makes_every_promised_file(
    tmp_path, tiny_model, monkeypatch, failing
):
    """A DICOM-SEG, SR or overview that the disk refuses is not a note on an ok case: the run stops (exit 3) without
    a stats.json for the case, and --resume on free space writes every promised file."""
    import infnet_monai.pipeline.writer as writer_module
    from infnet_monai.data.phantom import make_chest_phantom
    from infnet_monai.testing.dicom import write_dicom_series

    phantom = make_chest_phantom(shape=(48, 48, 16), spacing_mm=(7.0, 7.0, 10.0), seed=0)
    series = write_dicom_series(np.round(phantom.volume_hu).astype(np.int16), phantom.affine, tmp_path / "in" / "p1")
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {"segmentation.dcm": "write_dicom_seg", "measurements.dcm": "write_dicom_sr", "overview.png": "write_overview"}
    with monkeypatch.context() as m:
        m.setattr(writer_module, target[failing], full)
        assert _segment(series, out, tiny_model) == 3
    (row,) = _rows(out)
    assert row["status"] == "error" and "no space left on the device" in row["error"]
    case_dir = out / row["case_id"]
    assert not (case_dir / "stats.json").exists() and not _parts(out)

    assert _segment(series, out, tiny_model, "--resume") == 0
    (row,) = _rows(out)
    assert row["status"] == "ok"
    for name in ("infection.nii.gz", "lung.nii.gz", "lesions.csv", "segmentation.dcm", "measurements.dcm", "overview.png", "stats.json"):
        assert (case_dir / name).is_file(), name
    stamp = (case_dir / "stats.json").stat().st_mtime_ns
    (case_dir / "measurements.dcm").unlink()  # a promised file gone since: --resume redoes the case
    assert _segment(series, out, tiny_model, "--resume") == 0
    assert (case_dir / "measurements.dcm").is_file() and (case_dir / "stats.json").stat().st_mtime_ns != stamp


# ---------------------------------------------------------------------------------------------------------------------
# 5. unsafe or foreign checkpoints


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a checkpoint carrying code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_unsafe_and_foreign_checkpoints_are_refused(tmp_path, ct_dir, tiny_model, capsys):
    src = _copy(ct_dir / "abdomen_3mm_small.nii.gz", tmp_path / "ct.nii.gz")
    slices = tmp_path / "slices"
    slices.mkdir()
    Image.fromarray(np.full((40, 40), 100, np.uint8)).save(slices / "a.png")
    marker = tmp_path / "code ran"
    evil = tmp_path / "evil.pt"
    good = torch.load(tiny_model, map_location="cpu", weights_only=True)
    torch.save({**good, "payload": _Payload(marker)}, evil)
    plain = tmp_path / "state_dict.pt"
    torch.save(good["state_dict"], plain)

    for model, needle in ((evil, "weights_only=True"), (plain, "not an infnet-monai model checkpoint")):
        for argv in (
            ["segment", str(src), "-o", str(tmp_path / "seg"), "--model", str(model), "--device", "cpu", "-q"],
            ["predict-slices", str(slices), "-o", str(tmp_path / "pred"), "--model", str(model), "--device", "cpu"],
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert needle in err and model.name in err, err
    assert not marker.exists()  # the pickled code never ran
    assert not (tmp_path / "seg" / "burden.csv").exists() and not list((tmp_path / "pred").glob("*.png"))


# ---------------------------------------------------------------------------------------------------------------------
# 6./7. long scans, raw stored values


def test_max_slices_error_row_names_the_option(tmp_path, ct_dir, tiny_model):
    src = _copy(ct_dir / "abdomen_3mm_small.nii.gz", tmp_path / "in" / "long scan.nii.gz")
    out = tmp_path / "out"
    assert _segment(src.parent, out, tiny_model, "--max-slices", "20") == 1
    (row,) = _rows(out)
    assert row["status"] == "error"
    assert "long scan.nii.gz" in row["error"] and "limit of 20" in row["error"] and "--max-slices" in row["error"]
    assert not (out / row["case_id"]).exists()


def test_raw_stored_values_are_corrected_and_give_the_same_masks(tmp_path, ct_dir, hu, tiny_model, caplog):
    cohort = tmp_path / "in"
    src = _copy(ct_dir / "abdomen_3mm_small.nii.gz", cohort / "hu.nii.gz")
    raw = (np.maximum(hu, -1024) + 1024).astype(np.uint16)  # what a converter writes when it drops the intercept
    _save(raw, cohort / "raw.nii.gz", nib.load(src).affine)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="infnet_monai"):
        assert _segment(cohort, out, tiny_model) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warnings = [w for w in warnings if "raw.nii.gz" in w]
    assert any("subtracting 1024" in w for w in warnings), warnings
    assert not any("hu.nii.gz" in r.getMessage() and "subtracting" in r.getMessage() for r in caplog.records)
    rows = {r["case_id"]: r for r in _rows(out)}
    assert rows["raw"]["status"] == "ok"
    for key in ("lung_volume_ml", "infection_volume_ml", "lesion_count", "shape", "spacing_mm"):
        assert rows["raw"][key] == rows["hu"][key], key
    for name in ("infection.nii.gz", "lung.nii.gz"):
        a, b = nib.load(out / "hu" / name), nib.load(out / "raw" / name)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), name


# ---------------------------------------------------------------------------------------------------------------------
# 8. predict-slices with broken images


def test_predict_slices_reports_broken_images_by_name(tmp_path, data_dir, tiny_model, capsys):
    src = tmp_path / "slices é"
    src.mkdir()
    images = sorted((data_dir / "covid-semiseg" / "train" / "images").glob("*.jpg"))[:3]
    for i, p in enumerate(images):
        shutil.copyfile(p, src / f"{2 * i}_good.jpg")
    (src / "1_empty.png").touch()
    jpg = images[0].read_bytes()
    (src / "3_half.jpg").write_bytes(jpg[: len(jpg) // 2])
    out = tmp_path / "out"
    argv = ["predict-slices", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "-q"]
    code = main([*argv, "--batch-size", "8"])  # good and broken images in one batch
    assert code == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"written": 3, "failed": 2, "output_dir": str(out)}
    assert sorted(p.name for p in out.iterdir()) == ["0_good.png", "2_good.png", "4_good.png"]
    for i, p in enumerate(images):
        assert Image.open(out / f"{2 * i}_good.png").size == Image.open(p).size
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 2
    assert any("1_empty.png" in line and "not a readable image" in line for line in failed), failed
    assert any("3_half.jpg" in line and "not a readable image" in line for line in failed), failed
