"""Finding the CT cases of a cohort: NIfTI files and DICOM series folders.

:func:`discover_cases` turns an input path into a sorted list of :class:`CTCase` records, one per case:

- a single ``.nii`` / ``.nii.gz`` file is one case;
- a folder that directly contains DICOM files (with or without a ``.dcm`` extension) is one case; when it holds
  several series the axial CT series with the most slices is chosen, the others are listed in ``CTCase.notes``;
- a cohort folder is scanned recursively (symlinks followed, loops avoided) and yields every NIfTI file and every
  DICOM folder found at any depth.

Hidden files and folders (name starting with ``.``), ``__MACOSX`` folders, ``DICOMDIR`` index files and files with
a known non-image extension (``.json``, ``.csv``, ``.txt``, ...) are ignored. DICOM files that are no part of a CT
volume are passed over with their reason (``skipped``): localizers (ImageType LOCALIZER, SCOUT, TOPOGRAM), secondary
captures and screenshots, radiation dose reports and other objects without an image. Only CT is taken: without a
``Modality`` tag the SOP class tells the modality (an MR image is not CT). A derived series (ImageType DERIVED: a
reformat, MIP, slab average) is chosen only when the folder holds no original one; a ``BodyPartExamined`` other than
the chest (:data:`CHEST_BODY_PARTS`) becomes a note. Folders passed in ``exclude`` (for
example the pipeline's output folder when it lies inside the input folder) are never scanned.

Case ids are made from the path relative to the scanned folder (parts joined with ``_``) and are safe to use as
file names; see :func:`sanitize_case_id`.

Nothing here reads pixel data: only DICOM headers (``stop_before_pixels``), so discovery is cheap; a deflated header
is inflated within a bound (:func:`infnet_monai.io.budget.read_dicom`), never whole. Pixel data and
geometry are checked when a case is loaded (:func:`infnet_monai.io.volume.load_ct`), from the header fields that
discovery read: each file's header is parsed once per run (:class:`SliceHeader`, carried in ``CTCase.headers``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from infnet_monai.io.budget import InflateLimitError, read_dicom, whole_number

__all__ = [
    "CTCase",
    "HeaderError",
    "SliceHeader",
    "discover_cases",
    "sanitize_case_id",
    "read_dicom_header",
    "read_slice_header",
    "field_value",
    "pixel_data_fields",
    "current_headers",
    "has_dicm_marker",
    "instance_numbers_by_z",
    "is_nifti_path",
    "CT_SOP_CLASS_UIDS",
    "MAX_CASE_ID_LENGTH",
    "modality_from_sop_class",
]

logger = logging.getLogger(__name__)

MAX_CASE_ID_LENGTH = 100
"""Longest case id returned by :func:`sanitize_case_id` (characters)."""

CT_SOP_CLASS_UIDS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)
"""SOP classes that identify a CT image when the ``Modality`` tag is missing (stripped headers)."""
_SOP_CLASS_MODALITIES = (
    ("1.2.840.10008.5.1.4.1.1.2", "CT"),  # CT, Enhanced CT (.2.1), Legacy Converted Enhanced CT (.2.2)
    ("1.2.840.10008.5.1.4.1.1.4", "MR"),  # MR, Enhanced MR (.4.1), MR Spectroscopy (.4.2), ... (.4.x)
    ("1.2.840.10008.5.1.4.1.1.128", "PT"),  # PET, Legacy Converted Enhanced PET (.128.1)
    ("1.2.840.10008.5.1.4.1.1.130", "PT"),  # Enhanced PET
    ("1.2.840.10008.5.1.4.1.1.20", "NM"),
    ("1.2.840.10008.5.1.4.1.1.6", "US"),  # US (.6.1), Enhanced US Volume (.6.2), ...
    ("1.2.840.10008.5.1.4.1.1.3.1", "US"),  # US Multi-frame
    ("1.2.840.10008.5.1.4.1.1.1", "CR"),  # CR; DX (.1.1), MG (.1.2), IO (.1.3): projection X-ray
    ("1.2.840.10008.5.1.4.1.1.12", "XA"),  # XA, XRF, ... (.12.x)
    ("1.2.840.10008.5.1.4.1.1.13", "XA"),  # X-Ray 3D angiography, breast tomosynthesis (.13.x)
    ("1.2.840.10008.5.1.4.1.1.7", "OT"),  # Secondary Capture (.7, .7.x)
    ("1.2.840.10008.5.1.4.1.1.481", "RT"),  # RT objects (.481.x)
    ("1.2.840.10008.5.1.4.1.1.66", "SEG"),  # raw data, registration, Segmentation (.66.4), ...
    ("1.2.840.10008.5.1.4.1.1.88", "SR"),  # structured reports, radiation dose reports (.88.x)
)
_SECONDARY_CAPTURE_UID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage and its multi-frame kinds
_LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})  # ImageType values of a planning projection
_SCREEN_TYPES = frozenset({"SCREEN SAVE"})  # ImageType value of a screenshot (e.g. a dose page)
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "TORSO", "TRUNK", "BODY")
"""Words of a ``BodyPartExamined`` value that cover the lungs (``CHEST_ABDOMEN``, ``WHOLEBODY``, ``PARTIALBODY`` ...);
a value with none of them (``HEAD``, ``ABDOMEN``, ``PELVIS``, ``KNEE``, ...) becomes a note on the case."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_IGNORED_SUFFIXES = frozenset(
    {
        ".json", ".csv", ".tsv", ".txt", ".md", ".rst", ".log", ".xml", ".html", ".htm", ".pdf", ".yaml", ".yml",
        ".ini", ".cfg", ".toml", ".py", ".sh", ".bat", ".exe", ".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z",
        ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".svg", ".npy", ".npz", ".pt", ".pth", ".ckpt",
        ".h5", ".hdf5", ".pkl", ".mha", ".mhd", ".nrrd", ".raw", ".img", ".hdr", ".xls", ".xlsx", ".doc", ".docx",
        ".db", ".sqlite", ".lock", ".tmp",
    }
)  # fmt: skip
_IGNORED_NAMES = frozenset(
    {"dicomdir", "__macosx", "thumbs.db", "desktop.ini", "readme", "license", "licence", "copying", "notice", "authors",
     "changelog", "changes", "makefile"}
)  # fmt: skip
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
_AXIAL_MIN_NZ = 0.9  # |z component| of the slice normal above which a series counts as axial
_POSITION_DECIMALS = 3  # slice positions are compared at 1 um


@dataclass(frozen=True)
class HeaderError:
    """The exception that reading one header field raised at discovery; the loader raises it where it uses the field,
    as reading the field from the dataset there would."""

    error: Exception


def field_value(value: Any) -> Any:
    """``value``, or, for a :class:`HeaderError`, raise the exception it holds."""
    if isinstance(value, HeaderError):
        raise value.error
    return value


@dataclass(frozen=True)
class SliceHeader:
    """The header fields of one DICOM image that :func:`infnet_monai.io.volume.load_ct` checks, read once at discovery.

    Each field holds what the loader's own expression gives on the parsed dataset (see :func:`read_slice_header`), or a
    :class:`HeaderError` with the exception that expression raised; :meth:`field` returns the value or raises it.

    Attributes:
        path: the file.
        stamp: ``(size in bytes, modification time in ns)`` of the file when its header was read; the loader reads
            the header again when the file no longer has this stamp.
        pixel_offset: byte offset of the pixel data element when the header (of a DICOM Part 10 file) was read up to
            it, else ``None``; the loader then parses only the pixel data, not the header again.
        encoding: ``(implicit VR, little endian)`` the dataset was parsed with (``None`` if unknown).
        rows: ``Rows``.
        columns: ``Columns``.
        frames: ``NumberOfFrames`` as an int (1 when absent or not a number).
        orientation: ``ImageOrientationPatient`` values as floats.
        position: ``ImagePositionPatient`` values as floats.
        pixel_spacing: ``PixelSpacing`` values as floats.
        gantry_tilt: ``GantryDetectorTilt`` as text (``"None"`` when absent).
        modality: ``Modality`` stripped and upper-cased, ``None`` when absent or empty.
        sop_class_uid: ``SOPClassUID`` stripped (``""`` when absent).
        patient_id: ``PatientID`` stripped, ``None`` when absent or empty.
        series_instance_uid: ``SeriesInstanceUID`` stripped, ``None`` when absent or empty.
        has_rescale_intercept: whether ``RescaleIntercept`` is present.
        rescale: ``"RescaleSlope <value>, RescaleIntercept <value>"`` (``absent`` for a missing tag).
        transfer_syntax: the file meta's ``TransferSyntaxUID`` (implicit VR little endian when absent).
        pixel_format: ``(Rows, Columns, BitsAllocated, SamplesPerPixel, BitsStored, NumberOfFrames)`` as ints.
        photometric: ``PhotometricInterpretation`` stripped and upper-cased (``MONOCHROME2`` when absent).
        instance: ``(z of ImagePositionPatient in mm, InstanceNumber)``, ``None`` when either is missing or invalid.
    """

    path: Path
    stamp: tuple[int, int]
    pixel_offset: int | None
    encoding: tuple[bool, bool] | None
    rows: int
    columns: int
    frames: int | HeaderError
    orientation: tuple[float, ...] | HeaderError
    position: tuple[float, ...] | HeaderError
    pixel_spacing: tuple[float, ...] | HeaderError
    gantry_tilt: str | HeaderError
    modality: str | None | HeaderError
    sop_class_uid: str | HeaderError
    patient_id: str | None | HeaderError
    series_instance_uid: str | None | HeaderError
    has_rescale_intercept: bool
    rescale: str | HeaderError
    transfer_syntax: str | HeaderError
    pixel_format: tuple[int, int, int, int, int, int] | HeaderError
    photometric: str | HeaderError
    instance: tuple[float, int] | None | HeaderError

    def field(self, name: str) -> Any:
        """The value of field ``name``; raises the exception that reading it raised, if any."""
        return field_value(getattr(self, name))

    def is_current(self) -> bool:
        """Whether the file still has the size and modification time it had when its header was read."""
        return _file_stamp(self.path) == self.stamp


@dataclass
class CTCase:
    """One CT case found by :func:`discover_cases`.

    Attributes:
        case_id: unique, file-name safe identifier (see :func:`sanitize_case_id`).
        source_path: the NIfTI file, or the folder holding the DICOM series.
        kind: ``"nifti"`` or ``"dicom"``.
        files: the NIfTI file, or the DICOM files of the chosen series sorted by position along the slice normal
            (ascending, i.e. inferior to superior for a usual axial series). Empty when ``error`` is set.
        patient_id: DICOM ``PatientID`` as stored (``None`` if absent or empty, always ``None`` for NIfTI). It is
            untrusted text: never build a path from it without :func:`sanitize_case_id`.
        series_instance_uid: DICOM ``SeriesInstanceUID`` of the chosen series (``None`` if absent/empty or NIfTI).
        notes: human-readable remarks, e.g. alternative series that were ignored.
        dropped: files of the folder left out of the chosen series, each ``"name: reason"`` (unreadable, empty, or
            of another series, size or orientation); a case that then fails names them, since a dropped slice
            is the likely cause of a gap.
        study_date: DICOM ``StudyDate`` (``YYYYMMDD``) of the chosen series, ``None`` if absent or NIfTI; orders a
            patient's scans for the follow-up table.
        error: why the case cannot be loaded (e.g. a folder with only MR series), else ``None``. A cohort runner
            reports it; :func:`infnet_monai.io.volume.load_ct` raises ``CaseError`` with it.
        headers: for a DICOM case from :func:`discover_cases`, the header fields of each file of ``files`` (same
            order) that discovery read, so that the loader does not parse the headers again; empty otherwise (the
            loader then reads them). Not part of the case's equality or repr.
    """

    case_id: str
    source_path: Path
    kind: str
    files: tuple[Path, ...]
    patient_id: str | None = None
    series_instance_uid: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None
    dropped: tuple[str, ...] = field(default_factory=tuple)
    study_date: str | None = None
    headers: tuple[SliceHeader, ...] = field(default_factory=tuple, repr=False, compare=False)


def sanitize_case_id(name: str) -> str:
    """Make ``name`` safe to use as a case id and as a file or folder name on any platform.

    Accents are transliterated to ASCII where Unicode allows it (``"Müller"`` -> ``"Muller"``), every character
    outside ``[A-Za-z0-9._-]`` becomes ``_``, leading dots are removed (no hidden names, never ``.`` or ``..``),
    Windows device names get a ``_`` prefix, and the result is cut to :data:`MAX_CASE_ID_LENGTH` characters.

    Args:
        name: any text, e.g. a file name, a relative path or a DICOM PatientID such as ``"../../x"``.

    Returns:
        a non-empty id matching ``[A-Za-z0-9_-][A-Za-z0-9._-]*`` (``"case"`` when nothing usable remains).
    """
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    text = text.lstrip(".")
    if text.split(".")[0].lower() in _WINDOWS_RESERVED:
        text = "_" + text
    text = text[:MAX_CASE_ID_LENGTH]
    return text or "case"


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a NIfTI extension (``.nii`` or ``.nii.gz``, any case)."""
    return Path(path).name.lower().endswith(_NIFTI_SUFFIXES)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_dicom_header(path: str | os.PathLike) -> Dataset | None:
    """Read the header of ``path`` if it is a DICOM image file, else return ``None``.

    A file with the ``DICM`` marker after its 128-byte preamble is parsed with
    ``pydicom.dcmread(stop_before_pixels=True)``. Files without the marker (headerless / ACR-NEMA style) are parsed
    with ``force=True`` as a fallback and accepted only when they hold ``PixelData``, ``Rows`` and ``Columns``.
    Files that are DICOM but not images (``DICOMDIR``, structured reports, ...) give ``None``.

    Args:
        path: file to probe.

    Returns:
        the dataset without pixel data (with deferred pixel data for headerless files), or ``None``.
    """
    return _read_dicom_header(Path(path))[0]


def read_slice_header(path: str | os.PathLike) -> SliceHeader | None:
    """Read the header fields that the loader checks of ``path`` (see :class:`SliceHeader`), parsing the header once.

    Args:
        path: file to probe.

    Returns:
        the fields, or ``None`` when ``path`` is not a DICOM image (as for :func:`read_dicom_header`).
    """
    path = Path(path)
    ds, _, stamp, offset = _read_dicom_header(path)
    return None if ds is None or stamp is None else _slice_header(path, ds, stamp, offset)


_PIXEL_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)  # (float, double float) pixel data, where stop_before_pixels stops


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """``(size, modification time in ns)`` of ``path``, ``None`` when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_dicom_header(path: Path) -> tuple[Dataset | None, str, tuple[int, int] | None, int | None]:
    """:func:`read_dicom_header` with the reason a file is not taken (``""`` when it is), the file's stamp taken
    before it was read (see :attr:`SliceHeader.stamp`) and the offset of its pixel data element (Part 10 files whose
    header read stopped there, else ``None``)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(132)
    except OSError as e:
        logger.warning("%s: cannot be read (%s); skipped.", path, e)
        return None, f"cannot be read ({e.strerror or e})", None, None
    stamp = (st.st_size, st.st_mtime_ns)
    if len(head) == 0:
        return None, "empty file (0 bytes)", stamp, None
    if len(head) < 132:
        return None, f"{len(head)} bytes, too short for DICOM", stamp, None
    offset = None
    try:
        if head[128:132] == b"DICM":
            with open(path, "rb") as f:
                ds = read_dicom(f, stop_before_pixels=True)  # a deflated header is inflated within a bound
                offset = f.tell()
                tag = f.read(4)
            if len(tag) < 4 or not any(tag in (_tag_bytes(t, "<"), _tag_bytes(t, ">")) for t in _PIXEL_TAGS):
                offset = None  # the header ended elsewhere (no pixel data): the loader reads the whole file
        else:
            ds = read_dicom(path, force=True, defer_size="1 KB")
            if "PixelData" not in ds:
                return None, "not a DICOM image (no DICM marker, no pixel data)", stamp, None
    except InflateLimitError as e:
        logger.warning("%s: %s.", path, e)
        return None, f"{e}; not read", stamp, None
    except Exception as e:  # InvalidDicomError, OSError, ...; pydicom may raise anything on random bytes
        logger.debug("%s: not readable as DICOM (%s: %s).", path, type(e).__name__, e)
        return None, f"not readable as DICOM ({type(e).__name__})", stamp, None
    try:  # an image has a positive size; a forced parse of garbage can also fail lazily here
        if int(ds.Rows) < 1 or int(ds.Columns) < 1:
            return None, "DICOM without an image (Rows or Columns 0)", stamp, None
    except Exception:
        return None, _not_an_image(ds) or "DICOM without an image (no Rows or Columns)", stamp, None
    return ds, "", stamp, offset


class _PassOver(str):
    """The reason a valid DICOM file is passed over at discovery (a dose report, a localizer, a screenshot): not a
    damaged file, so it does not make its folder a case that failed."""


def _not_an_image(ds: Dataset) -> _PassOver | None:
    """Why ``ds``, a DICOM object without Rows or Columns, is not an image by design: its SOP class is a registered
    one that holds no image (a radiation dose report or another structured report, a PDF, a presentation state, ...);
    ``None`` for an unknown SOP class (the file is then taken as a damaged image)."""
    uid = _text(ds, "SOPClassUID")
    if not uid:
        return None
    name = UID(uid).name
    if name == uid or "Image" in name:
        return None
    if "Dose" in name:
        return _PassOver(f"a radiation dose report ({name}), not an image")
    return _PassOver(f"not an image: a {name} object")


def _not_a_ct_volume(ds: Dataset) -> _PassOver | None:
    """Why the image ``ds`` is passed over at discovery: a localizer (scout, topogram), a secondary capture (e.g. a
    dose page) or a screenshot is never part of a CT volume; ``None`` for other images."""
    uid = _text(ds, "SOPClassUID") or ""
    image_type = _image_type(ds)
    shown = _joined(image_type)
    if _LOCALIZER_TYPES & set(image_type):
        return _PassOver(f"a localizer (ImageType {shown}), not a CT volume")
    if uid == _SECONDARY_CAPTURE_UID or uid.startswith(_SECONDARY_CAPTURE_UID + "."):
        return _PassOver(f"a secondary capture ({UID(uid).name}, e.g. a screenshot or a dose page), not a CT volume")
    if _SCREEN_TYPES & set(image_type):
        return _PassOver(f"a screenshot (ImageType {shown}), not a CT volume")
    return None


def _image_type(ds: Dataset) -> tuple[str, ...]:
    """The values of ``ImageType``, stripped and upper-cased (empty when absent or unreadable)."""
    try:
        value = ds.get("ImageType", None)
        if value is None:
            return ()
        values = [value] if isinstance(value, (str, bytes)) else list(value)
        return tuple(str(v).strip().upper() for v in values)
    except Exception:  # noqa: BLE001 - a damaged value: no type known
        return ()


def _joined(values: Sequence[str]) -> str:
    """Multiple values as DICOM writes them, separated by backslashes."""
    return "\\".join(values)


def modality_from_sop_class(uid: str | None) -> str | None:
    """The modality a ``SOPClassUID`` stands for (``"CT"``, ``"MR"``, ``"PT"``, ``"SR"``, ...), ``None`` when it is
    empty or not a known storage class; used where the ``Modality`` tag is missing."""
    uid = (uid or "").strip()
    for prefix, modality in _SOP_CLASS_MODALITIES:
        if uid == prefix or uid.startswith(prefix + "."):
            return modality
    return None


def _tag_bytes(tag: int, endian: str) -> bytes:
    return struct.pack(f"{endian}HH", tag >> 16, tag & 0xFFFF)


def _capture(read: Callable[[], Any]) -> Any:
    """``read()``, or a :class:`HeaderError` holding what it raised."""
    try:
        return read()
    except Exception as e:  # noqa: BLE001 - raised again where the loader uses the field
        return HeaderError(e)


def _frames(ds: Dataset) -> int:
    frames = ds.get("NumberOfFrames", 1)
    try:
        return int(frames or 1)
    except (TypeError, ValueError):
        return 1


def _pixel_format(ds: Dataset) -> tuple[int, int, int, int, int, int]:
    rows, cols = int(ds.Rows), int(ds.Columns)
    bits, samples = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("SamplesPerPixel", 1) or 1)
    stored = int(ds.get("BitsStored", bits) or bits)
    frames = whole_number(ds.get("NumberOfFrames", 1) or 1, "NumberOfFrames")  # "2.5" refused, not truncated to 2
    return rows, cols, bits, samples, stored, frames


def _instance(ds: Dataset) -> tuple[float, int] | None:
    position, number = _floats(ds, "ImagePositionPatient", 3), ds.get("InstanceNumber")
    if position is None or number is None:
        return None
    try:
        return round(float(position[2]), 1), int(number)
    except (TypeError, ValueError):
        return None


def _parsed_encoding(ds: Dataset) -> tuple[bool, bool] | None:
    """``(implicit VR, little endian)`` the elements of ``ds`` were parsed with (pydicom may have switched from what
    the transfer syntax says), from an element not yet converted; ``None`` when all were."""
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            return bool(elem.is_implicit_VR), bool(elem.is_little_endian)
    return None


def _optional_text(ds: Dataset, keyword: str) -> str | None:
    return str(ds.get(keyword, "") or "").strip() or None


def _slice_header(path: Path, ds: Dataset, stamp: tuple[int, int], pixel_offset: int | None) -> SliceHeader:
    """The :class:`SliceHeader` of ``ds``, each field from the expression the loader used on the dataset."""
    encoding = _parsed_encoding(ds)
    transfer_syntax, pixel_format, photometric = pixel_data_fields(ds)
    return SliceHeader(
        path=path,
        stamp=stamp,
        pixel_offset=pixel_offset if encoding is not None else None,
        encoding=encoding,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=_capture(lambda: _frames(ds)),
        orientation=_capture(lambda: tuple(float(v) for v in ds["ImageOrientationPatient"].value)),
        position=_capture(lambda: tuple(float(v) for v in ds["ImagePositionPatient"].value)),
        pixel_spacing=_capture(lambda: tuple(float(v) for v in ds["PixelSpacing"].value)),
        gantry_tilt=_capture(lambda: f"{ds.get('GantryDetectorTilt', None)}"),
        modality=_capture(lambda: str(ds.get("Modality", "") or "").strip().upper() or None),
        sop_class_uid=_capture(lambda: str(ds.get("SOPClassUID", "")).strip()),
        patient_id=_capture(lambda: _optional_text(ds, "PatientID")),
        series_instance_uid=_capture(lambda: _optional_text(ds, "SeriesInstanceUID")),
        has_rescale_intercept="RescaleIntercept" in ds,
        rescale=_capture(
            lambda: f"RescaleSlope {ds.get('RescaleSlope', 'absent')}, "
            f"RescaleIntercept {ds.get('RescaleIntercept', 'absent')}"
        ),
        transfer_syntax=transfer_syntax,
        pixel_format=pixel_format,
        photometric=photometric,
        instance=_capture(lambda: _instance(ds)),
    )


def pixel_data_fields(ds: Dataset) -> tuple[Any, Any, Any]:
    """The fields of :class:`SliceHeader` that describe the pixel data, ``(transfer_syntax, pixel_format,
    photometric)``, of a dataset (each value or :class:`HeaderError`)."""
    meta = getattr(ds, "file_meta", None)
    return (
        _capture(lambda: str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or "1.2.840.10008.1.2"),
        _capture(lambda: _pixel_format(ds)),
        _capture(lambda: str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()),
    )


def instance_numbers_by_z(files: Sequence[str | os.PathLike] | CTCase) -> dict[float, int]:
    """The InstanceNumber of each image of a DICOM series by its table position: ``{z in mm (rounded to 0.1): n}``
    from ``ImagePositionPatient``; images without either are left out. A viewer finds a slice by these numbers.

    Args:
        files: the series' files, or a :class:`CTCase`, whose headers read at discovery are used for the files that
            have not changed since (the others are read again).
    """
    out: dict[float, int] = {}
    for header in current_headers(files) if isinstance(files, CTCase) else map(read_slice_header, files):
        instance = header.field("instance") if header is not None else None
        if instance is not None:
            out[instance[0]] = instance[1]
    return out


def current_headers(case: CTCase) -> list[SliceHeader | None]:
    """The :class:`SliceHeader` of each file of ``case``: the one discovery read while the file is unchanged since
    (same size and modification time), else read again (``None`` for a file that is no longer a DICOM image)."""
    carried = {header.path: header for header in case.headers}
    out = []
    for path in case.files:
        header = carried.get(Path(path))
        out.append(header if header is not None and header.is_current() else read_slice_header(path))
    return out


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword, None)
    except Exception:
        return None
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _floats(ds: Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    try:
        value = ds.get(keyword, None)
        if value is None:
            return None
        out = tuple(float(v) for v in value)
    except Exception:
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _modality(ds: Dataset) -> str | None:
    """``Modality``, or when it is missing the modality of the SOP class (``None`` when unknown)."""
    modality = _text(ds, "Modality")
    if modality:
        return modality.upper()
    return modality_from_sop_class(_text(ds, "SOPClassUID"))


@dataclass
class _Series:
    uid: str | None
    modality: str | None
    orientation: tuple[float, ...] | None
    rows: int
    columns: int
    description: str | None
    slices: list[tuple[Path, Dataset]] = field(default_factory=list)
    image_type: tuple[str, ...] = ()  # the most common ImageType of its images

    @property
    def is_derived(self) -> bool:
        """Whether the series is derived from other images (ImageType DERIVED: a reformat, MIP, average, ...)."""
        return bool(self.image_type) and self.image_type[0] == "DERIVED"

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        n = np.cross(np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:]))
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 1e-6 else None

    @property
    def is_axial(self) -> bool:
        n = self.normal
        return n is not None and abs(float(n[2])) > _AXIAL_MIN_NZ

    def _position(self, ds: Dataset) -> float | None:
        n = self.normal
        ipp = _floats(ds, "ImagePositionPatient", 3)
        if n is None or ipp is None:
            return None
        return round(float(np.dot(np.asarray(ipp), n)), _POSITION_DECIMALS)

    @property
    def n_slices(self) -> int:
        """Number of unique slice positions (number of files when positions are unknown)."""
        positions = [self._position(ds) for _, ds in self.slices]
        if any(p is None for p in positions):
            return len(self.slices)
        return len(set(positions))

    def sorted_files(self) -> tuple[Path, ...]:
        def key(item: tuple[Path, Dataset]) -> tuple:
            path, ds = item
            position = self._position(ds)
            try:
                instance = int(ds.get("InstanceNumber", 0) or 0)
            except (TypeError, ValueError):
                instance = 0
            return (position if position is not None else 0.0, instance, str(path))

        return tuple(path for path, _ in sorted(self.slices, key=key))

    def describe(self) -> str:
        if self.orientation is None:
            plane = "orientation unknown"
        elif self.normal is None:
            plane = "degenerate ImageOrientationPatient " + "/".join(f"{v:g}" for v in self.orientation)
        elif self.is_axial:
            plane = "axial"
        else:
            plane = "not axial"
        desc = f", '{self.description}'" if self.description else ""
        return (
            f"series {self.uid or '<no SeriesInstanceUID>'} ({self.modality or 'modality unknown'}, {plane}, "
            f"{self.n_slices} slices, {self.columns}x{self.rows}{desc})"
        )


def _group_series(slices: Iterable[tuple[Path, Dataset]]) -> list[_Series]:
    """Split the DICOM images of one folder into series (UID, image size and orientation must agree)."""
    groups: dict[tuple, _Series] = {}
    for path, ds in slices:
        uid = _text(ds, "SeriesInstanceUID")
        orientation = _floats(ds, "ImageOrientationPatient", 6)
        rounded = None if orientation is None else tuple(round(v, 3) for v in orientation)
        rows, columns = int(ds.Rows), int(ds.Columns)
        key = (uid or "", rows, columns, rounded)
        if key not in groups:
            groups[key] = _Series(uid, None, orientation, rows, columns, _text(ds, "SeriesDescription"))
        groups[key].slices.append((path, ds))
    series = list(groups.values())
    for s in series:
        modalities = Counter(_modality(ds) for _, ds in s.slices)
        s.modality = modalities.most_common(1)[0][0]
        s.image_type = Counter(_image_type(ds) for _, ds in s.slices).most_common(1)[0][0]
    return sorted(series, key=lambda s: (s.uid or "", s.rows, s.columns, s.orientation or ()))


_DICOM_SUFFIXES = frozenset({"", ".dcm", ".dicom", ".ima", ".img"})
_DROPPED_NAMED = 10  # files of an ignored series named one by one up to this count (a stray slice, not a series)


def has_dicm_marker(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part 10 file: the ``DICM`` marker after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _dicom_like(path: Path) -> bool:
    """Whether a file that did not read as a DICOM image was probably meant to be one (its name or its marker)."""
    suffix = path.suffix.lower()
    return suffix in _DICOM_SUFFIXES or suffix[1:].isdigit() or has_dicm_marker(path)


def _dropped_files(series: list[_Series], chosen: _Series | None, unreadable: Sequence[tuple[Path, str]]) -> list[str]:
    """``"name: reason"`` for every file of the folder left out of ``chosen``: the unreadable ones and the files of
    small ignored series (a stray slice of another size, orientation or series)."""
    out = [f"{path.name}: {reason}" for path, reason in unreadable]
    if chosen is None:
        return out  # the case's error describes every series found
    for s in series:
        if s is chosen or len(s.slices) > _DROPPED_NAMED:
            continue
        if s.uid != chosen.uid:
            why = f"another series ({s.uid or 'no SeriesInstanceUID'})"
        elif (s.rows, s.columns) != (chosen.rows, chosen.columns):
            why = f"another image size ({s.columns}x{s.rows}, the series has {chosen.columns}x{chosen.rows})"
        else:
            why = "another orientation (ImageOrientationPatient)"
        out += [f"{path.name}: {why}" for path, _ in s.slices]
    return out


def _dicom_case(
    folder: Path,
    slices: list[tuple[Path, Dataset]],
    case_id: str,
    unreadable: Sequence[tuple[Path, str]] = (),
    read_at: dict[Path, tuple[tuple[int, int], int | None]] | None = None,
) -> CTCase:
    """Choose the series of a DICOM folder and build its :class:`CTCase`; ``read_at`` gives each file's stamp and
    pixel data offset (see :class:`SliceHeader`) for the headers the case carries (none without it)."""
    if not slices:
        named = "; ".join(f"{p.name}: {r}" for p, r in unreadable[:5]) + ("; ..." if len(unreadable) > 5 else "")
        return CTCase(
            case_id=case_id, source_path=folder, kind="dicom", files=(),
            error=f"{folder}: no readable DICOM image among its {len(unreadable)} file(s) ({named}). The files are "
            "damaged or not DICOM: export the series again.",
            dropped=tuple(f"{p.name}: {r}" for p, r in unreadable),
        )  # fmt: skip
    series = _group_series(slices)
    candidates = [s for s in series if s.modality in (None, "CT") and s.is_axial]
    first_ds = slices[0][1]
    if not candidates:
        found = "; ".join(s.describe() for s in series)
        error = (
            f"{folder}: no axial CT series among the DICOM files of this folder (found: {found}). "
            "Only axial CT series can be segmented: put the axial CT series in this folder or remove the folder "
            "from the input."
        )
        logger.warning("%s", error)
        return CTCase(
            case_id=case_id,
            source_path=folder,
            kind="dicom",
            files=(),
            patient_id=_text(first_ds, "PatientID"),
            series_instance_uid=None,
            notes=tuple(f"ignored {s.describe()}" for s in series),
            error=error,
            dropped=tuple(_dropped_files(series, None, unreadable)),
        )
    # a reformat, MIP or slab average (ImageType DERIVED) may have more slices than the acquisition it was made from,
    # but not its voxels: the original series is taken when the folder holds one
    originals = [s for s in candidates if not s.is_derived]
    ranked = originals or candidates

    def rank(s: _Series) -> tuple:
        return s.n_slices, s.modality == "CT", len(s.slices)

    chosen = max(ranked, key=rank)
    notes = []
    for s in series:
        if s is chosen:
            continue
        if s.modality not in (None, "CT"):
            reason = "not CT"
        elif not s.is_axial:
            reason = "not axial"
        elif s not in ranked:
            reason = f"derived (ImageType {_joined(s.image_type)}), and the folder holds an original series"
        elif s.n_slices < chosen.n_slices:
            reason = "fewer slices"
        elif rank(s) < rank(chosen):
            why = "has a Modality tag" if s.modality != chosen.modality else "has more files"
            reason = f"as many slices ({s.n_slices}) as the chosen series, which {why}"
        else:
            reason = (
                f"as many slices ({s.n_slices}) as the chosen series: a tie (e.g. a native and a contrast phase), "
                "broken by SeriesInstanceUID order; keep only the series to segment in the folder to choose it"
            )
            logger.warning(
                "%s: %s and %s tie at %d slices; took the first.", folder, chosen.describe(), s.describe(), s.n_slices
            )
        notes.append(f"ignored {s.describe()}: {reason}")
    if len(series) > 1:
        logger.info(
            "%s: %d series in this folder; chose %s. Ignored: %s",
            folder,
            len(series),
            chosen.describe(),
            "; ".join(notes),
        )
    chosen_ds = chosen.slices[0][1]
    body_part = _text(chosen_ds, "BodyPartExamined")
    if body_part and not any(word in body_part.upper() for word in CHEST_BODY_PARTS):
        notes.append(f"BodyPartExamined is {body_part!r}, not the chest: check that the scan covers the lungs")
        logger.info("%s: %s", folder, notes[-1])
    dropped = _dropped_files(series, chosen, unreadable)
    if dropped:
        logger.warning("%s: %d file(s) left out of the series: %s", folder, len(dropped), "; ".join(dropped[:5]))
    files = chosen.sorted_files()
    headers: tuple[SliceHeader, ...] = ()
    if read_at is not None and all(path in read_at for path in files):
        datasets = dict(chosen.slices)
        headers = tuple(_slice_header(path, datasets[path], *read_at[path]) for path in files)
    return CTCase(
        case_id=case_id,
        source_path=folder,
        kind="dicom",
        files=files,
        headers=headers,
        patient_id=_text(chosen_ds, "PatientID"),
        series_instance_uid=chosen.uid,
        notes=tuple(notes),
        dropped=tuple(dropped),
        study_date=_text(chosen_ds, "StudyDate"),
    )


OUTPUT_LOCK_NAME = ".infnet-covid.lock"
"""The lock file every infnet-covid output folder holds (:data:`infnet_monai.pipeline.runner.LOCK_FILE`)."""


def _is_output_folder(folder: Path, filenames: Sequence[str]) -> bool:
    """Whether ``folder`` holds outputs of a run: an output folder (its lock file) or one case's outputs."""
    names = set(filenames)
    return OUTPUT_LOCK_NAME in names or {"stats.json", "infection.nii.gz"} <= names


def _not_regular(path: Path) -> str:
    """What ``path``, which is not a regular file, is: a broken link, a device, a FIFO, a socket, ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken link" if path.is_symlink() else "gone (deleted while the folder was scanned)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a special file"
    return f"{kind}{' (through a link)' if path.is_symlink() else ''}, not a regular file"


def _is_excluded(path: Path, excluded: Sequence[Path]) -> bool:
    return any(path == ex or ex in path.parents for ex in excluded)


def _candidate_file(name: str) -> bool:
    lower = name.lower()
    if name.startswith(".") or lower in _IGNORED_NAMES:
        return False
    if lower.endswith(_NIFTI_SUFFIXES):
        return True
    return Path(lower).suffix not in _IGNORED_SUFFIXES


def _unique_ids(raw_ids: Sequence[str]) -> list[str]:
    """Sanitise ids and make them unique (case-insensitively) with ``-2``, ``-3``, ... suffixes."""
    taken: set[str] = set()
    out = []
    for raw in raw_ids:
        base = sanitize_case_id(raw)
        candidate, n = base, 1
        while candidate.casefold() in taken:
            n += 1
            suffix = f"-{n}"
            candidate = base[: MAX_CASE_ID_LENGTH - len(suffix)] + suffix
        taken.add(candidate.casefold())
        out.append(candidate)
    return out


def discover_cases(
    input_path: str | os.PathLike,
    exclude: Sequence[str | os.PathLike] = (),
    skipped: list[tuple[Path, str]] | None = None,
) -> list[CTCase]:
    """Find the CT cases under ``input_path``.

    Args:
        input_path: a ``.nii``/``.nii.gz`` file, a DICOM series folder, or a cohort folder holding NIfTI files
            and/or DICOM series folders at any depth.
        exclude: folders never scanned (e.g. the output folder when it lies inside ``input_path``). A folder
            holding the lock file of an infnet-covid output folder, or a case folder with ``stats.json`` beside
            ``infection.nii.gz``, is never scanned either: earlier outputs are not inputs.
        skipped: when given, gets ``(path, reason)`` for every path passed over (hidden files and folders, broken
            links, devices and FIFOs, unreadable folders, earlier outputs, and DICOM files that are no part of a CT
            volume: localizers, secondary captures and screenshots, dose reports and other objects without an image);
            they are also logged.

    Returns:
        the cases sorted by their path relative to ``input_path``. A DICOM folder without a usable series is
        returned with ``error`` set rather than dropped, so that it can be reported. An empty list (with a
        warning logged) when nothing was found.

    Raises:
        FileNotFoundError: ``input_path`` does not exist (or is a broken link).
        ValueError: ``input_path`` is a file that is not NIfTI (e.g. one DICOM file instead of its folder), or
            neither a regular file nor a folder (a device, a FIFO).
    """
    root = Path(input_path).expanduser()
    if not root.exists():
        if root.is_symlink():
            raise FileNotFoundError(f"{root}: a broken link (it points to {os.readlink(root)}). Check the input path.")
        raise FileNotFoundError(f"{root}: no such file or folder. Check the input path.")
    if not root.is_file() and not root.is_dir():
        raise ValueError(
            f"{root}: {_not_regular(root)} nor a folder. Pass a NIfTI file, a DICOM series folder or a cohort folder."
        )
    if root.is_file():
        if is_nifti_path(root):
            return [CTCase(sanitize_case_id(_nifti_stem(root)), root, "nifti", (root,))]
        ds, reason, _, _ = _read_dicom_header(root)
        if ds is not None:
            raise ValueError(
                f"{root}: is a single DICOM file. Pass the folder that holds the whole series (or a cohort folder)."
            )
        if isinstance(reason, _PassOver):
            raise ValueError(f"{root}: {reason}. Pass a NIfTI file, a DICOM series folder or a cohort folder.")
        raise ValueError(
            f"{root}: not a NIfTI file (.nii/.nii.gz) nor a folder. Pass a NIfTI file, a DICOM series folder or a "
            "cohort folder."
        )

    excluded = [Path(p).expanduser().resolve() for p in exclude]
    passed_over: list[tuple[Path, str]] = []
    found: list[tuple[tuple[str, ...], str, Path, list[tuple[Path, Dataset]] | None, list[tuple[Path, str]]]] = []
    visited: set[Path] = set()
    read_at: dict[Path, tuple[tuple[int, int], int | None]] = {}

    def unreadable_folder(e: OSError) -> None:
        passed_over.append((Path(e.filename or "?"), f"unreadable folder ({e.strerror or e})"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable_folder):
        folder = Path(dirpath)
        real = folder.resolve()
        if real in visited or _is_excluded(real, excluded) or _is_output_folder(folder, filenames):
            dirnames[:] = []
            if real in visited:
                logger.debug("%s: already scanned (symlink loop or duplicate link); skipped.", folder)
            elif _is_excluded(real, excluded):
                logger.info("%s: excluded from the scan.", folder)
            else:
                passed_over.append((folder, "outputs of an earlier infnet-covid run, not CT input"))
            continue
        visited.add(real)
        passed_over += [(folder / d, "hidden folder") for d in sorted(dirnames) if d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in _IGNORED_NAMES)
        rel_parts = folder.relative_to(root).parts
        dicom_slices: list[tuple[Path, Dataset]] = []
        unreadable: list[tuple[Path, str]] = []
        has_nifti = False
        for name in sorted(filenames):
            path = folder / name
            if name.startswith(".") and not name.startswith((".infnet-covid", ".write-test")):
                passed_over.append((path, "hidden file"))
                continue
            if not _candidate_file(name):
                continue
            if not path.is_file():
                passed_over.append((path, _not_regular(path)))
                continue
            if is_nifti_path(name):
                has_nifti = True
                found.append((rel_parts + (_nifti_stem(path),), "nifti", path, None, []))
                continue
            ds, reason, stamp, pixel_offset = _read_dicom_header(path)
            if ds is not None and stamp is not None:  # a stamp whenever the file could be opened
                reason = _not_a_ct_volume(ds)
                if reason:
                    passed_over.append((path, reason))
                    continue
                dicom_slices.append((path, ds))
                read_at[path] = (stamp, pixel_offset)
            elif isinstance(reason, _PassOver):
                passed_over.append((path, reason))
            elif _dicom_like(path) or path.stat().st_size == 0:
                unreadable.append((path, reason))
            else:
                passed_over.append((path, reason))
        if dicom_slices or (unreadable and not has_nifti):
            found.append((rel_parts or (root.resolve().name,), "dicom", folder, dicom_slices, unreadable))
        else:
            passed_over += unreadable
    for path, reason in passed_over:
        logger.info("%s: skipped (%s).", path, reason)
    if passed_over:
        logger.warning(
            "%d path(s) under %s were passed over (hidden, broken links, unreadable, not CT); the log lists them "
            "at INFO level (-v), and --strict makes each an error row.", len(passed_over), root,
        )
    if skipped is not None:
        skipped.extend(passed_over)

    found.sort(key=lambda item: (item[0], item[1]))
    ids = _unique_ids(["_".join(parts) for parts, _, _, _, _ in found])
    cases = []
    for case_id, (_, kind, path, slices, unreadable) in zip(ids, found):
        if kind == "nifti":
            cases.append(CTCase(case_id, path, "nifti", (path,)))
        else:
            assert slices is not None
            cases.append(_dicom_case(path, slices, case_id, unreadable, read_at))
    if not cases:
        logger.warning("%s: no NIfTI file and no DICOM series found.", root)
    else:
        logger.info("%s: %d case(s) found.", root, len(cases))
    return cases
