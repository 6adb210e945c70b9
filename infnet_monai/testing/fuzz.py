"""Broken and valid variants of CT inputs, for testing that no damaged input comes back ``ok``.

:func:`fuzz_inputs` writes, from one NIfTI seed and one DICOM seed series, one input per :data:`MUTATIONS` entry
under a folder: damaged gzip streams, changed NIfTI header fields, wrong scaling, DICOM pixel data that do not fit
their header, stray or broken slices, implausible content, and valid encodings that must still be read (big-endian,
uncompressed, other data types, NIfTI-2, ...). Each entry says what a correct pipeline does with it:

- ``"ok"``: a valid input; it must be segmented (status ``ok``, or ``no_lung`` when the seed itself has no lung);
- ``"refused"``: a damaged or implausible input; its row must not say ``ok``;
- ``"either"``: readable or not depending on the reader, but never a crash.

``tests/io/test_fuzz.py`` runs the whole list through the cohort pipeline in CI; ``scripts/fuzz_cohort.py`` builds
it from any seeds (e.g. the shared scans) and prints the counts as JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from infnet_monai.utils.deprecation import moved_names

__all__ = ["Mutation", "MUTATIONS", "fuzz_inputs", "sha_tree"]

MOVED_NAMES = {"write_dicom_series": "infnet_monai.testing.dicom.write_dicom_series"}
"""Names that this module held in 0.10.0 -> where they are now."""

__getattr__ = moved_names(__name__, MOVED_NAMES)


@dataclass(frozen=True)
class Mutation:
    """One variant of a seed: ``make(seed, destination, rng)`` writes it (a file for NIfTI, a folder for DICOM)."""

    name: str
    source: str  # "nifti" or "dicom"
    expect: str  # "ok", "refused" or "either"
    make: Callable[[Path, Path, np.random.Generator], None]


# ---------------------------------------------------------------------------------------------------------- NIfTI
# NIfTI-1 header offsets (bytes)
_DIM, _DATATYPE, _BITPIX, _PIXDIM, _VOX_OFFSET, _SCL_SLOPE, _SCL_INTER = 40, 70, 72, 76, 108, 112, 116
_QFORM_CODE, _SFORM_CODE, _QUATERN_B, _QOFFSET_X, _SROW_X, _MAGIC = 252, 254, 256, 268, 280, 344


def _seed_image(seed: Path) -> nib.Nifti1Image:
    img = nib.load(str(seed))
    return nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header=img.header)


def _nii_bytes(seed: Path) -> bytearray:
    """The seed as an uncompressed little-endian NIfTI-1 file with its voxels right after the header."""
    img = _seed_image(seed)
    out = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header=img.header)
    out.header.set_data_dtype(img.get_data_dtype())
    return bytearray(out.to_bytes())


def _save_bytes(raw: bytes | bytearray, dst: Path, compress: bool = True) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(bytes(raw), mtime=0) if compress else bytes(raw))


def _patch(fmt: str, offset: int, *values, compress: bool = True):
    def make(seed: Path, dst: Path, rng) -> None:
        raw = _nii_bytes(seed)
        struct.pack_into("<" + fmt, raw, offset, *values)
        _save_bytes(raw, dst, compress)

    return make


def _gzip_damage(where: float, kind: str):
    def make(seed: Path, dst: Path, rng) -> None:
        data = bytearray(gzip.compress(bytes(_nii_bytes(seed)), mtime=0))
        n = len(data)
        if kind == "flip":
            i = max(10, min(n - 9, int(where * n)))
            data[i] ^= 0xFF
        elif kind == "truncate":
            data = data[: int(where * n)]
        elif kind == "crc":
            data[-8] ^= 0x01
        elif kind == "isize":
            data[-4] ^= 0x01
        elif kind == "trailing":
            data += bytes(rng.integers(0, 256, 64, dtype=np.uint8))
        _save_bytes(data, dst, compress=False)

    return make


def _volume(fn, dtype=None, affine=None, header_edit=None, two_headers=False):
    """A NIfTI made from the seed's HU array by ``fn(hu, rng)``."""

    def make(seed: Path, dst: Path, rng) -> None:
        img = _seed_image(seed)
        hu = np.asarray(img.dataobj).astype(np.float32)
        data = fn(hu, rng)
        if dtype is not None:
            data = data.astype(dtype)
        out = nib.Nifti1Image(data, img.affine if affine is None else affine(img.affine))
        if header_edit is not None:
            header_edit(out.header)
        dst.parent.mkdir(parents=True, exist_ok=True)
        nib.save(out, str(dst))

    return make


def _scaled(slope: float, inter: float, stored: Callable[[np.ndarray], np.ndarray] | None = None):
    """The seed's stored integers with another scl_slope / scl_inter (``stored`` changes the integers first)."""

    def make(seed: Path, dst: Path, rng) -> None:
        img = _seed_image(seed)
        hu = np.asarray(img.dataobj).astype(np.float64)
        data = (stored(hu) if stored is not None else hu).astype(np.int16)
        out = nib.Nifti1Image(data, img.affine)
        out.header.set_data_dtype(np.int16)
        raw = bytearray(out.to_bytes())
        struct.pack_into("<ff", raw, _SCL_SLOPE, slope, inter)
        _save_bytes(raw, dst)

    return make


def _big_endian(seed: Path, dst: Path, rng) -> None:
    img = _seed_image(seed)
    out = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header=nib.Nifti1Header(endianness=">"))
    out.header.set_data_dtype(img.get_data_dtype())
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(dst))


def _nifti2(seed: Path, dst: Path, rng) -> None:
    img = _seed_image(seed)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti2Image(np.asarray(img.dataobj), img.affine), str(dst))


def _forms(q: bool, s: bool):
    def make(seed: Path, dst: Path, rng) -> None:
        img = _seed_image(seed)
        out = nib.Nifti1Image(np.asarray(img.dataobj), None)
        out.set_qform(img.affine if q else None, code=1 if q else 0)
        out.set_sform(img.affine if s else None, code=1 if s else 0)
        dst.parent.mkdir(parents=True, exist_ok=True)
        nib.save(out, str(dst))

    return make


def _flipped(seed: Path, dst: Path, rng) -> None:
    """The same anatomy stored left-right mirrored with the affine that says so: a valid other orientation."""
    img = _seed_image(seed)
    data = np.asarray(img.dataobj)[::-1].copy()
    affine = img.affine.copy()
    affine[:3, 3] += affine[:3, 0] * (data.shape[0] - 1)
    affine[:3, 0] *= -1
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(dst))


def _with_extension(seed: Path, dst: Path, rng) -> None:
    img = _seed_image(seed)
    out = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    out.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"infnet-monai fuzz test comment\0\0"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(dst))


def _uncompressed(seed: Path, dst: Path, rng) -> None:
    _save_bytes(_nii_bytes(seed), dst.with_name(dst.name.replace(".nii.gz", ".nii")), compress=False)


def _file_bytes(content: Callable[[Path, np.random.Generator], bytes]):
    def make(seed: Path, dst: Path, rng) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(content(seed, rng))

    return make


def _resample_shift(hu: np.ndarray, rng) -> np.ndarray:
    return hu - 1024.0


def _disagreeing_forms(seed: Path, dst: Path, rng) -> None:
    """A qform 60 mm away from the sform, both with a code that says they hold."""
    img = _seed_image(seed)
    out = nib.Nifti1Image(np.asarray(img.dataobj), None)
    shifted = img.affine.copy()
    shifted[0, 3] += 60.0
    out.set_sform(img.affine, code=1)
    out.set_qform(shifted, code=1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(dst))


def _forms_then_patch(seed: Path, dst: Path, fmt: str, offset: int, value, sform: bool = True) -> None:
    """A NaN written into a form whose code says it is unused: a damaged header all the same."""
    img = _seed_image(seed)
    out = nib.Nifti1Image(np.asarray(img.dataobj), None)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine if sform else None, code=1 if sform else 0)
    raw = bytearray(out.to_bytes())
    struct.pack_into("<" + fmt, raw, offset, value)
    _save_bytes(raw, dst)



_NIFTI: list[tuple[str, str, Callable]] = [
    # valid encodings
    ("copy", "ok", lambda s, d, r: (d.parent.mkdir(parents=True, exist_ok=True), shutil.copyfile(s, d))),
    ("uncompressed", "ok", _uncompressed),
    ("big-endian", "ok", _big_endian),
    ("nifti-2", "ok", _nifti2),
    ("float32", "ok", _volume(lambda hu, r: hu, np.float32)),
    ("float64", "ok", _volume(lambda hu, r: hu, np.float64)),
    ("int32", "ok", _volume(lambda hu, r: hu, np.int32)),
    ("raw-with-intercept", "ok", _scaled(1.0, -1024.0, lambda hu: hu + 1024.0)),
    ("half-values-slope-2", "ok", _scaled(2.0, 0.0, lambda hu: np.round(hu / 2.0))),
    ("slope-0-means-none", "ok", _scaled(0.0, 0.0)),
    ("slope-nan-means-none", "ok", _scaled(float("nan"), 0.0)),
    ("sform-only", "ok", _forms(False, True)),
    ("qform-only", "ok", _forms(True, False)),
    ("mirrored-orientation", "ok", _flipped),
    ("header-extension", "ok", _with_extension),
    ("singleton-4d", "ok", _volume(lambda hu, r: hu[..., None], np.int16)),
    ("padding-3024-corners", "ok", _volume(lambda hu, r: np.where(_corners(hu.shape), -3024.0, hu), np.int16)),
    ("padding-2048-corners", "ok", _volume(lambda hu, r: np.where(_corners(hu.shape), -2048.0, hu), np.int16)),
    # damaged streams
    ("gzip-flip-10pct", "refused", _gzip_damage(0.10, "flip")),
    ("gzip-flip-50pct", "refused", _gzip_damage(0.50, "flip")),
    ("gzip-flip-90pct", "refused", _gzip_damage(0.90, "flip")),
    ("gzip-crc", "refused", _gzip_damage(0.0, "crc")),
    ("gzip-isize", "refused", _gzip_damage(0.0, "isize")),
    ("gzip-truncated-50pct", "refused", _gzip_damage(0.50, "truncate")),
    ("gzip-truncated-99pct", "refused", _gzip_damage(0.99, "truncate")),
    ("gzip-trailing-garbage", "refused", _gzip_damage(0.0, "trailing")),
    ("empty-file", "refused", _file_bytes(lambda s, r: b"")),
    ("random-bytes", "refused", _file_bytes(lambda s, r: bytes(r.integers(0, 256, 5000, dtype=np.uint8)))),
    ("text", "refused", _file_bytes(lambda s, r: b"patient list\nnot an image\n" * 40)),
    ("header-only", "refused", _file_bytes(lambda s, r: bytes(_nii_bytes(s)[:352]))),
    # changed header fields
    ("vox-offset-0", "refused", _patch("f", _VOX_OFFSET, 0.0)),
    ("vox-offset-100", "refused", _patch("f", _VOX_OFFSET, 100.0)),
    ("vox-offset-past-end", "refused", _patch("f", _VOX_OFFSET, 1.0e9)),
    ("dim0-8", "refused", _patch("h", _DIM, 8)),
    ("dim0-0", "refused", _patch("h", _DIM, 0)),
    ("dim3-doubled", "refused", lambda s, d, r: _patch("h", _DIM + 6, 2 * _seed_image(s).shape[2])(s, d, r)),
    ("dim3-halved", "refused", lambda s, d, r: _patch("h", _DIM + 6, _seed_image(s).shape[2] // 2)(s, d, r)),
    ("datatype-uint8", "refused", _patch("hh", _DATATYPE, 2, 8)),
    ("datatype-float32", "refused", _patch("hh", _DATATYPE, 16, 32)),
    ("datatype-unknown", "refused", _patch("h", _DATATYPE, 999)),
    ("magic-broken", "refused", _patch("4s", _MAGIC, b"xyz\0")),
    ("pixdim-zero", "refused", _patch("fff", _PIXDIM + 4, 0.0, 0.0, 0.0)),
    ("pixdim-nan", "refused", _patch("f", _PIXDIM + 12, float("nan"))),
    ("pixdim-micrometres", "refused", _volume(lambda hu, r: hu, np.int16, affine=lambda a: np.diag([0.001, 0.001, 0.001, 1.0]))),
    ("pixdim-50mm", "refused", _volume(lambda hu, r: hu, np.int16, affine=lambda a: a @ np.diag([1.0, 1.0, 50.0, 1.0]))),
    ("sform-nan", "refused", _patch("f", _SROW_X, float("nan"))),
    ("quaternion-nan", "refused", _patch("f", _QUATERN_B, float("nan"))),
    ("qoffset-nan", "refused", _patch("f", _QOFFSET_X, float("nan"))),
    ("qform-sform-disagree", "refused", _disagreeing_forms),
    ("sform-nan-unused", "refused", lambda s, d, r: _forms_then_patch(s, d, "f", _SROW_X + 4, float("nan"), sform=False)),
    ("sform-singular", "refused", _patch("ffff", _SROW_X, 0.0, 0.0, 0.0, 0.0)),
    # wrong scaling
    ("scl-slope-1e10", "refused", _scaled(1.0e10, 0.0)),
    ("scl-slope-minus-1", "refused", _scaled(-1.0, 0.0)),
    ("scl-inter-minus-1024-on-hu", "refused", _scaled(1.0, -1024.0)),
    ("scl-inter-plus-3000", "refused", _scaled(1.0, 3000.0)),
    ("scl-slope-1e-4", "refused", _scaled(1.0e-4, 0.0)),
    # implausible content
    ("all-air", "refused", _volume(lambda hu, r: -1000.0 + r.normal(0, 10, hu.shape), np.int16)),
    ("all-minus-3024", "refused", _volume(lambda hu, r: np.full(hu.shape, -3024.0), np.int16)),
    ("uniform-noise", "refused", _volume(lambda hu, r: r.uniform(-1024, 3071, hu.shape), np.int16)),
    ("tiny-3x3x3", "refused", _volume(lambda hu, r: hu[:3, :3, :3], np.int16)),
    ("one-slice", "refused", _volume(lambda hu, r: hu[..., :1], np.int16)),
    ("flat-2d", "refused", _volume(lambda hu, r: hu[..., 0], np.int16)),
    ("two-volumes", "refused", _volume(lambda hu, r: np.stack([hu, hu], -1), np.int16)),
    ("nan-voxels", "refused", _volume(lambda hu, r: np.where(_corners(hu.shape), np.nan, hu), np.float32)),
    ("inf-voxels", "refused", _volume(lambda hu, r: np.where(_corners(hu.shape), np.inf, hu), np.float32)),
    ("label-map", "refused", _volume(lambda hu, r: (hu < -500).astype(np.float32), np.uint8)),
    ("normalised-0-1", "refused", _volume(lambda hu, r: np.clip((hu + 1024) / 4095, 0, 1), np.float32)),
    ("constant-40", "refused", _volume(lambda hu, r: np.full(hu.shape, 40.0), np.int16)),
    ("shifted-minus-1024-float", "refused", _volume(_resample_shift, np.float32)),
]


def _corners(shape) -> np.ndarray:
    """A mask of the four in-plane corners outside an inscribed circle (a scanner's field of view)."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return np.broadcast_to((x**2 + y**2 > 1.0)[..., None], shape)


# ---------------------------------------------------------------------------------------------------------- DICOM
def _dicom_copy(modify=None, files: Callable[[list[Path]], list[Path]] | None = None):
    """The seed series with ``modify(ds, index, count, rng)`` applied to each slice (``None`` drops it)."""

    def make(seed: Path, dst: Path, rng) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        sources = sorted(p for p in seed.iterdir() if p.is_file())
        for i, src in enumerate(sources):
            ds = pydicom.dcmread(src)
            if modify is not None:
                ds = modify(ds, i, len(sources), rng)
                if ds is None:
                    continue
            if isinstance(ds, bytes):
                (dst / src.name).write_bytes(ds)
            else:
                ds.save_as(dst / src.name)

    return make


def _middle(fn):
    """``fn`` on the middle slice only."""
    return lambda ds, i, n, rng: fn(ds, rng) if i == n // 2 else ds


def _all(fn):
    return lambda ds, i, n, rng: fn(ds, rng)


def _setattr(keyword: str, value):
    def fn(ds, rng):
        setattr(ds, keyword, value)
        return ds

    return fn


def _native(ds) -> bool:
    return not ds.file_meta.TransferSyntaxUID.is_compressed


def _cut_pixels(fraction: float):
    def fn(ds, rng):
        if _native(ds):
            ds.PixelData = ds.PixelData[: int(len(ds.PixelData) * fraction) // 2 * 2]
        else:
            raw = ds.PixelData
            ds.PixelData = raw[: int(len(raw) * fraction)]
        return ds

    return fn


def _long_pixels(ds, rng):
    ds.PixelData = ds.PixelData + ds.PixelData[: len(ds.PixelData) // 2 // 2 * 2]
    return ds


def _rows(delta: int):
    def fn(ds, rng):
        ds.Rows = int(ds.Rows) + delta
        return ds

    return fn


def _even(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" * (len(raw) % 2)


def _syntax_bytes(ds, uids: tuple[str, ...]) -> bytes:
    """The slice as written, with its transfer syntax UID replaced in the file meta by the first of ``uids`` of the
    same encoded length (pydicom refuses to write such a mismatch itself)."""
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    old = _even(str(ds.file_meta.TransferSyntaxUID))
    for uid in uids:
        if len(_even(uid)) == len(old) and uid != str(ds.file_meta.TransferSyntaxUID):
            head = raw[:1024].replace(old, _even(uid), 1)
            return head + raw[1024:]
    raise ValueError(f"no replacement syntax of the length of {ds.file_meta.TransferSyntaxUID}")


_COMPRESSED_UIDS = ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70")
_NATIVE_UIDS = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2")


def _syntax_mismatch(ds, rng):
    """Native data under a compressed syntax, or compressed data under a native one."""
    return _syntax_bytes(ds, _COMPRESSED_UIDS if _native(ds) else _NATIVE_UIDS)


def _zero_bytes(ds, rng):
    return b""


def _random_bytes(ds, rng):
    return bytes(rng.integers(0, 256, 4096, dtype=np.uint8))


def _other_orientation(ds, rng):
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    return ds


def _other_series(ds, rng):
    ds.SeriesInstanceUID = generate_uid()
    return ds


def _other_size(ds, rng):
    if _native(ds):
        pixels = ds.pixel_array[::2, ::2].copy()
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
    else:
        ds.Rows, ds.Columns = int(ds.Rows) // 2, int(ds.Columns) // 2  # compressed: only the header says so
    return ds


def _no_preamble(ds, rng):
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()[132:]  # the file meta group without the preamble and "DICM"


def _tilt(ds, i, n, rng):
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + 0.8 * i * float(ds.PixelSpacing[0]), z]
    return ds


def _gap(ds, i, n, rng):
    return None if i == n // 2 else ds


def _pixel_representation_flip(ds, rng):
    ds.PixelRepresentation = 1 - int(ds.get("PixelRepresentation", 0))
    if ds.PixelRepresentation == 0:
        ds.RescaleIntercept = -1024  # stored -1024 read as 64512: air far above any HU
    return ds


def _extra_junk(kind: str):
    def make(seed: Path, dst: Path, rng) -> None:
        _dicom_copy()(seed, dst, rng)
        if kind == "text":
            (dst / "notes.txt").write_text("scan notes\n")
        elif kind == "dicomdir":
            (dst / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
        elif kind == "random":
            (dst / "stray.dcm").write_bytes(bytes(rng.integers(0, 256, 2048, dtype=np.uint8)))

    return make


def _rename_shuffled(seed: Path, dst: Path, rng) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in seed.iterdir() if p.is_file())
    for j, i in enumerate(rng.permutation(len(sources))):
        shutil.copyfile(sources[i], dst / f"file{j:04d}")


_DICOM: list[tuple[str, str, Callable]] = [
    ("copy", "ok", _dicom_copy()),
    ("shuffled-names", "ok", _rename_shuffled),
    ("extra-text-file", "ok", _extra_junk("text")),
    ("extra-dicomdir", "ok", _extra_junk("dicomdir")),
    ("extra-random-dcm", "ok", _extra_junk("random")),
    ("instance-numbers-reversed", "ok", _dicom_copy(lambda ds, i, n, r: (setattr(ds, "InstanceNumber", n - i), ds)[1])),
    ("no-preamble", "either", _dicom_copy(_all(_no_preamble))),
    # a damaged or foreign slice in the series
    ("slice-zero-bytes", "refused", _dicom_copy(_middle(_zero_bytes))),
    ("slice-random-bytes", "refused", _dicom_copy(_middle(_random_bytes))),
    ("slice-other-orientation", "refused", _dicom_copy(_middle(_other_orientation))),
    ("slice-other-size", "refused", _dicom_copy(_middle(_other_size))),
    ("slice-other-series", "refused", _dicom_copy(_middle(_other_series))),
    ("slice-missing", "refused", _dicom_copy(_gap)),
    # pixel data that do not fit the header
    ("pixels-cut-one-slice", "refused", _dicom_copy(_middle(_cut_pixels(0.5)))),
    ("pixels-cut-all", "refused", _dicom_copy(_all(_cut_pixels(0.9)))),
    ("pixels-too-long", "refused", _dicom_copy(_all(lambda ds, r: _long_pixels(ds, r) if _native(ds) else _cut_pixels(0.5)(ds, r)))),
    ("rows-changed-all", "refused", _dicom_copy(_all(_rows(-7)))),
    ("rows-changed-one", "refused", _dicom_copy(_middle(_rows(-7)))),
    ("bits-allocated-8", "refused", _dicom_copy(_all(_setattr("BitsAllocated", 8)))),
    ("bits-allocated-12", "refused", _dicom_copy(_all(_setattr("BitsAllocated", 12)))),
    ("samples-per-pixel-3", "refused", _dicom_copy(_all(_setattr("SamplesPerPixel", 3)))),
    ("syntax-mismatch-all", "refused", _dicom_copy(_all(_syntax_mismatch))),
    ("syntax-mismatch-one", "refused", _dicom_copy(_middle(_syntax_mismatch))),
    # wrong scaling
    ("rescale-slope-huge", "refused", _dicom_copy(_all(_setattr("RescaleSlope", 1.0e6)))),
    ("rescale-slope-negative", "refused", _dicom_copy(_all(_setattr("RescaleSlope", -1)))),
    ("rescale-intercept-minus-10000", "refused", _dicom_copy(_all(_setattr("RescaleIntercept", -10000)))),
    ("rescale-intercept-plus-3000", "refused", _dicom_copy(_all(_setattr("RescaleIntercept", 3000)))),
    ("pixel-representation-flipped", "either", _dicom_copy(_all(_pixel_representation_flip))),
    # geometry
    ("pixel-spacing-zero", "refused", _dicom_copy(_all(_setattr("PixelSpacing", [0, 0])))),
    ("pixel-spacing-micrometres", "refused", _dicom_copy(_all(_setattr("PixelSpacing", [0.001, 0.001])))),
    ("orientation-degenerate", "refused", _dicom_copy(_all(_setattr("ImageOrientationPatient", [1, 0, 0, 1, 0, 0])))),
    ("orientation-sagittal", "refused", _dicom_copy(_all(_setattr("ImageOrientationPatient", [0, 1, 0, 0, 0, -1])))),
    ("position-missing-one", "refused", _dicom_copy(_middle(lambda ds, r: (delattr(ds, "ImagePositionPatient"), ds)[1]))),
    ("gantry-tilt", "refused", _dicom_copy(_tilt)),
    ("modality-mr", "refused", _dicom_copy(_all(_setattr("Modality", "MR")))),
    ("all-files-random", "refused", _dicom_copy(_all(_random_bytes))),
    ("all-files-empty", "refused", _dicom_copy(_all(_zero_bytes))),
]

MUTATIONS: tuple[Mutation, ...] = tuple(
    [Mutation(f"nifti-{n}", "nifti", e, m) for n, e, m in _NIFTI] + [Mutation(f"dicom-{n}", "dicom", e, m) for n, e, m in _DICOM]
)
"""Every variant, NIfTI first."""


def fuzz_inputs(
    root: str | Path, nifti_seed: str | Path | None, dicom_seed: str | Path | None, seed: int = 0, prefix: str = ""
) -> dict[str, Mutation]:
    """Write every :data:`MUTATIONS` entry of the given seeds under ``root``; return ``{input name: mutation}``
    (names are ``<prefix><mutation name>.nii.gz`` files or ``<prefix><mutation name>`` folders)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    made: dict[str, Mutation] = {}
    for m in MUTATIONS:
        src = nifti_seed if m.source == "nifti" else dicom_seed
        if src is None:
            continue
        name = f"{prefix}{m.name}" + (".nii.gz" if m.source == "nifti" else "")
        m.make(Path(src), root / name, rng)
        if m.source == "nifti" and not (root / name).exists():
            name = name.replace(".nii.gz", ".nii")  # the uncompressed variant
        made[name] = m
    return made


def sha_tree(root: str | Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path: inputs before and after a run must be equal."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
