"""A case's files: :class:`CaseWriter` turns a :class:`~infnet_monai.pipeline.predictor.CaseResult` into
``OUTPUT/<case>/``.

The writer runs a list of outputs, each a small object with ``files`` (the names it writes), ``required`` and
``write(case, result, case_dir, row)``, and writes ``stats.json`` last: its presence marks the case complete (what
``--resume`` looks for). A required output that fails fails the case; an optional one (the overview picture, the
DICOM-SEG) gives a warning and a note in ``stats.json``, never a lost case. Further outputs (a DICOM SR, a lesion
table) plug in as more entries of the list.

Every file is written atomically (:mod:`infnet_monai.io.outputs`): a reader never sees half a file.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import nibabel as nib
import numpy as np

from infnet_monai.io.cases import CTCase, instance_numbers_by_z
from infnet_monai.io.dicom_seg import DICOM_SEG_FILE, read_source_headers, write_dicom_seg
from infnet_monai.io.dicom_sr import DICOM_SR_FILE, write_dicom_sr
from infnet_monai.io.outputs import (
    CLASSES_FILE,
    INFECTION_FILE,
    LUNG_FILE,
    PROBABILITY_FILE,
    STATS_FILE,
    json_value,
    reference_header,
    remove_stale_parts,
    write_case_volumes,
    write_text_atomic,
)
from infnet_monai.io.volume import CaseError, load_ct
from infnet_monai.pipeline.predictor import CaseResult
from infnet_monai.stats.anatomy import band_like_mask
from infnet_monai.stats.lesions import LESIONS_FILE, write_lesion_csv
from infnet_monai.visualize.overview import overview, write_overview
from infnet_monai.visualize.report import OVERVIEW_FILE

__all__ = [
    "CaseOutput", "CaseWriter", "MaskVolumes", "LesionTable", "DicomSegmentation", "DicomMeasurementReport",
    "OverviewPicture", "DISK_ERRNOS", "disk_error",
]

logger = logging.getLogger(__name__)

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})
"""Errors of the disk, not of the case (full, over quota, failing, file too large, read-only): they stop the run
(exit 3, ``--resume`` continues) instead of becoming a note on an optional output."""


def disk_error(e: BaseException) -> OSError | None:
    """The :class:`OSError` of :data:`DISK_ERRNOS` that ``e`` is or was raised from, else ``None``."""
    for _ in range(16):  # a chain of causes, never a cycle
        if e is None:
            break
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


class CaseOutput(Protocol):
    """One kind of file of a case."""

    files: tuple[str, ...]
    required: bool

    def write(self, case: CTCase, result: CaseResult, case_dir: Path, row: dict) -> None:
        """Write the files of ``result`` under ``case_dir``; add their path fields to ``row``."""


class MaskVolumes:
    """``infection.nii.gz``, ``lung.nii.gz``, ``infection_classes.nii.gz`` (with the class head) and, with
    ``save_probability``, ``probability.nii.gz``, with the input's geometry (the NIfTI input's own header, or the
    DICOM series' affine). Required."""

    files = (INFECTION_FILE, LUNG_FILE, CLASSES_FILE, PROBABILITY_FILE)
    required = True

    def write(self, case: CTCase, result: CaseResult, case_dir: Path, row: dict) -> None:
        reference = reference_header(case, result.affine)
        row.update(write_case_volumes(case_dir, reference, result.infection, result.lung, result.classes, result.probability))


class SourceHeaders:
    """The full headers of a DICOM case's source files (:func:`~infnet_monai.io.dicom_seg.read_source_headers`),
    read once for the DICOM-SEG and the SR of the same case: the last case's are kept, nothing more."""

    def __init__(self) -> None:
        self._files: tuple = ()
        self._headers: list = []

    def __call__(self, files) -> list:
        files = tuple(files)
        if files != self._files:
            self._files, self._headers = (), []  # a failed read leaves nothing stale behind
            self._headers = read_source_headers(files)
            self._files = files
        return self._headers


class DicomSegmentation:
    """``segmentation.dcm``: a DICOM-SEG referencing the source series, for DICOM inputs (a failure, e.g. on
    stripped headers, is a note)."""

    files = (DICOM_SEG_FILE,)
    required = False

    def __init__(self, software_version: str, headers: SourceHeaders | None = None) -> None:
        self.software_version = software_version
        self.headers = SourceHeaders() if headers is None else headers

    def write(self, case: CTCase, result: CaseResult, case_dir: Path, row: dict) -> None:
        if case.kind != "dicom":
            return
        affine = reference_header(case, result.affine)[0]
        path = write_dicom_seg(
            case_dir / DICOM_SEG_FILE, case.files, affine, result.lung, result.infection, result.classes,
            software_version=self.software_version, source_headers=self.headers(case.files),
        )
        row["dicom_seg_path"] = str(path)


class DicomMeasurementReport:
    """``measurements.dcm``: the burden as a DICOM SR (TID 1500) whose measurement groups reference the segments of
    ``segmentation.dcm``; for DICOM inputs whose DICOM-SEG was written (a failure is a note)."""

    files = (DICOM_SR_FILE,)
    required = False

    def __init__(self, software_version: str, model_name: str | None = None, headers: SourceHeaders | None = None) -> None:
        self.software_version = software_version
        self.model_name = model_name
        self.headers = SourceHeaders() if headers is None else headers

    def write(self, case: CTCase, result: CaseResult, case_dir: Path, row: dict) -> None:
        if case.kind != "dicom":
            return
        if not row.get("dicom_seg_path"):  # the SEG failed with its own note: this one gets a note too (--resume)
            raise RuntimeError(f"the {DICOM_SEG_FILE} it references was not written")
        path = write_dicom_sr(
            case_dir / DICOM_SR_FILE, row["dicom_seg_path"], case.files, row, self.software_version, self.model_name,
            source_headers=self.headers(case.files),
        )
        row["dicom_sr_path"] = str(path)


class LesionTable:
    """``lesions.csv``: one row per 3D lesion, largest first (:func:`~infnet_monai.stats.lesions.lesion_table`), with
    its volume, GGO / consolidation share, side, zone, position in patient coordinates (LPS mm), mean HU, largest
    axial diameter and peripheral share. Required: its volumes add up to the case's infection volume."""

    files = (LESIONS_FILE,)
    required = True

    def write(self, case: CTCase, result: CaseResult, case_dir: Path, row: dict) -> None:
        if result.lesions is None:
            return
        row["lesions_path"] = str(write_lesion_csv(result.lesions, case_dir / LESIONS_FILE))


class OverviewPicture:
    """``overview.png``: axial tiles from the lung apex to the base and coronal and sagittal views with the masks
    (and the nodule-like lesions kept out of the infection, when the result has them, and the band-like lesions when
    the row counts some, ``band_like_infection_ml``), titled with the case and the figures. Adds to the row where the
    axial tiles lie: ``overview_axial_z_mm`` (world z of each tile in mm, apex first, as printed on the tiles),
    ``lung_apex_z_mm`` and ``lung_base_z_mm`` (world z in mm of the lungs' top and bottom axial slices; ``None``
    without lung)."""

    files = (OVERVIEW_FILE,)
    required = False

    def __init__(self, software_version: str) -> None:
        self.software_version = software_version

    def write(self, case: CTCase, result: CaseResult, case_dir: Path, row: dict) -> None:
        numbers = instance_numbers_by_z(case) if case.kind == "dicom" else None
        affine = np.asarray(result.affine)
        band = None
        if float(row.get("band_like_infection_ml") or 0.0) > 0:  # only a flagged case pays for the outline
            band = band_like_mask(result.lung, result.infection, np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        picture = overview(
            result.image, result.lung, result.infection, affine, result.classes, row, case.case_id,
            self.software_version, numbers, nodules=getattr(result, "nodules", None), band_like=band,
        )
        write_overview(case_dir / OVERVIEW_FILE, picture.image)
        row.update(picture.row_fields())  # only once the picture is written: the row never names tiles not there

    def write_resumed(self, case: CTCase, case_dir: Path, row: dict) -> None:
        """The picture of a case completed by an earlier run that has none, from its stored masks."""
        if (case_dir / OVERVIEW_FILE).is_file():
            return
        try:
            image = load_ct(case)
            masks = []
            for name in (LUNG_FILE, INFECTION_FILE, CLASSES_FILE):
                path = case_dir / name
                masks.append(np.asarray(nib.load(str(path)).dataobj) if path.is_file() else None)
            affine = nib.load(str(case_dir / INFECTION_FILE)).affine
            result = CaseResult(row=row, infection=masks[1], lung=masks[0], classes=masks[2], image=image[0].numpy(), affine=affine)
            self.write(case, result, case_dir, row)
        except (OSError, ValueError, CaseError) as e:
            logger.warning("%s: overview picture not written: %s", case.case_id, e)


class CaseWriter:
    """Write one case's outputs, then ``stats.json``.

    Args:
        outputs: the case's outputs in writing order (default: :class:`MaskVolumes`, :class:`DicomSegmentation` and
            :class:`OverviewPicture`). ``probability.nii.gz`` is written when the result holds the probability (the
            runner asks the predictor for it with ``save_probability``).
    """

    def __init__(self, outputs: Sequence[CaseOutput]) -> None:
        self.outputs = list(outputs)
        if not any(isinstance(o, MaskVolumes) for o in self.outputs):
            raise ValueError("a CaseWriter needs MaskVolumes among its outputs (the masks are the result).")

    @classmethod
    def default(cls, software_version: str, *, overview: bool = True, dicom_seg: bool = True, dicom_sr: bool = True,
                model_name: str | None = None) -> "CaseWriter":
        """The standard outputs: masks, the lesion table, DICOM-SEG and DICOM SR (for DICOM inputs, unless
        ``dicom_seg`` / ``dicom_sr`` is off; the SR needs the SEG), the overview picture (unless ``overview`` is
        off)."""
        outputs: list[Any] = [MaskVolumes(), LesionTable()]
        if dicom_seg:
            headers = SourceHeaders()  # read once, for both
            outputs.append(DicomSegmentation(software_version, headers))
            if dicom_sr:
                outputs.append(DicomMeasurementReport(software_version, model_name, headers))
        if overview:
            outputs.append(OverviewPicture(software_version))
        return cls(outputs)

    @property
    def files(self) -> tuple[str, ...]:
        """Every name the outputs may write, ``stats.json`` last."""
        return tuple(name for o in self.outputs for name in o.files) + (STATS_FILE,)

    def promised(self, case: CTCase) -> tuple[str, ...]:
        """The files besides the masks that a finished ``case`` must hold (the DICOM objects for DICOM inputs only):
        ``--resume`` redoes a case that lacks one, unless its ``stats.json`` notes why it was not written. The
        overview picture is not among them: :meth:`write_resumed` makes it again from the stored masks."""
        dicom_only = (DicomSegmentation, DicomMeasurementReport)
        return tuple(
            name
            for o in self.outputs
            if not isinstance(o, (MaskVolumes, OverviewPicture))
            and (case.kind == "dicom" or not isinstance(o, dicom_only))
            for name in o.files
        )

    def write(
        self,
        case: CTCase,
        result: CaseResult,
        case_dir: Path,
        row: dict,
        started: float | None = None,
        before_stats: Callable[[dict], None] | None = None,
    ) -> dict:
        """Write ``result`` under ``case_dir`` and ``row`` (completed with the path fields, the notes of the
        optional outputs that failed and, from ``started`` (``time.time()``), the case's seconds) as ``stats.json``;
        return the row.

        An optional output that fails gives a note, except when the disk is full or failing (:func:`disk_error`):
        that stops the case like a failed mask, so a case is never finished without a file it promised.
        ``before_stats(row)`` is called once every other file is in place and before ``stats.json`` (the marker of a
        finished case) is published: the runner puts the row into ``burden.csv`` there, so that after a kill at any
        point the table lists every case that has a ``stats.json``."""
        case_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(case_dir, self.files)
        notes = row.setdefault("notes", [])
        seconds = row.setdefault("stage_seconds", {})
        for output in self.outputs:
            start = time.perf_counter()
            name = "/".join(output.files)
            try:
                output.write(case, result, case_dir, row)
            except Exception as e:  # noqa: BLE001 - an optional file must never cost the masks
                if output.required or disk_error(e):
                    raise
                logger.warning("%s: %s not written: %s", case.case_id, name, e)
                notes.append(f"{name} not written: {type(e).__name__}: {e}")
            finally:
                seconds[f"write {name}"] = round(time.perf_counter() - start, 3)
        if started is not None:
            row["seconds"] = round(time.time() - started, 2)
        if before_stats is not None:
            before_stats(row)
        write_text_atomic(json.dumps({k: json_value(v) for k, v in row.items()}, indent=2), case_dir / STATS_FILE)
        return row

    def write_resumed(self, case: CTCase, case_dir: Path, row: dict) -> None:
        """Outputs that a case completed by an earlier run lacks and can be made from its stored files (the
        overview picture)."""
        for output in self.outputs:
            if isinstance(output, OverviewPicture):
                output.write_resumed(case, case_dir, row)
