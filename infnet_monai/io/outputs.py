"""Writing a case's outputs safely and recognising finished ones: atomic NIfTI / CSV / JSON writers, the reference
geometry of the outputs, stale temporary files, and the completeness check behind ``--resume``."""

from __future__ import annotations

import csv
import datetime
import gzip
import json
import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from infnet_monai.io.cases import CTCase
from infnet_monai.stats.burden import BURDEN_FIELDS
from infnet_monai.stats.zones import ZONE_COLUMNS
from infnet_monai.utils.arrays import fortran_order
from infnet_monai.utils.files import atomic_write

__all__ = [
    "STATS_FILE", "CSV_FILE", "INFECTION_FILE", "CLASSES_FILE", "LUNG_FILE", "PROBABILITY_FILE",
    "write_nifti_atomic", "write_text_atomic", "write_csv_atomic", "json_value", "case_fields", "reference_header",
    "like_reference", "write_case_volumes", "remove_stale_parts", "completed_row", "iso_date", "source_path_text",
]

logger = logging.getLogger(__name__)

STATS_FILE = "stats.json"
CSV_FILE = "burden.csv"
INFECTION_FILE = "infection.nii.gz"
CLASSES_FILE = "infection_classes.nii.gz"
LUNG_FILE = "lung.nii.gz"
PROBABILITY_FILE = "probability.nii.gz"


def write_nifti_atomic(image: nib.Nifti1Image, path: Path) -> Path:
    """``nib.save`` to a temporary file beside ``path``, then rename: readers never see a half-written file."""
    return atomic_write(path, lambda tmp: nib.save(image, tmp))


def write_text_atomic(text: str, path: Path) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def write_csv_atomic(rows: Sequence[dict], path: Path, fields: Sequence[str] = BURDEN_FIELDS) -> Path:
    """Write the cohort table (one row per case, columns ``fields``) atomically."""
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in fields})
    return write_text_atomic(buf.getvalue(), path)


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return ";".join(v)  # names, e.g. qc_flags ("" when none)
    if isinstance(v, (list, tuple)):
        return "x".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v


def json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; null means "not defined" (e.g. percent of an empty lung)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return json_value(float(v))
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    return v


def iso_date(value: str | None) -> str:
    """A DICOM date (``YYYYMMDD``) as ISO 8601 (``YYYY-MM-DD``), the one date format of every table; a value that is
    no valid date is kept as it is (``followup.csv`` notes it), an absent one is ``""``."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit():
        try:
            return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
        except ValueError:
            pass
    return text


def source_path_text(case: CTCase) -> str:
    """The case's input as an absolute path (not relative to wherever the run was started)."""
    return os.path.abspath(case.source_path)


def case_fields(case: CTCase) -> dict:
    return {
        "case_id": case.case_id,
        "source_path": source_path_text(case),
        "patient_id": case.patient_id or "",
        "study_date": iso_date(case.study_date),
        "series_instance_uid": case.series_instance_uid or "",
    }


def reference_header(case: CTCase, affine: np.ndarray | torch.Tensor) -> tuple[np.ndarray, nib.Nifti1Header | None]:
    """Affine and header the outputs must carry: the NIfTI input's own, or ``affine`` (the loaded DICOM series'
    voxel-to-RAS matrix)."""
    if case.kind == "nifti":
        src = nib.load(str(case.files[0]))
        return np.asarray(src.affine, dtype=np.float64), src.header
    affine = affine.cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    return np.asarray(affine, dtype=np.float64), None


def like_reference(array: np.ndarray, reference: tuple[np.ndarray, nib.Nifti1Header | None]) -> nib.Nifti1Image:
    affine, header = reference
    array = fortran_order(array, np.uint8)  # NIfTI's voxel order: nibabel then writes it as it is
    if header is None:
        img = nib.Nifti1Image(array, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    else:
        hdr = header.copy()
        if array.ndim != len(hdr.get_data_shape()):
            hdr.set_data_shape(array.shape)
        img = nib.Nifti1Image(array, affine, header=hdr)
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        if qform is not None:
            img.set_qform(qform, code=int(qcode))
        if sform is not None:
            img.set_sform(sform, code=int(scode))
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    return img


def write_case_volumes(
    case_dir: Path,
    reference: tuple[np.ndarray, nib.Nifti1Header | None],
    infection: np.ndarray,
    lung: np.ndarray,
    classes: np.ndarray | None = None,
    probability: np.ndarray | None = None,
) -> dict[str, str]:
    """Write a case's volumes on the input's grid (``reference`` from :func:`reference_header`), each atomically and
    in this order: ``infection.nii.gz``, ``lung.nii.gz``, ``infection_classes.nii.gz`` (with ``classes``) and
    ``probability.nii.gz`` (with ``probability``: uint8, scaled to 0-1 by its header); return the masks' path fields
    of the case's row."""
    masks = {"infection_mask_path": (infection, INFECTION_FILE), "lung_mask_path": (lung, LUNG_FILE)}
    if classes is not None:
        masks["infection_classes_path"] = (classes, CLASSES_FILE)
    paths = {}
    for field, (array, name) in masks.items():
        paths[field] = str(write_nifti_atomic(like_reference(array, reference), case_dir / name))
    if probability is not None:
        image = like_reference(np.round(probability * 255.0).astype(np.uint8), reference)
        image.header.set_slope_inter(1.0 / 255.0, 0.0)  # viewers show 0..1
        write_nifti_atomic(image, case_dir / PROBABILITY_FILE)
    return paths


def remove_stale_parts(folder: Path, names: Sequence[str]) -> None:
    """Delete temporary files that :func:`atomic_write` left for ``names`` when a run was killed (SIGKILL, power)."""
    for name in names:
        for stale in folder.glob(f".{name}.*.part*"):
            logger.debug("removing %s, left by an interrupted run", stale)
            stale.unlink(missing_ok=True)


def _check_complete(path: Path, image: nib.Nifti1Image) -> None:
    """Read ``path`` to its end: a truncated or corrupt gzip stream, or missing voxel data, raises."""
    expected = int(image.dataobj.offset) + int(np.prod(image.shape)) * image.get_data_dtype().itemsize
    size = 0
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        while chunk := f.read(1 << 22):  # bounded memory; gzip checks its CRC and length at the end
            size += len(chunk)
    if size < expected:
        raise ValueError(f"{path.name} holds {size} bytes of image data, {expected} expected")


def completed_row(
    case: CTCase, output_dir: Path, classes: bool = False, probability: bool = False, promised: Sequence[str] = ()
) -> dict | None:
    """The stored row of a finished case (status ``ok``, or ``no_lung``: read and segmented, without lung) whose
    outputs are complete and readable, else ``None`` (it will be redone).

    With ``classes``, a case stored without its GGO / consolidation map is redone too, with ``probability`` one
    stored without ``probability.nii.gz``, and one that lacks a file of ``promised`` (the DICOM-SEG, the SR, the lesion
    table, ...) unless its notes say why that file was not written (e.g. a source without the attributes a DICOM-SEG
    needs)."""
    case_dir = output_dir / case.case_id
    stats = case_dir / STATS_FILE
    if not stats.is_file():
        return None
    try:
        row = json.loads(stats.read_text(encoding="utf-8"))
        if row.get("status") not in ("ok", "no_lung") or row.get("source_path") not in (
            source_path_text(case), str(case.source_path)
        ):
            return None
        if classes and not row.get("infection_classes_path"):
            return None
        notes = " ".join(str(n) for n in row.get("notes") or ())
        for name in promised:
            if not (case_dir / name).is_file() and f"{name} not written" not in notes:
                logger.info("%s: %s missing; redoing the case", case.case_id, name)
                return None
        names = (INFECTION_FILE, LUNG_FILE) + ((CLASSES_FILE,) if row.get("infection_classes_path") else ())
        for name in names + ((PROBABILITY_FILE,) if probability else ()):
            img = nib.load(str(case_dir / name))
            if list(img.shape[:3]) != list(row.get("shape", [])):
                return None
            _check_complete(case_dir / name, img)  # a truncated file still has a readable header and first slices
    except (OSError, ValueError, json.JSONDecodeError, EOFError, zlib.error) as e:
        logger.warning("%s: stored outputs unreadable (%s); redoing the case", case.case_id, e)
        return None
    # JSON's null stands for the NaN of a percent of an empty lung; zone columns withheld on a cut scan stay empty
    kept = set(ZONE_COLUMNS) if row.get("zones_withheld") else set()
    return {k: (math.nan if v is None and k.endswith("_percent") and k not in kept else v) for k, v in row.items()}
