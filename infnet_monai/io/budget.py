"""The memory a CT case needs, decided from its headers before a voxel is read or inflated.

A header can claim any size: a 20 MB ``.nii.gz`` whose valid header says 4096 x 4096 x 600 int16 inflates to 20 GB,
a 4 MB deflated DICOM file to 4 GB, and the dimensions of a NIfTI-2 header can overflow a 64-bit product to 0. So the
loader (:func:`infnet_monai.io.volume.load_ct`) and discovery (:func:`infnet_monai.io.cases.discover_cases`) read
through this module:

- :func:`nifti_size_refusal` and :func:`dicom_size_refusal` compute the size the headers describe (dimensions x bits
  per voxel, in Python integers, so nothing overflows; a dimension that is not a positive whole number is refused)
  and compare it with these limits: at most :data:`MAX_INPLANE_VOXELS` voxels along each in-plane axis; at most
  ``max_slices`` voxels along the longest axis (``--max-slices``, the rule that :class:`~infnet_monai.transforms.LoadCT`
  applies to the loaded volume); at most ``MAX_INPLANE_VOXELS**2 x max_slices`` voxels in all (``DEFAULT_MAX_SLICES``
  without ``max_slices``: a bound that holds where the memory cannot be measured); and at most :data:`MEMORY_SHARE` of
  the memory available (:func:`available_memory_bytes`). They return the refusal, which names the file and each number
  over its limit, or ``None``; the loader raises it as a ``CaseError`` before it reads a voxel.
- :func:`read_dicom` reads a DICOM file as ``pydicom.dcmread`` does, but inflates a deflated dataset (Deflated
  Explicit VR Little Endian) piece by piece up to a bound and raises :class:`InflateLimitError` beyond it, where
  pydicom inflates the whole file at once: discovery reads a header of at most :data:`DICOM_HEADER_MAX_BYTES`, the
  loader a file of at most that plus the pixel data its header describes (:func:`dicom_file_bound`).
- :func:`memory_refusal` words a failed allocation as the lack of memory it is, not as a damaged file.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from infnet_monai.defaults import DEFAULT_MAX_SLICES

__all__ = [
    "DICOM_HEADER_MAX_BYTES",
    "MAX_INPLANE_VOXELS",
    "MEMORY_SHARE",
    "InflateLimitError",
    "available_memory_bytes",
    "dicom_file_bound",
    "dicom_size_refusal",
    "format_bytes",
    "is_memory_error",
    "memory_refusal",
    "nifti_size_refusal",
    "read_dicom",
    "size_refusal",
    "whole_number",
]

MAX_INPLANE_VOXELS = 2048
"""Most voxels accepted along each in-plane axis. Clinical CT reconstructs 512 x 512 slices, high-resolution and
photon-counting scanners 768 or 1024 and at most 2048 (Canon's ultra-high-resolution matrix; the shared scans are all
512); a larger slice is a damaged header or not a CT scan."""
MEMORY_SHARE = 0.5
"""Largest share of the available memory (:func:`available_memory_bytes`) that the stored voxels may take: loading
holds a second copy of about their size while it scales and compacts them, and the pipeline its masks beside."""
DICOM_HEADER_MAX_BYTES = 64 * 2**20
"""Most bytes a deflated DICOM dataset may inflate to besides its pixel data (64 MiB): far above any real header
(an enhanced CT's per-frame groups of a thousand frames take a few MB), far below a decompression bomb."""

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})  # (float, double float) pixel data
_DEFLATED_UID = DeflatedExplicitVRLittleEndian.encode("ascii")
_META_PEEK_BYTES = 8192  # bytes read to find the transfer syntax in a Part 10 file's meta group
_INFLATE_STEP = 1 << 18  # bytes inflated at least per step (fewer zlib calls than one per element)
_WHOLE = re.compile(r"[+-]?\d+")


class InflateLimitError(ValueError):
    """A deflated DICOM dataset inflates to more bytes than it was allowed to (:func:`read_dicom`)."""


def format_bytes(n: int | float) -> str:
    """``n`` bytes in decimal units with 3 significant digits, e.g. ``"20.1 GB"``."""
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def available_memory_bytes() -> int | None:
    """Memory this process can still allocate: psutil's ``available`` when psutil is installed, else ``MemAvailable``
    of ``/proc/meminfo``, lowered to the headroom of the process's cgroup (v2 ``memory.max``) when a container limits
    it; ``None`` when none of these can be read (no memory limit is applied then)."""
    available = None
    try:
        import psutil  # optional: not a dependency of this package

        available = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - ImportError, or a platform psutil cannot measure
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    headroom = _cgroup_headroom()
    if headroom is not None:
        available = headroom if available is None else min(available, headroom)
    return available


def _cgroup_headroom() -> int | None:
    """``memory.max - memory.current`` of this process's cgroup (v2), ``None`` without a limit or a cgroup v2."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            entry = next((line.strip() for line in f if line.startswith("0::")), None)
        if entry is None:
            return None
        folder = Path("/sys/fs/cgroup") / entry[3:].lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def size_refusal(
    name: str | os.PathLike, dims: Sequence[Any], n_bytes: int, stated: str, max_slices: int | None = None
) -> str | None:
    """Why a volume of ``dims`` voxels taking ``n_bytes`` cannot be loaded, or ``None`` when it can.

    Args:
        name: the file or folder the refusal names.
        dims: voxels along each axis, the two in-plane axes first (NIfTI ``dim[1:]``; DICOM Columns, Rows, slices).
        n_bytes: bytes the stored voxels take, computed from ``dims`` in Python integers.
        stated: how the header gives the size, e.g. ``"the header says 4096 x 4096 x 600 int16"``.
        max_slices: most voxels along the longest axis (``--max-slices``); ``None`` for no such limit.

    Returns:
        ``"<name>: <stated> = <size>: <each number over its limit>. <what to do>"``, or ``None``.
    """
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or int(d) < 1:
            return (
                f"{name}: {stated}: a size of {d!r} is not a positive whole number, so the image's size is unknown. "
                "The header is damaged: export the image again."
            )
    dims = [int(d) for d in dims]
    over, advice = [], []
    inplane = dims[:2]
    if any(d > MAX_INPLANE_VOXELS for d in inplane):
        over.append(
            f"in-plane {' x '.join(map(str, inplane))} is over the limit of {MAX_INPLANE_VOXELS} x {MAX_INPLANE_VOXELS}"
        )
        advice.append("No CT slice is that large: the header is damaged or this is not a CT scan.")
    longest = max(dims[:3])
    if max_slices is not None and longest > max_slices:
        over.append(f"{longest} voxels along its longest axis is over the limit of {max_slices} (--max-slices)")
        advice.append("Check that this is the intended scan, or raise the limit with --max-slices.")
    voxels, slices = math.prod(dims), max_slices if max_slices is not None else DEFAULT_MAX_SLICES
    if not over and voxels > MAX_INPLANE_VOXELS**2 * slices:  # more volumes (4D), or no --max-slices given
        over.append(
            f"{voxels} voxels is over the limit of {MAX_INPLANE_VOXELS**2 * slices} "
            f"({MAX_INPLANE_VOXELS} x {MAX_INPLANE_VOXELS} x {slices})"
        )
        advice.append("No CT scan is that large: the header is damaged or this is not a CT scan.")
    available = available_memory_bytes()
    if available is not None and n_bytes > MEMORY_SHARE * available:
        over.append(
            f"{format_bytes(n_bytes)} is over the memory limit of {format_bytes(MEMORY_SHARE * available)} "
            f"({MEMORY_SHARE:.0%} of the {format_bytes(available)} of memory available)"
        )
        advice.append("Run it where more memory is free.")
    if not over:
        return None
    return f"{name}: {stated} = {format_bytes(n_bytes)}: {'; '.join(over)}. {' '.join(advice)} Nothing was read."


def nifti_size_refusal(path: str | os.PathLike, header: Any, max_slices: int | None = None) -> str | None:
    """:func:`size_refusal` of a NIfTI-1 or NIfTI-2 header as stored (``dim[0]`` already checked to lie in 1..7).

    Args:
        path: the file.
        header: its ``nibabel.Nifti1Header`` or ``Nifti2Header``, read without the data.
        max_slices: see :func:`size_refusal`.
    """
    dim = [int(d) for d in header["dim"]]
    dims = dim[1 : dim[0] + 1]
    dtype = np.dtype(header.get_data_dtype())
    n_bytes = dtype.itemsize
    for d in dims:
        n_bytes *= max(d, 0)
    stated = f"the header says {' x '.join(map(str, dims))} {dtype.name}"
    return size_refusal(path, dims, n_bytes, stated, max_slices)


def whole_number(value: Any, keyword: str) -> int:
    """``value`` of a DICOM integer tag (``keyword``) as an int; a fraction (``"2.5"``), which ``int`` would truncate,
    raises ``ValueError``."""
    text = str(value).strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{keyword} {text!r} is not a whole number")
    return int(text)


def dicom_size_refusal(folder: str | os.PathLike, headers: Sequence[Any], max_slices: int | None = None) -> str | None:
    """:func:`size_refusal` of each image of a DICOM series and of the whole series, from the headers.

    Each file takes Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated / 8 bytes; the series, the sum.

    Args:
        folder: the series folder, named when the series as a whole is too large.
        headers: the :class:`~infnet_monai.io.dicom_headers.SliceHeader` of each file.
        max_slices: see :func:`size_refusal`.
    """
    total, slices, inplane = 0, 0, (0, 0)
    for header in headers:
        try:
            rows, columns, bits, samples, _, frames = header.field("pixel_format")
        except Exception as e:  # noqa: BLE001 - the exception that reading the tags raised
            return (
                f"{header.path}: Rows, Columns, BitsAllocated, SamplesPerPixel or NumberOfFrames cannot be read as a "
                f"whole number ({type(e).__name__}: {e}), so the image's size is unknown. The header is damaged: "
                "export the series again."
            )
        n_bytes = (rows * columns * max(frames, 0) * max(samples, 0) * max(bits, 0) + 7) // 8
        stated = f"the header says {columns} x {rows}" + (f" x {frames} frames" if frames != 1 else "") + (
            f" of {samples} x {bits} bits" if samples != 1 else f" of {bits} bits"
        )
        refusal = size_refusal(header.path, (columns, rows, frames), n_bytes, stated, max_slices)
        if refusal:
            return refusal
        total, slices, inplane = total + n_bytes, slices + frames, (max(inplane[0], columns), max(inplane[1], rows))
    if not headers:
        return None
    stated = f"the headers of its {len(headers)} file(s) say {inplane[0]} x {inplane[1]} x {slices}"
    return size_refusal(folder, (*inplane, slices), total, stated, max_slices)


def dicom_file_bound(header: Any) -> int:
    """Most bytes the dataset of one DICOM file may inflate to: :data:`DICOM_HEADER_MAX_BYTES` plus the pixel data
    its header describes (only the header's allowance when that cannot be read)."""
    try:
        rows, columns, bits, samples, _, frames = header.field("pixel_format")
        pixels = (rows * columns * max(frames, 1) * max(samples, 1) * max(bits, 0) + 7) // 8
    except Exception:  # noqa: BLE001 - a damaged header: the pixel data check names it
        pixels = 0
    return DICOM_HEADER_MAX_BYTES + pixels


def is_memory_error(error: BaseException) -> bool:
    """Whether ``error`` is, or was caused by, a failed allocation (numpy's, or one a reader wrapped, e.g. MONAI's
    ``LoadImage`` in a ``RuntimeError`` with the traceback, ITK's ``std::bad_alloc``)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or re.search(r"(?i)MemoryError|bad_alloc|unable to allocate|out of memory", str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def memory_refusal(name: str | os.PathLike, error: BaseException) -> str:
    """The refusal of a case whose voxels could not be allocated (``error``)."""
    available = available_memory_bytes()
    free = f" ({format_bytes(available)} of memory is available now)" if available is not None else ""
    detail = str(error).strip().splitlines()[-1][:300] if str(error).strip() else ""
    return (
        f"{name}: not enough memory to hold the voxels ({type(error).__name__}{': ' + detail if detail else ''})"
        f"{free}; the file itself may be fine. Run it where more memory is free, or one case at a time."
    )


class _BoundedInflater:
    """A read-only, seekable file over the inflated bytes of the raw deflate stream that ``raw`` holds from its
    position on, inflated as they are read, at most ``limit`` of them: reading beyond raises
    :class:`InflateLimitError`. The bytes inflated so far are kept (for pydicom's seeking back)."""

    def __init__(self, raw: BinaryIO, limit: int, name: str) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._data = bytearray()
        self._pos = 0
        self.limit = int(limit)
        self.name = name

    def _inflate_to(self, end: int) -> None:
        end = min(end, self.limit + 1)  # one byte over the limit tells that the stream goes on
        inflater = self._inflater
        while len(self._data) < end and not inflater.eof:
            chunk = inflater.unconsumed_tail or self._raw.read(1 << 16)
            if not chunk:
                break  # the stream is cut short: reads past its end return less, as at the end of a file
            want = min(max(end - len(self._data), _INFLATE_STEP), self.limit + 1 - len(self._data))
            self._data += inflater.decompress(chunk, want)
        if end > self.limit and len(self._data) > self.limit:
            raise InflateLimitError(
                f"its deflated dataset inflates to more than {format_bytes(self.limit)}, more than its header can "
                "account for; it was not inflated further (a damaged file or a decompression bomb)"
            )

    def read(self, size: int = -1) -> bytes:
        end = self.limit + 1 if size is None or size < 0 else self._pos + size
        self._inflate_to(end)
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._inflate_to(self.limit + 1)
            offset += len(self._data)
        elif whence == os.SEEK_CUR:
            offset += self._pos
        self._pos = max(0, offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _may_be_deflated(fp: BinaryIO) -> bool:
    """Whether the file at ``fp``'s position may hold a deflated dataset: its file meta group names the deflated
    transfer syntax, or cannot be told apart cheaply (then the meta is parsed). Rewinds ``fp``."""
    start = fp.tell()
    head = fp.read(_META_PEEK_BYTES)
    fp.seek(start)
    if head[128:132] != b"DICM":
        return head[:2] == b"\x02\x00"  # a meta group without preamble (forced read); else there is no meta
    if head[132:138] != b"\x02\x00\x00\x00UL" or len(head) < 144:
        return True  # no group length: parse the meta to tell
    end = 144 + struct.unpack("<I", head[140:144])[0]
    return end > len(head) or _DEFLATED_UID in head[:end]


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS


def _not_file_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def read_dicom(
    source: str | os.PathLike | BinaryIO,
    stop_before_pixels: bool = False,
    force: bool = False,
    defer_size: str | int | None = None,
    max_inflated: int | None = None,
) -> FileDataset:
    """``pydicom.dcmread(source, defer_size, stop_before_pixels, force)``, but a deflated dataset is inflated piece by
    piece, at most ``max_inflated`` bytes of it (up to the pixel data with ``stop_before_pixels``); pydicom inflates
    the whole file into memory first.

    Args:
        source: a path, or a file opened in binary mode (read from its position; for a deflated dataset it is left
            at its end, as pydicom leaves it).
        stop_before_pixels: stop before the pixel data element.
        force: read a file without the ``DICM`` marker.
        defer_size: as pydicom's; ignored for a deflated dataset (its values are read from the inflated bytes).
        max_inflated: most bytes a deflated dataset may inflate to (default :data:`DICOM_HEADER_MAX_BYTES`).

    Returns:
        the dataset, as pydicom returns it.

    Raises:
        InflateLimitError: the deflated dataset inflates beyond ``max_inflated`` bytes.
        Exception: what ``pydicom.dcmread`` raises on the file.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            if not _may_be_deflated(f):
                return pydicom.dcmread(
                    source, defer_size=defer_size, stop_before_pixels=stop_before_pixels, force=force
                )  # by path, as before
            return read_dicom(f, stop_before_pixels, force, defer_size, max_inflated)
    start = source.tell()
    if _may_be_deflated(source):
        preamble = read_preamble(source, force)
        meta = FileMetaDataset(read_dataset(source, False, True, stop_when=_not_file_meta))
        if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            name = str(getattr(source, "name", "") or "")
            bound = DICOM_HEADER_MAX_BYTES if max_inflated is None else max_inflated
            stream = _BoundedInflater(source, bound, name)
            dataset = read_dataset(stream, False, True, stop_when=_at_pixel_data if stop_before_pixels else None)
            # the path, not the stream: the dataset does not keep the inflated bytes alive
            ds = FileDataset(name or stream, dataset, preamble, meta, is_implicit_VR=False, is_little_endian=True)
            ds.set_original_encoding(False, True, dataset._character_set)
            source.seek(0, os.SEEK_END)
            return ds
    source.seek(start)
    return pydicom.dcmread(source, defer_size=defer_size, stop_before_pixels=stop_before_pixels, force=force)
