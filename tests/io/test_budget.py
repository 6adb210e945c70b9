"""Tests of the memory budget decided from headers (infnet_monai.io.budget) and its use by discovery and loading.

Every bomb is written as a header plus a little data (or a stream of zeros compressed piece by piece): the big array
a header claims is never made, and each test would fail on a wrong message rather than allocate it.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from infnet_monai.data.paths import shared_data_dir
from infnet_monai.io import budget
from infnet_monai.io.budget import (
    MAX_INPLANE_VOXELS,
    InflateLimitError,
    format_bytes,
    is_memory_error,
    nifti_size_refusal,
    read_dicom,
    size_refusal,
)
from infnet_monai.io.cases import CTCase, discover_cases
from infnet_monai.io.dicom_headers import read_slice_header
from infnet_monai.io.nifti import CompactNibabelReader
from infnet_monai.io.volume import CaseError, load_ct

DATA = shared_data_dir() / "ct"
ABDOMEN_NII = DATA / "abdomen_3mm_small.nii.gz"
CHEST_DICOM = DATA / "chest_2slice_dicom"
GIB = 2**30
SMALL_PEAK = 64 * 2**20  # bytes Python may allocate while a bomb is refused (tracemalloc counts numpy's too)

pytestmark = [
    pytest.mark.usefixtures("data_dir"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
]


def _peak_of(call) -> tuple[BaseException | None, int]:
    """What ``call()`` raised and the peak of the memory Python allocated meanwhile (bytes)."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except Exception as e:  # noqa: BLE001 - returned to the test
        raised = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


def _nifti_bomb(path: Path, shape: tuple[int, ...], dtype=np.int16, nifti2: bool = False, data: int = 4096) -> Path:
    """A NIfTI file whose valid header claims ``shape`` and whose data is ``data`` bytes of zeros."""
    header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header)()
    header.set_data_dtype(dtype)
    header["dim"][0] = len(shape)
    header["dim"][1 : len(shape) + 1] = shape  # not set_data_shape: it refuses sizes that overflow
    header.set_zooms((0.7,) * len(shape))
    header.set_sform(np.diag([0.7, 0.7, 0.7, 1.0]), code=1)
    header["vox_offset"] = header.single_vox_offset
    raw = header.binaryblock + b"\0" * (int(header["vox_offset"]) - header.sizeof_hdr) + b"\0" * data
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def _case(path: Path) -> CTCase:
    return CTCase("bomb", path, "nifti", (path,))


# ---------------------------------------------------------------------------------------------------------------------
# NIfTI


def test_nifti_bomb_is_refused_from_the_header_naming_the_numbers(tmp_path: Path) -> None:
    path = _nifti_bomb(tmp_path / "bomb.nii.gz", (4096, 4096, 600))
    raised, peak = _peak_of(lambda: load_ct(_case(path)))
    assert isinstance(raised, CaseError), raised
    message = str(raised)
    assert str(path) in message and "the header says 4096 x 4096 x 600 int16 = 20.1 GB" in message
    assert "in-plane 4096 x 4096 is over the limit of 2048 x 2048" in message
    assert peak < SMALL_PEAK


def test_max_slices_is_checked_before_the_voxels_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _nifti_bomb(tmp_path / "long.nii.gz", (512, 512, 5000))
    read = []
    monkeypatch.setattr(CompactNibabelReader, "_get_array_data", lambda *a: read.append(1))
    with pytest.raises(CaseError) as refused:
        load_ct(_case(path), max_slices=3000)
    assert "5000 voxels along its longest axis is over the limit of 3000 (--max-slices)" in str(refused.value)
    assert "in-plane" not in str(refused.value) and not read
    with pytest.raises(CaseError, match="cut short"):  # without the limit: the next check, still before reading
        load_ct(_case(path))
    assert not read


@pytest.mark.parametrize(
    "shape, max_slices, expected",
    [
        ((2**32, 2**32, 16), None, "in-plane 4294967296 x 4294967296 is over the limit of 2048 x 2048"),
        ((512, 512, 2**62), None, f"voxels is over the limit of {2048 * 2048 * 3000} (2048 x 2048 x 3000)"),
        ((512, 512, 2**62), 3000, f"{2**62} voxels along its longest axis is over the limit of 3000"),
    ],
)
def test_nifti2_dims_that_overflow_int64_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape, max_slices, expected
) -> None:
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: None)  # the voxel bound holds without it
    path = _nifti_bomb(tmp_path / "overflow.nii", shape, nifti2=True)
    with pytest.raises(CaseError) as refused:
        load_ct(_case(path), max_slices=max_slices)
    message = str(refused.value)
    assert expected in message and "x".join(str(s) for s in shape) not in message
    assert "OverflowError" not in message and "truncated" not in message


def test_memory_limit_names_the_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 200 * 10**6)
    path = _nifti_bomb(tmp_path / "big.nii.gz", (512, 512, 400))  # 210 MB: a real size, too large for 200 MB
    with pytest.raises(CaseError) as refused:
        load_ct(_case(path))
    message = str(refused.value)
    assert "the header says 512 x 512 x 400 int16 = 210 MB" in message
    assert "210 MB is over the memory limit of 100 MB (50% of the 200 MB of memory available)" in message


def test_real_scans_fit_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nifti_size_refusal(ABDOMEN_NII, nib.load(ABDOMEN_NII).header, max_slices=3000) is None
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 8 * GIB)  # a laptop's free memory
    for dims in ((512, 512, 3000), (1024, 1024, 1000), (2048, 2048, 200)):  # long, high-resolution, ultra-high
        assert size_refusal("x", dims, int(np.prod(dims)) * 2, "x", 3000) is None, dims


@pytest.mark.parametrize("dims", [(512, 0, 10), (512, -1, 10), (512, 512.5, 10), (512, True, 10)])
def test_dimension_not_a_positive_whole_number_is_refused(dims) -> None:
    refusal = size_refusal("f.nii", dims, 1, "the header says ...", None)
    assert refusal and "is not a positive whole number" in refusal and refusal.startswith("f.nii: ")


def test_a_failed_allocation_is_called_memory_not_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(self, img, filename):
        raise MemoryError("Unable to allocate 20.0 GiB for an array with shape (4096, 4096, 600)")

    monkeypatch.setattr(CompactNibabelReader, "_get_array_data", no_memory)
    with pytest.raises(CaseError) as refused:
        load_ct(_case(ABDOMEN_NII))
    message = str(refused.value)
    assert "not enough memory" in message and "truncated" not in message and "corrupt" not in message
    assert is_memory_error(RuntimeError("LoadImage failed:\nnumpy.core._exceptions._ArrayMemoryError: Unable to"))
    assert not is_memory_error(ValueError("Unexpected end of file"))


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (5, 1500, 20_132_659_200, 2**64)] == ["5 bytes", "1.5 KB", "20.1 GB", "18.4 EB"]


# ---------------------------------------------------------------------------------------------------------------------
# DICOM


def _element(tag: int, vr: bytes, length: int) -> bytes:
    """The header of an explicit VR little endian element with a 4-byte length (OB, OW, UN)."""
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, length)


def _write_deflated(path: Path, ds: pydicom.Dataset, zeros: int = 0, pixels: bytes | None = None, pixel_zeros: int = 0):
    """Write ``ds`` (no pixel data) deflated, then ``zeros`` bytes of a private OB element and the pixel data
    (``pixels``, or ``pixel_zeros`` zero bytes), each streamed through the compressor 1 MiB at a time."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(f, meta)
        f.write(deflate.compress(body.getvalue()))
        for tag, n, data in ((0x00291010, zeros, None), (0x7FE00010, pixel_zeros, pixels)):
            if data is None and not n:
                continue
            f.write(deflate.compress(_element(tag, b"OB" if tag != 0x7FE00010 else b"OW", len(data) if data else n)))
            if data is not None:
                f.write(deflate.compress(data))
            for start in range(0, n, 2**20):
                f.write(deflate.compress(bytes(min(2**20, n - start))))
        f.write(deflate.flush())
    return path


def _chest_headers(**changes) -> list[pydicom.Dataset]:
    out = []
    for src in sorted(CHEST_DICOM.iterdir()):
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        for key, value in changes.items():
            setattr(ds, key, value)
        out.append(ds)
    return out


def test_deflated_series_reads_as_the_original(tmp_path: Path) -> None:
    folder = tmp_path / "deflated"
    folder.mkdir()
    for src in sorted(CHEST_DICOM.iterdir()):
        ds = pydicom.dcmread(src)
        _write_deflated(folder / src.name, _without_pixels(ds), pixels=ds.PixelData)
    (case,) = discover_cases(folder)
    assert case.error is None and len(case.files) == 2
    (original,) = discover_cases(CHEST_DICOM)
    assert case.headers[0].transfer_syntax == DeflatedExplicitVRLittleEndian
    assert np.array_equal(load_ct(case).numpy(), load_ct(original).numpy())
    with open(folder / "0.dcm", "rb") as f:  # the header alone, as discovery reads it
        header = read_dicom(f, stop_before_pixels=True)
    assert "PixelData" not in header and header.Rows == 512 and header.filename == str(folder / "0.dcm")


def _without_pixels(ds: pydicom.Dataset) -> pydicom.Dataset:
    out = pydicom.Dataset()
    for element in ds:
        if element.tag < 0x7FE00000:
            out.add(element)
    return out


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"Rows": 4096, "Columns": 4096, "NumberOfFrames": 600}, "the header says 4096 x 4096 x 600 frames of 16 bits"),
        ({"Rows": 4096, "Columns": 4096}, "in-plane 4096 x 4096 is over the limit of 2048 x 2048"),
        ({"Rows": 65535, "Columns": 2048}, "in-plane 2048 x 65535 is over the limit"),
    ],
)
def test_deflated_dicom_claiming_a_huge_image_is_refused_before_its_pixels(tmp_path: Path, changes, expected) -> None:
    folder = tmp_path / "bomb"
    folder.mkdir()
    for i, ds in enumerate(_chest_headers(**changes)):
        _write_deflated(folder / f"{i}.dcm", ds, pixels=bytes(64))
    raised, peak = _peak_of(lambda: load_ct(discover_cases(folder)[0]))
    assert isinstance(raised, CaseError), raised
    assert expected in str(raised) and str(folder / "0.dcm") in str(raised)
    assert peak < SMALL_PEAK


def test_series_total_and_slices_checked_from_the_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 10**6)
    (case,) = discover_cases(CHEST_DICOM)
    with pytest.raises(CaseError) as refused:
        load_ct(case)
    assert str(refused.value).startswith(f"{CHEST_DICOM / '0.dcm'}: the header says 512 x 512 of 16 bits = 524 KB:")
    monkeypatch.setattr(budget, "available_memory_bytes", lambda: 2 * 10**6)
    with pytest.raises(CaseError) as refused:  # each file fits, the two do not
        load_ct(case)
    assert str(refused.value).startswith(f"{CHEST_DICOM}: the headers of its 2 file(s) say 512 x 512 x 2 = 1.05 MB:")
    monkeypatch.undo()
    with pytest.raises(CaseError, match=r"512 voxels along its longest axis is over the limit of 100 \(--max-slices\)"):
        load_ct(case, max_slices=100)


def test_deflated_header_is_inflated_within_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "DICOM_HEADER_MAX_BYTES", 2**20)
    folder = tmp_path / "header bomb"
    folder.mkdir()
    for i, ds in enumerate(_chest_headers()):
        _write_deflated(folder / f"{i}.dcm", ds, zeros=8 * 2**20, pixels=bytes(512 * 512 * 2))
    skipped: list = []
    raised, peak = _peak_of(lambda: skipped.append(discover_cases(folder)))
    assert raised is None and peak < 8 * 2**20
    (case,) = skipped[0]
    assert case.error and "0.dcm: its deflated dataset inflates to more than 1.05 MB" in case.error
    assert all("inflates to more than 1.05 MB" in reason for reason in case.dropped)
    with open(folder / "0.dcm", "rb") as f, pytest.raises(InflateLimitError):
        read_dicom(f, stop_before_pixels=True)


def test_deflated_pixel_data_is_inflated_within_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "DICOM_HEADER_MAX_BYTES", 2**20)
    folder = tmp_path / "pixel bomb"
    folder.mkdir()
    for i, ds in enumerate(_chest_headers()):  # 512 x 512 x 16 bits: 0.5 MB of pixels; the element holds 16 MB
        _write_deflated(folder / f"{i}.dcm", ds, pixel_zeros=16 * 2**20)
    (case,) = discover_cases(folder)
    assert case.error is None  # the headers are fine: discovery stops before the pixel data
    raised, peak = _peak_of(lambda: load_ct(case))
    assert isinstance(raised, CaseError) and "inflates to more than 1.57 MB" in str(raised), raised
    assert peak < 8 * 2**20


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS:UserWarning", "ignore:Value .2.5. is not valid:UserWarning")
def test_number_of_frames_that_is_not_whole_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, ds in enumerate(_chest_headers()):
        ds.add_new(0x00280008, "IS", "2.5")
        _write_deflated(folder / f"{i}.dcm", ds, pixels=bytes(512 * 512 * 2))
    header = read_slice_header(folder / "0.dcm")
    with pytest.raises(ValueError, match="NumberOfFrames '2.5' is not a whole number"):
        header.field("pixel_format")
    with pytest.raises(CaseError, match="cannot be read as a whole number .ValueError: NumberOfFrames '2.5'"):
        load_ct(discover_cases(folder)[0])


def test_inplane_limit_covers_real_ct() -> None:
    assert MAX_INPLANE_VOXELS >= 2048  # ultra-high-resolution CT reconstructs 2048 x 2048 slices


def test_a_gzip_stream_longer_than_its_header_is_not_inflated_to_its_end(tmp_path: Path, monkeypatch) -> None:
    path = _nifti_bomb(tmp_path / "long stream.nii.gz", (64, 64, 4), data=64 * 64 * 4 * 2 + 64 * 2**20)
    read = []
    original = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: read.append(n) or original(self, n))
    with pytest.raises(CaseError, match=r"holds more data than the header describes: over \d+ bytes uncompressed"):
        load_ct(_case(path))
    assert 1 <= read.count(1 << 22) <= 2  # a 4 MiB piece or two of the size check, not the 64 MiB behind the voxels
