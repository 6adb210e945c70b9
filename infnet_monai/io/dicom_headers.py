"""The header of one DICOM file, read once at discovery: whether it is an image, whether it is part of a CT volume,
and the fields the loader checks (:class:`SliceHeader`).

:func:`read_dicom_header` and :func:`read_slice_header` parse a header up to the pixel data
(``stop_before_pixels``; a deflated header is inflated within a bound, :func:`infnet_monai.io.budget.read_dicom`);
:func:`probe_dicom_file` also says why a file is not taken. :func:`not_a_ct_volume` names the images that are never
part of a CT volume (localizers, secondary captures, screenshots), :func:`modality_from_sop_class` the modality of a
header without a ``Modality`` tag. :mod:`infnet_monai.io.cases` groups the images into series and cases;
:mod:`infnet_monai.io.dicom_series` loads them from the fields read here.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from infnet_monai.io.budget import InflateLimitError, read_dicom, whole_number

__all__ = [
    "CT_SOP_CLASS_UIDS",
    "HeaderError",
    "PassOver",
    "SliceHeader",
    "field_value",
    "has_dicm_marker",
    "header_floats",
    "header_text",
    "image_type",
    "joined_values",
    "modality_from_sop_class",
    "not_a_ct_volume",
    "pixel_data_fields",
    "probe_dicom_file",
    "read_dicom_header",
    "read_slice_header",
    "slice_header",
]

logger = logging.getLogger(__name__)

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
    return probe_dicom_file(Path(path))[0]


def read_slice_header(path: str | os.PathLike) -> SliceHeader | None:
    """Read the header fields that the loader checks of ``path`` (see :class:`SliceHeader`), parsing the header once.

    Args:
        path: file to probe.

    Returns:
        the fields, or ``None`` when ``path`` is not a DICOM image (as for :func:`read_dicom_header`).
    """
    path = Path(path)
    ds, _, stamp, offset = probe_dicom_file(path)
    return None if ds is None or stamp is None else slice_header(path, ds, stamp, offset)


_PIXEL_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)  # (float, double float) pixel data, where stop_before_pixels stops


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """``(size, modification time in ns)`` of ``path``, ``None`` when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def probe_dicom_file(path: Path) -> tuple[Dataset | None, str, tuple[int, int] | None, int | None]:
    """:func:`read_dicom_header` with what discovery needs besides the dataset.

    Args:
        path: file to probe.

    Returns:
        ``(dataset or None, reason, stamp, pixel offset)``: the reason a file is not taken (``""`` when it is; a
        :class:`PassOver` for a valid DICOM object that is not an image), the file's stamp taken before it was read
        (see :attr:`SliceHeader.stamp`, ``None`` when it could not be opened) and the offset of its pixel data
        element (Part 10 files whose header read stopped there, else ``None``).
    """
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


class PassOver(str):
    """The reason a valid DICOM file is passed over at discovery (a dose report, a localizer, a screenshot): not a
    damaged file, so it does not make its folder a case that failed."""


def _not_an_image(ds: Dataset) -> PassOver | None:
    """Why ``ds``, a DICOM object without Rows or Columns, is not an image by design: its SOP class is a registered
    one that holds no image (a radiation dose report or another structured report, a PDF, a presentation state, ...);
    ``None`` for an unknown SOP class (the file is then taken as a damaged image)."""
    uid = header_text(ds, "SOPClassUID")
    if not uid:
        return None
    name = UID(uid).name
    if name == uid or "Image" in name:
        return None
    if "Dose" in name:
        return PassOver(f"a radiation dose report ({name}), not an image")
    return PassOver(f"not an image: a {name} object")


def not_a_ct_volume(ds: Dataset) -> PassOver | None:
    """Why the image ``ds`` is passed over at discovery: a localizer (scout, topogram), a secondary capture (e.g. a
    dose page) or a screenshot is never part of a CT volume; ``None`` for other images."""
    uid = header_text(ds, "SOPClassUID") or ""
    types = image_type(ds)
    shown = joined_values(types)
    if _LOCALIZER_TYPES & set(types):
        return PassOver(f"a localizer (ImageType {shown}), not a CT volume")
    if uid == _SECONDARY_CAPTURE_UID or uid.startswith(_SECONDARY_CAPTURE_UID + "."):
        return PassOver(f"a secondary capture ({UID(uid).name}, e.g. a screenshot or a dose page), not a CT volume")
    if _SCREEN_TYPES & set(types):
        return PassOver(f"a screenshot (ImageType {shown}), not a CT volume")
    return None


def image_type(ds: Dataset) -> tuple[str, ...]:
    """The values of ``ImageType``, stripped and upper-cased (empty when absent or unreadable)."""
    try:
        value = ds.get("ImageType", None)
        if value is None:
            return ()
        values = [value] if isinstance(value, (str, bytes)) else list(value)
        return tuple(str(v).strip().upper() for v in values)
    except Exception:  # noqa: BLE001 - a damaged value: no type known
        return ()


def joined_values(values: Sequence[str]) -> str:
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
    position, number = header_floats(ds, "ImagePositionPatient", 3), ds.get("InstanceNumber")
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


def slice_header(path: Path, ds: Dataset, stamp: tuple[int, int], pixel_offset: int | None) -> SliceHeader:
    """The :class:`SliceHeader` of ``ds``, each field from the expression the loader used on the dataset.

    Args:
        path: the file ``ds`` was read from.
        ds: its header, as :func:`probe_dicom_file` read it.
        stamp: the file's stamp when it was read.
        pixel_offset: the offset of its pixel data element, or ``None``.
    """
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


def header_text(ds: Dataset, keyword: str) -> str | None:
    """The value of ``keyword`` in ``ds`` as stripped text; ``None`` when absent, empty or unreadable."""
    try:
        value = ds.get(keyword, None)
    except Exception:
        return None
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def header_floats(ds: Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    """The ``n`` finite numbers of ``keyword`` in ``ds``; ``None`` when absent, unreadable, not ``n`` values or not
    finite."""
    try:
        value = ds.get(keyword, None)
        if value is None:
            return None
        out = tuple(float(v) for v in value)
    except Exception:
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def has_dicm_marker(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part 10 file: the ``DICM`` marker after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False
