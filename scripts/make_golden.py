#!/usr/bin/env python
"""Golden outputs of the shipped models on a small real chest CT, for ``tests/pipeline/test_golden.py``. Prints JSON.

The scan is the 5 mm lung-cancer chest CT ``lung_pet_ct_dx_A0001_chest_5mm`` of the shared data (64 DICOM slices,
512 x 512, 0.84 mm), cut to :data:`CROP_FILES`: the 19 slices from 5 mm above the lung apices (z = -159 mm) down to
z = -249 mm, which hold the upper-lobe lesion that the shipped models find on the whole scan. The cut is a folder of
links to those 19 files (:func:`crop_case`), so nothing of the shared data is copied or rewritten, and the pipeline
reads the cut as it reads any DICOM series. The network sees each slice cropped to the lungs' box of the whole
volume, which is narrower on the cut than on the full scan, so the cut's infection differs from the same slices of
the full scan (90 mL against 51 mL on the commit the stored files came from); it is a different input, not a
different pipeline.

:func:`segment_crop` runs ``infnet-covid segment``'s defaults through :func:`infnet_monai.pipeline.segment_cohort`:
the shipped infection model and GGO / consolidation head, every option at its default except ``device="cpu"`` (the
numbers do not depend on a GPU's kernels) and no ``overview.png`` or DICOM-SEG (pictures and DICOM objects are not
compared). The test calls the same function on the current code and compares with the stored files.

Stored under ``--output``, in ``burden.json`` (no image data is committed): the signature of the pipeline's own
``infection.nii.gz``, ``lung.nii.gz`` and ``infection_classes.nii.gz`` of the cut (:func:`mask_signature`: shape,
affine, and per label the voxel count and the centroid of every axial slice), the burden row (every volume in mL, the
lesion counts) with its provenance (the crop, the commit and whether its tree had local edits, the SHA-256 of the two model files,
the versions of torch and MONAI).

Regenerate only from committed code, in a separate checkout, so that edits in progress do not leak into the stored
outputs (the shared tree's editable install points at the working tree; ``PYTHONPATH`` must put the checkout
first):

    git worktree add /tmp/golden_head HEAD
    PYTHONPATH=/tmp/golden_head python scripts/make_golden.py --output tests/data/golden
    git worktree remove --force /tmp/golden_head
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCAN = "lung_pet_ct_dx_A0001_chest_5mm"
"""The scan's folder under ``<shared data>/ct``."""
CROP_FILES: tuple[str, ...] = tuple(f"1-{i:02d}.dcm" for i in range(8, 27))
"""The 19 DICOM files of the cut (``1-08.dcm``, 5 mm above the lung apices, to ``1-26.dcm``, 90 mm lower)."""
CASE_ID = "lung_pet_ct_dx_A0001_apex19"
"""The cut's case id (its folder's name)."""
MASK_FILES: dict[str, tuple[int, ...]] = {"infection.nii.gz": (1,), "lung.nii.gz": (1, 2), "infection_classes.nii.gz": (1, 2)}
"""The pipeline's mask files whose signatures are stored and compared, with their labels."""
BURDEN_FILE = "burden.json"
"""The stored burden row and its provenance."""
OPTIONS: dict[str, Any] = {"device": "cpu", "overview": False, "dicom_seg": False}
"""The options given to :func:`segment_cohort`; everything else is ``infnet-covid segment``'s default."""
VOLATILE_KEYS = frozenset({"seconds", "stage_seconds", "source_path", "model", "class_model", "rank", "world_size", "notes", "error"})
"""Row fields that depend on the machine or the paths, not on the results; left out of ``burden.json``."""

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$INFNET_SHARED_DATA``, else ``../shared/data`` beside this repository (as ``tests/conftest.py``)."""
    env = os.environ.get("INFNET_SHARED_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def crop_case(data_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A folder ``dest/<CASE_ID>`` of links to the :data:`CROP_FILES` of the scan (copies where links fail).

    Raises:
        FileNotFoundError: a file of the cut is missing from the shared data (the message names it).
    """
    src = Path(data_dir) / "ct" / SCAN
    missing = [name for name in CROP_FILES if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the golden scan's files {missing} are missing from '{src}'; point INFNET_SHARED_DATA at the shared data."
        )
    folder = Path(dest) / CASE_ID
    folder.mkdir(parents=True, exist_ok=True)
    for name in CROP_FILES:
        target = folder / name
        try:
            os.symlink((src / name).resolve(), target)
        except OSError:  # e.g. a file system without links
            shutil.copyfile(src / name, target)
    return folder


def segment_crop(data_dir: str | os.PathLike, work_dir: str | os.PathLike) -> tuple[dict, Path]:
    """Run the pipeline with :data:`OPTIONS` on the cut (made under ``work_dir``).

    Returns:
        ``(row, case_dir)``: the case's burden row as the Python API returns it and the folder of its output files.

    Raises:
        RuntimeError: the case failed (the message is the pipeline's).
    """
    from infnet_monai.pipeline import segment_cohort

    work_dir = Path(work_dir)
    case = crop_case(data_dir, work_dir / "input")
    report = segment_cohort(case, work_dir / "output", **OPTIONS)
    row = report.rows[0]
    if row.get("status") != "ok":
        raise RuntimeError(f"the golden case failed: {row.get('error')}")
    return row, work_dir / "output" / CASE_ID


def stored_row(row: dict) -> dict:
    """``row`` without :data:`VOLATILE_KEYS` and the output paths, as JSON values."""
    from infnet_monai.io.outputs import json_value

    return {k: json_value(v) for k, v in row.items() if k not in VOLATILE_KEYS and not k.endswith("_path")}


def mask_signature(path: str | os.PathLike, labels: tuple[int, ...]) -> dict:
    """``shape``, ``affine`` and, per label, ``counts`` (voxels on each axial slice) and ``centroids`` (the in-plane
    voxel centroid ``[i, j]`` of each slice, ``None`` where empty) of a mask file."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    out: dict[str, Any] = {"shape": list(data.shape), "affine": np.round(image.affine, 6).tolist(), "labels": {}}
    i, j = np.meshgrid(np.arange(data.shape[0]), np.arange(data.shape[1]), indexing="ij")
    for label in labels:
        mask = data == label
        counts = mask.sum(axis=(0, 1))
        centroids = [
            [round(float(i[mask[..., k]].mean()), 3), round(float(j[mask[..., k]].mean()), 3)] if counts[k] else None
            for k in range(data.shape[2])
        ]
        out["labels"][str(label)] = {"counts": [int(c) for c in counts], "centroids": centroids}
    return out


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_model_hashes() -> dict[str, str]:
    """SHA-256 of the infection model and the GGO / consolidation head that the defaults load."""
    from infnet_monai.utils.model_path import default_class_model_path, default_model_path

    return {"model": sha256(default_model_path()), "class_model": sha256(default_class_model_path())}


def _git(package_root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(package_root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance() -> dict:
    """The code, models and libraries that produce the outputs."""
    import monai
    import torch

    import infnet_monai

    root = Path(infnet_monai.__file__).resolve().parents[1]
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "package": str(Path(infnet_monai.__file__).resolve().parent),
        "version": infnet_monai.__version__,
        "commit": _git(root, "rev-parse", "HEAD"),
        "local_edits": None if status is None else bool(status),
        "model_sha256": shipped_model_hashes(),
        "torch": torch.__version__,
        "monai": monai.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "tests" / "data" / "golden", help="output folder")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the shared data (default $INFNET_SHARED_DATA or ../shared/data)"
    )
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        row, case_dir = segment_crop(data_dir, tmp)
        seconds = time.perf_counter() - start
        args.output.mkdir(parents=True, exist_ok=True)
        masks = {name: mask_signature(case_dir / name, labels) for name, labels in MASK_FILES.items()}
    record = {
        "scan": f"ct/{SCAN}",
        "crop_files": list(CROP_FILES),
        "case_id": CASE_ID,
        "options": OPTIONS,
        "regenerate": "scripts/make_golden.py (see its docstring: from a clean checkout of the commit)",
        "provenance": provenance(),
        "row": stored_row(row),
        "masks": masks,
    }
    (args.output / BURDEN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    files = {BURDEN_FILE: (args.output / BURDEN_FILE).stat().st_size}
    summary = {
        "output": str(args.output),
        "files_bytes": files,
        "total_bytes": sum(files.values()),
        "seconds": round(seconds, 2),
        "package": record["provenance"]["package"],
        "commit": record["provenance"]["commit"],
        "local_edits": record["provenance"]["local_edits"],
        "infection_volume_ml": row.get("infection_volume_ml"),
        "lesion_count": row.get("lesion_count"),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
