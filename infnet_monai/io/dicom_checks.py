"""The checks of a DICOM series made from its headers before GDCM decodes it: the slice geometry and each file's
pixel data.

:func:`check_dicom_geometry` sorts the files along the slice normal and refuses what would give a wrong volume
without any other error: multi-frame files, slices of other sizes, orientations or pixel spacings, missing slices,
duplicate positions, non-uniform spacing and gantry tilt or shear. :func:`check_pixel_data` refuses pixel data that do
not fit their header. Both raise :class:`~infnet_monai.io.base_reader.CaseError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.data.utils import orientation_ras_lps
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from infnet_monai.io.base_reader import CaseError, check_extent, check_spacing
from infnet_monai.io.budget import InflateLimitError, dicom_file_bound, read_dicom
from infnet_monai.io.cases import CTCase
from infnet_monai.io.dicom_headers import SliceHeader, field_value, pixel_data_fields

__all__ = ["check_dicom_geometry", "check_pixel_data"]

_MAX_GAP_RATIO = 1.5  # a gap above this multiple of the median slice spacing means missing slices
_SPACING_TOLERANCE = 0.1  # relative deviation from the median spacing still called uniform
_DUPLICATE_MM = 1e-3  # slices closer than this along the normal are duplicates


_NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)  # implicit / explicit VR little endian, explicit VR big endian, deflated: pixels stored as they are


_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"  # the dataset is one zlib stream: no element can be found by its offset


def _pixel_data_tail(path: Path, header: SliceHeader) -> Dataset | None:
    """The elements of ``path`` from its pixel data on, parsed by pydicom as ``pydicom.dcmread`` parses them when it
    reads the whole file (same VR encoding, positions, errors and warnings), without parsing the header again; or
    ``None`` when that cannot be vouched for (no pixel data offset, a deflated dataset, an element out of order after
    the pixel data): the whole file is read then."""
    syntax = header.transfer_syntax
    if header.pixel_offset is None or header.encoding is None or syntax == _DEFLATED_SYNTAX:
        return None
    if not isinstance(syntax, str):  # reading it raised: the whole file's read raises it where it did
        return None
    implicit, little = header.encoding
    with open(path, "rb") as f:
        f.seek(header.pixel_offset)
        head = f.read(6)
        # pydicom takes a dataset's VR encoding from its first element: the pixel data's must give the header's
        found_implicit = len(head) < 6 or not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)
        if found_implicit != implicit:
            return None
        f.seek(header.pixel_offset)
        tail = read_dataset(f, implicit, little)
    if any(tag < 0x7FE00008 for tag in tail.keys()):  # would replace a header element in the whole file's dataset
        return None
    return tail


def check_pixel_data(path: Path, header: SliceHeader) -> None:
    """Refuse an image whose pixel data do not fit its header: a size other than Rows x Columns x BitsAllocated
    (a cut copy, a changed Rows), native data under a compressed transfer syntax or the reverse, or pixels that are
    not one grayscale sample of 8, 16 or 32 bits. GDCM would otherwise read such data shifted or as noise.

    Only the pixel data element is parsed, after the header fields read at discovery (:func:`_pixel_data_tail`);
    the whole file where that cannot be done."""
    fields = (header.transfer_syntax, header.pixel_format, header.photometric)
    try:
        tail = _pixel_data_tail(path, header)
        if tail is None:
            ds = read_dicom(path, force=True, max_inflated=dicom_file_bound(header))  # a deflated one within a bound
            fields = pixel_data_fields(ds)
            element = ds.get_item("PixelData")
        else:
            element = tail.get_item("PixelData")
        data = element.value if element is not None else None
    except InflateLimitError as e:
        raise CaseError(f"{path}: {e}. Export the series again without deflate compression.") from e
    except Exception as e:  # noqa: BLE001 - pydicom may raise anything on a damaged file
        raise CaseError(f"{path}: the DICOM file cannot be read to its end ({type(e).__name__}: {e}). Copy it again.") from e
    if data is None:
        raise CaseError(
            f"{path}: the pixel data are missing or cut short (the file ends before them): the file was truncated or "
            "damaged in a copy. Copy or export the series again."
        )
    syntax = field_value(fields[0])
    encapsulated = bool(getattr(element, "is_undefined_length", False)) or getattr(element, "length", 0) == 0xFFFFFFFF
    try:
        rows, cols, bits, samples, stored, frames = field_value(fields[1])
    except (TypeError, ValueError) as e:
        raise CaseError(f"{path}: Rows, Columns, BitsAllocated or SamplesPerPixel is not a number ({e}).") from e
    photometric = field_value(fields[2])
    if bits not in (8, 16, 32) or not 1 <= stored <= bits or samples != 1 or not photometric.startswith("MONOCHROME"):
        raise CaseError(
            f"{path}: pixels of BitsAllocated {bits}, BitsStored {stored}, SamplesPerPixel {samples}, "
            f"PhotometricInterpretation {photometric}: not a grayscale CT image (8, 16 or 32 bits, one sample). "
            "The header is damaged or the image is not CT: export the series again."
        )
    if syntax in _NATIVE_SYNTAXES:
        if encapsulated:
            raise CaseError(
                f"{path}: the pixel data are compressed (encapsulated) but the transfer syntax {syntax} says they are "
                "not. The header is damaged: export the series again."
            )
        needed = rows * cols * samples * frames * bits // 8
        if len(data) < needed or len(data) > needed + 1:  # + 1: a padding byte to an even length
            state = "cut short" if len(data) < needed else "longer than the header describes"
            raise CaseError(
                f"{path}: the pixel data are {state}: {len(data)} bytes, while Rows {rows} x Columns {cols} x "
                f"BitsAllocated {bits} need {needed}. The file was truncated or its header changed: export it again."
            )
    elif not encapsulated:
        raise CaseError(
            f"{path}: the transfer syntax {syntax} is a compressed one, but the pixel data are stored uncompressed. "
            "The header is damaged: export the series again."
        )


def _vector(header: SliceHeader, name: str, keyword: str, n: int, path: Path) -> np.ndarray:
    try:
        value = np.asarray(header.field(name), dtype=np.float64)
    except Exception as e:
        raise CaseError(
            f"{path}: DICOM tag {keyword} is missing or invalid ({e}); the slice geometry cannot be built. "
            "Export the series with complete headers."
        ) from None
    if value.shape != (n,) or not np.all(np.isfinite(value)):
        raise CaseError(f"{path}: DICOM tag {keyword} must hold {n} numbers, got {list(value)}.")
    return value


def _check_single_frames(files: list[Path], headers: list[SliceHeader]) -> None:
    for path, header in zip(files, headers):
        frames = header.field("frames")
        if frames > 1:
            raise CaseError(
                f"{path}: multi-frame DICOM ({frames} frames in one file) is not supported. Convert the series "
                "to NIfTI (e.g. with dcm2niix) and give the NIfTI file."
            )


def _regular_slice_spacing(folder, files: list[Path], along: np.ndarray) -> float:
    """The median slice spacing of the sorted positions ``along`` the normal; duplicates, gaps (missing slices) and
    non-uniform spacing are refused."""
    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < _DUPLICATE_MM)
    if dup.size:
        i = int(dup[0])
        raise CaseError(
            f"{folder}: {dup.size} duplicate slice position(s), e.g. {files[i].name} and {files[i + 1].name} at "
            f"{along[i]:.3f} mm along the slice normal. The folder mixes two acquisitions of one series: keep one."
        )
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if gaps[worst] > _MAX_GAP_RATIO * median:
        raise CaseError(
            f"{folder}: gap of {gaps[worst]:.3g} mm between slices {files[worst].name} and {files[worst + 1].name} "
            f"({gaps[worst] / median:.2g}x the median spacing of {median:.3g} mm): slice(s) are missing. Export the "
            "complete series (volumes are not resampled)."
        )
    if abs(gaps[worst] - median) > _SPACING_TOLERANCE * median:
        raise CaseError(
            f"{folder}: non-uniform slice spacing: {gaps[worst]:.3g} mm between {files[worst].name} and "
            f"{files[worst + 1].name}, median {median:.3g} mm. Resample the series to uniform spacing (e.g. convert "
            "it to NIfTI with a tool that resamples) and give that file."
        )
    return median


def _check_stacked(folder, positions: np.ndarray, normal: np.ndarray, along: np.ndarray, pixel_mm: float, tilt_tag) -> None:
    """Refuse slice positions that drift in-plane by more than half a pixel (gantry tilt, shear)."""
    offsets = positions - positions[0]
    inplane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.max(np.linalg.norm(inplane, axis=1)))
    if drift > 0.5 * pixel_mm:
        extent = float(along[-1] - along[0])
        angle = float(np.degrees(np.arctan2(drift, extent)))
        raise CaseError(
            f"{folder}: slice positions are not stacked along the slice normal: they drift {drift:.3g} mm in-plane "
            f"over {extent:.3g} mm (about {angle:.2g} degrees; GantryDetectorTilt={tilt_tag}). Gantry-tilted or "
            "sheared series are not supported: correct the tilt (e.g. dcm2niix does) and give the NIfTI file."
        )


def check_dicom_geometry(
    case: CTCase, headers: list[SliceHeader], min_slices: int, max_spacing_mm: float
) -> tuple[list[Path], np.ndarray, list[SliceHeader]]:
    """Validate the slice geometry of ``case`` from its ``headers`` (in the order of ``case.files``).

    Args:
        case: a case of kind ``"dicom"``.
        headers: the header fields of each of its files.
        min_slices: fewest slices accepted.
        max_spacing_mm: largest voxel spacing accepted on any axis (mm).

    Returns:
        the files sorted along the slice normal, the volume's RAS affine (4x4, float64) and the headers in the sorted
        files' order.

    Raises:
        CaseError: the series is not one regular volume; the message names the files and what to do.
    """
    folder = case.source_path
    files = [Path(p) for p in case.files]
    _check_single_frames(files, headers)
    orientations = [_vector(h, "orientation", "ImageOrientationPatient", 6, p) for p, h in zip(files, headers)]
    positions = np.stack([_vector(h, "position", "ImagePositionPatient", 3, p) for p, h in zip(files, headers)])
    pixel_spacings = [_vector(h, "pixel_spacing", "PixelSpacing", 2, p) for p, h in zip(files, headers)]
    sizes = {(h.rows, h.columns) for h in headers}
    if len(sizes) > 1:
        raise CaseError(f"{folder}: slices of different sizes {sorted(sizes)} in one series. Export it again.")
    for path, o, s in zip(files, orientations, pixel_spacings):
        if not np.allclose(o, orientations[0], atol=1e-4) or not np.allclose(s, pixel_spacings[0], atol=1e-4):
            raise CaseError(
                f"{folder}: slice {path.name} has another orientation or pixel spacing than {files[0].name}; "
                "the series is not one regular volume. Export it again or reformat it."
            )
    row_cos, col_cos = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_cos, col_cos)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-3:
        raise CaseError(f"{files[0]}: ImageOrientationPatient {list(orientations[0])} is degenerate.")
    normal /= norm
    (rows, cols), n = next(iter(sizes)), len(files)
    check_extent(folder, (cols, rows, n), min_slices)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    files = [files[i] for i in order]
    median = _regular_slice_spacing(folder, files, along)
    pixel = pixel_spacings[0]
    _check_stacked(folder, positions, normal, along, float(np.min(pixel)), headers[0].field("gantry_tilt"))
    lps = np.eye(4)
    lps[:3, 0] = row_cos * pixel[1]  # PixelSpacing is (between rows, between columns)
    lps[:3, 1] = col_cos * pixel[0]
    lps[:3, 2] = normal * median
    lps[:3, 3] = positions[0]
    ras = orientation_ras_lps(lps)
    check_spacing(folder, ras, max_spacing_mm)
    return files, ras, [headers[i] for i in order]

