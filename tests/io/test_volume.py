"""Tests of CT loading and validation (infnet_monai.io.volume and its readers) on the real shared CT data and broken copies of it."""

from __future__ import annotations

import logging
import os
import re
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor, PydicomReader
from monai.data.image_reader import NibabelReader
from monai.data.utils import affine_to_spacing
from monai.transforms import LoadImage

from infnet_monai.io.cases import CTCase, discover_cases
from infnet_monai.io.dicom_series import SimpleITKSeriesReader
from infnet_monai.io.volume import CaseError, load_ct

from infnet_monai.data.paths import shared_data_dir

DATA = shared_data_dir() / "ct"
ABDOMEN_NII = DATA / "abdomen_3mm_small.nii.gz"
LUNG_MASK_NII = DATA / "abdomen_3mm_lung.nii.gz"
ABDOMEN_DICOM = DATA / "abdomen_dicom"
CHEST_DICOM = DATA / "chest_2slice_dicom"

pytestmark = [
    # skips without the shared data, and fails the run when INFNET_REQUIRE_SHARED_DATA=1 (tests/conftest.py)
    pytest.mark.usefixtures("data_dir"),
    # MONAI's LoadImage instantiates its default readers; without nvImageCodec one of them warns each time
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
]


def _nifti_case(path: Path) -> CTCase:
    return CTCase("case", path, "nifti", (path,))


def _save_nifti(data: np.ndarray, path: Path, affine: np.ndarray | None = None) -> CTCase:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine), path)
    return _nifti_case(path)


@pytest.fixture(scope="module")
def abdomen() -> nib.Nifti1Image:
    return nib.load(ABDOMEN_NII)


@pytest.fixture(scope="module")
def hu(abdomen: nib.Nifti1Image) -> np.ndarray:
    return np.asanyarray(abdomen.dataobj)


def _dicom_copies(src: Path, dst: Path, modify=None, skip: tuple[int, ...] = (), pixels: bool = True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(src.iterdir())):
        if i in skip:
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=not pixels)
        if modify is not None:
            modify(ds, i)
        ds.save_as(dst / f.name)
    return dst


# ---------------------------------------------------------------------------------------------------------------------
# NIfTI


def test_nifti_matches_monai_loadimage(tmp_path: Path, abdomen: nib.Nifti1Image, hu: np.ndarray) -> None:
    path = tmp_path / "Pätient 1 (ct)" / "ct scan.nii.gz"  # spaces and non-ASCII
    path.parent.mkdir()
    os.symlink(ABDOMEN_NII.resolve(), path)
    (case,) = discover_cases(path.parent)
    image = load_ct(case)
    reference = LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True)(ABDOMEN_NII)
    assert isinstance(image, MetaTensor) and image.dtype == torch.int16  # integer HU stored compactly
    assert tuple(image.shape) == tuple(reference.shape) == (1, 122, 101, 30)
    np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy())
    np.testing.assert_allclose(image.affine.numpy(), abdomen.affine, atol=1e-5)
    np.testing.assert_array_equal(image[0].numpy(), np.maximum(hu, -1024).astype(np.float32))
    np.testing.assert_array_equal(image[0].numpy(), np.maximum(reference[0].numpy(), -1024))  # nibabel's scaled values
    assert image.meta["filename_or_obj"] == str(path)
    assert image.meta["case_id"] == case.case_id == "ct_scan"
    assert image.meta["hu_correction"] == "none"
    assert image.meta["clipped_below_air"] == int((hu < -1024).sum()) > 0


def test_nifti_4d_singleton_is_squeezed(tmp_path: Path, hu: np.ndarray) -> None:
    image = load_ct(_save_nifti(hu[..., None], tmp_path / "4d1.nii.gz"))
    assert tuple(image.shape) == (1, 122, 101, 30)


def test_nifti_raw_values_are_shifted(tmp_path: Path, hu: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    raw = (np.maximum(hu, -1024) + 1024).astype(np.uint16)  # 0..2231, no scl_slope/scl_inter
    with caplog.at_level(logging.WARNING, logger="infnet_monai.io.hounsfield"):
        image = load_ct(_save_nifti(raw, tmp_path / "raw.nii.gz"))
    np.testing.assert_array_equal(image[0].numpy(), np.maximum(hu, -1024))
    assert image.meta["hu_correction"] == "subtracted 1024"
    assert any("subtracting 1024" in r.getMessage() for r in caplog.records)


def test_nifti_raw_values_with_rescale_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    raw = (np.maximum(hu, -1024) + 1024).astype(np.uint16)
    case = _save_nifti(raw, tmp_path / "raw_scl.nii")
    with open(case.source_path, "r+b") as f:  # scl_slope = 1, scl_inter = 1: a rescale was recorded and applied
        f.seek(112)
        f.write(struct.pack("<ff", 1.0, 1.0))
    assert nib.load(case.source_path).dataobj.inter == 1.0
    with pytest.raises(CaseError, match=r"raw_scl\.nii: values range from 1 to .* rescale slope/intercept"):
        load_ct(case)


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("2d.nii.gz", lambda hu: hu[:, :, 15], r"2D image of shape \(122, 101\)"),
        ("4d.nii.gz", lambda hu: np.stack([hu] * 3, -1), r"holds 3 volumes"),
        ("one.nii.gz", lambda hu: hu[:, :, 15:16], r"1 slice\(s\).*at least 2 slices"),
        ("nan.nii.gz", lambda hu: np.where(np.arange(hu.size).reshape(hu.shape) % 1000 == 0, np.nan, hu), "NaN"),
        ("norm.nii.gz", lambda hu: (hu / 2000.0).astype(np.float32), r"no voxel below -500 HU"),
    ],
)
def test_nifti_refused(tmp_path: Path, hu: np.ndarray, name: str, make, match: str) -> None:
    case = _save_nifti(make(hu), tmp_path / name)
    with pytest.raises(CaseError, match=match) as info:
        load_ct(case)
    assert name in str(info.value)
    if name == "nan.nii.gz":
        assert f"{int(np.ceil(hu.size / 1000))} voxel(s) are NaN" in str(info.value)


def test_nifti_spacing_refused(tmp_path: Path, hu: np.ndarray) -> None:
    case = _save_nifti(hu, tmp_path / "thick.nii.gz", np.diag([1.0, 1.0, 25.0, 1.0]))
    with pytest.raises(CaseError, match=r"thick\.nii\.gz: voxel spacing \[1\.0, 1\.0, 25\.0\] mm"):
        load_ct(case)


def test_label_map_refused() -> None:
    with pytest.raises(CaseError, match="label map"):
        load_ct(_nifti_case(LUNG_MASK_NII))


def test_broken_files_refused(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match=r"missing\.nii\.gz: file not found"):
        load_ct(_nifti_case(tmp_path / "missing.nii.gz"))
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(CaseError, match=r"empty\.nii\.gz: file is empty \(0 bytes\)"):
        load_ct(_nifti_case(empty))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(ABDOMEN_NII.read_bytes()[: ABDOMEN_NII.stat().st_size // 2])
    with pytest.raises(CaseError, match=r"truncated\.nii\.gz: .*(truncated|corrupt)"):
        load_ct(_nifti_case(truncated))
    for name in ("text.nii.gz", "text.nii"):
        (tmp_path / name).write_text("hello, this is not an image\n" * 20)
        with pytest.raises(CaseError, match=rf"{name.replace('.', '[.]')}: not a readable NIfTI image"):
            load_ct(_nifti_case(tmp_path / name))


def test_case_with_error_refused() -> None:
    case = CTCase("x", CHEST_DICOM, "dicom", (), error="no axial CT series in this folder")
    with pytest.raises(CaseError, match="no axial CT series"):
        load_ct(case)


# ---------------------------------------------------------------------------------------------------------------------
# DICOM


def test_dicom_series(tmp_path: Path) -> None:
    # the real series plus a second, shorter series in the same folder: only the chosen files are read
    folder = tmp_path / "série 1"
    for f in sorted(ABDOMEN_DICOM.iterdir()):
        folder.mkdir(exist_ok=True)
        os.symlink(f.resolve(), folder / f.name)

    def second(ds: pydicom.Dataset, i: int) -> None:
        ds.SeriesInstanceUID = "1.2.3.4.5.6"

    for i, f in enumerate(sorted(ABDOMEN_DICOM.iterdir())[:5]):
        ds = pydicom.dcmread(f)
        second(ds, i)
        ds.save_as(folder / f"short_{i}.dcm")
    (case,) = discover_cases(folder)
    image = load_ct(case)
    assert tuple(image.shape) == (1, 512, 512, 20)
    np.testing.assert_allclose(affine_to_spacing(image.affine, r=3).numpy(), [0.9765625, 0.9765625, 2.0])
    expected = np.array(
        [[-0.9765625, 0, 0, 249.51171875], [0, -0.9765625, 0, 437.51171875], [0, 0, 2.0, -804.5], [0, 0, 0, 1]]
    )  # LPS origin (-249.5, -437.5, -804.5) of the lowest slice, in RAS
    np.testing.assert_allclose(image.affine.numpy(), expected, atol=1e-6)
    arr = image[0].numpy()
    assert arr.min() == -1024 and 1000 < arr.max() < 3100
    corner = arr[:20, :20, :]  # outside the body: air
    assert -1024 <= corner.mean() < -900
    assert image.meta["filename_or_obj"] == str(folder)
    assert image.meta["modality"] == "CT" and image.meta["series_instance_uid"] == ""

    # same world geometry and values as MONAI's own PydicomReader (which stacks by InstanceNumber, top first)
    reference = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(ABDOMEN_DICOM)
    ref = reference[0].numpy()[:, :, ::-1]
    np.testing.assert_array_equal(arr, ref)
    ijk = np.array([[0, 0, 0, 1], [511, 0, 19, 1], [100, 300, 7, 1]], dtype=float).T
    flipped = ijk.copy()
    flipped[2] = 19 - flipped[2]
    np.testing.assert_allclose(image.affine.numpy() @ ijk, reference.affine.numpy() @ flipped, atol=1e-4)


def test_stripped_two_slice_chest() -> None:
    (case,) = discover_cases(CHEST_DICOM)
    image = load_ct(case)
    assert tuple(image.shape) == (1, 512, 512, 2)
    np.testing.assert_allclose(affine_to_spacing(image.affine, r=3).numpy(), [0.625, 0.625, 1.0])
    raw = np.stack([pydicom.dcmread(CHEST_DICOM / f"{i}.dcm").pixel_array.T for i in range(2)], -1)
    assert raw.min() == -2048  # padding outside the scan circle ...
    np.testing.assert_array_equal(image[0].numpy(), np.maximum(raw, -1024))  # ... becomes air
    assert image.meta["modality"] == "CT"  # no Modality tag: inferred from the SOP class
    assert image.meta["patient_id"] == ""


def _shift_raw(ds: pydicom.Dataset, i: int, keep_rescale: bool) -> None:
    raw = np.maximum(ds.pixel_array.astype(np.int32) + 1024, 0).astype(np.int16)
    ds.PixelData = raw.tobytes()
    if not keep_rescale:
        del ds.RescaleIntercept
        del ds.RescaleSlope


def test_dicom_raw_without_rescale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _dicom_copies(CHEST_DICOM, tmp_path / "raw", lambda ds, i: _shift_raw(ds, i, keep_rescale=False))
    with caplog.at_level(logging.WARNING, logger="infnet_monai.io.hounsfield"):
        image = load_ct(discover_cases(folder)[0])
    expected = load_ct(discover_cases(CHEST_DICOM)[0])
    np.testing.assert_array_equal(image.numpy(), expected.numpy())
    assert image.meta["hu_correction"] == "subtracted 1024"
    assert any("without a rescale intercept" in r.getMessage() for r in caplog.records)

    folder = _dicom_copies(CHEST_DICOM, tmp_path / "raw2", lambda ds, i: _shift_raw(ds, i, keep_rescale=True))
    with pytest.raises(CaseError, match="raw2: values range from 0 to 2526 .* rescale slope/intercept"):
        load_ct(discover_cases(folder)[0])


def test_dicom_missing_slice(tmp_path: Path) -> None:
    folder = _dicom_copies(ABDOMEN_DICOM, tmp_path / "gap", skip=(10,), pixels=False)
    (case,) = discover_cases(folder)
    assert len(case.files) == 19
    with pytest.raises(CaseError, match=r"gap: gap of 4 mm between slices .*\(2x the median spacing of 2 mm"):
        load_ct(case)


def test_dicom_tilt(tmp_path: Path) -> None:
    def tilt(ds: pydicom.Dataset, i: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * i, z]

    folder = _dicom_copies(ABDOMEN_DICOM, tmp_path / "tilt", tilt, pixels=False)
    with pytest.raises(CaseError, match=r"tilt: slice positions are not stacked .* drift 9\.5 mm"):
        load_ct(discover_cases(folder)[0])


def test_dicom_non_uniform_and_duplicates(tmp_path: Path) -> None:
    def stretch(ds: pydicom.Dataset, i: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z - (0.5 if i >= 10 else 0.0)]

    folder = _dicom_copies(ABDOMEN_DICOM, tmp_path / "uneven", stretch, pixels=False)
    with pytest.raises(CaseError, match=r"uneven: non-uniform slice spacing: 2\.5 mm"):
        load_ct(discover_cases(folder)[0])

    def duplicate(ds: pydicom.Dataset, i: int) -> None:
        if i == 3:
            ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [-770.5]

    folder = _dicom_copies(ABDOMEN_DICOM, tmp_path / "dup", duplicate, pixels=False)
    with pytest.raises(CaseError, match=r"dup: 1 duplicate slice position"):
        load_ct(discover_cases(folder)[0])


def test_dicom_mr_only(tmp_path: Path) -> None:
    folder = _dicom_copies(CHEST_DICOM, tmp_path / "mr", lambda ds, i: setattr(ds, "Modality", "MR"), pixels=False)
    (case,) = discover_cases(folder)
    assert case.error is not None
    with pytest.raises(CaseError, match=r"mr: no axial CT series .*MR"):
        load_ct(case)
    # a hand-built case pointing at the MR files is refused too
    files = tuple(sorted(folder.iterdir()))
    with pytest.raises(CaseError, match="modality is MR, not CT"):
        load_ct(CTCase("mr", folder, "dicom", files))


def test_simpleitk_reader_folder_matches_file_list() -> None:
    loader = LoadImage(reader=SimpleITKSeriesReader(), image_only=True, ensure_channel_first=True)
    from_folder = loader(CHEST_DICOM)
    from_files = loader(sorted(CHEST_DICOM.iterdir()))
    assert tuple(from_folder.shape) == tuple(from_files.shape) == (1, 512, 512, 2)
    np.testing.assert_allclose(from_folder.affine.numpy(), from_files.affine.numpy())


@pytest.mark.parametrize(
    "stored, slope, inter, dtype",
    [
        (np.int16, 1.0, -1024.0, torch.int16),  # the usual CT export: integers, stored compactly
        (np.uint16, 1.0, -1024.0, torch.int16),
        (np.int16, 0.5, -1024.0, torch.float32),  # fractional HU stay float32
        (np.float32, 1.0, -1024.0, torch.float32),
    ],
)
def test_nifti_scaling_matches_nibabel_without_a_float64_copy(tmp_path, stored, slope, inter, dtype):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 2000, size=(16, 12, 4)).astype(stored)
    img = nib.Nifti1Image(raw, np.diag([0.8, 0.8, 2.0, 1.0]))
    img.header.set_slope_inter(slope, inter)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    (case,) = discover_cases(path)
    image = load_ct(case)
    assert image.dtype == dtype
    expected = np.maximum(np.asarray(nib.load(str(path)).dataobj, dtype=np.float64), -1024)
    np.testing.assert_array_equal(image[0].numpy().astype(np.float64), expected)


def _patched_nii(hu: np.ndarray, path: Path, fmt: str, offset: int, value) -> CTCase:
    """An uncompressed NIfTI-1 with one header field overwritten in place (``struct`` format ``fmt`` at byte
    ``offset``), as a damaged file would have it."""
    nib.save(nib.Nifti1Image(hu, np.diag([3.0, 3.0, 3.0, 1.0])), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, offset, *value) if isinstance(value, tuple) else struct.pack_into(fmt, raw, offset, value)
    path.write_bytes(bytes(raw))
    return _nifti_case(path)


def test_nifti_voxel_offset_inside_the_header_is_refused(tmp_path: Path, hu: np.ndarray) -> None:
    case = _patched_nii(hu, tmp_path / "offset0.nii", "<f", 108, 0.0)  # vox_offset
    with pytest.raises(CaseError, match=r"offset0\.nii: vox_offset 0 lies inside the 352-byte NIfTI header"):
        load_ct(case)


def test_nifti_zero_pixdim_is_refused_not_taken_as_1_mm(tmp_path: Path, hu: np.ndarray) -> None:
    path = tmp_path / "pixdim0.nii"
    case = _patched_nii(hu, path, "<f", 76 + 4 * 3, 0.0)  # pixdim[3]
    raw = bytearray(path.read_bytes())
    struct.pack_into("<hh", raw, 252, 0, 0)  # qform_code, sform_code: the geometry would come from pixdim alone
    path.write_bytes(bytes(raw))
    with pytest.raises(CaseError, match=r"pixdim0\.nii: pixdim \[3\.0, 3\.0, 0\.0\] holds a zero"):
        load_ct(case)


def test_nifti_spacing_of_micrometres_is_refused(tmp_path: Path, hu: np.ndarray) -> None:
    case = _save_nifti(hu, tmp_path / "tiny.nii.gz", np.diag([0.001, 0.001, 0.001, 1.0]))
    with pytest.raises(CaseError, match=r"voxel spacing \[0\.001, 0\.001, 0\.001\] mm is outside \[0\.1, 20\] mm"):
        load_ct(case)


def test_nifti_qform_and_sform_that_disagree_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    img = nib.Nifti1Image(hu, np.diag([3.0, 3.0, 3.0, 1.0]))
    shifted = np.diag([3.0, 3.0, 3.0, 1.0])
    shifted[:3, 3] = [0.0, 0.0, 30.0]  # 10 slices away
    img.set_qform(shifted, code=1)
    img.set_sform(np.diag([3.0, 3.0, 3.0, 1.0]), code=1)
    path = tmp_path / "forms.nii.gz"
    nib.save(img, path)
    with pytest.raises(CaseError, match=r"forms\.nii\.gz: the qform and the sform place the volume 30\.0 mm apart"):
        load_ct(_nifti_case(path))
    img.set_qform(np.diag([3.0, 3.0, 3.0, 1.0]) + np.diag([0.0, 0.0, 1e-4, 0.0]), code=1)  # rounding: still one geometry
    nib.save(img, path)
    assert tuple(load_ct(_nifti_case(path)).shape[1:]) == hu.shape


# ---------------------------------------------------------------------------------------------------------------------
# DICOM read fast: slice by slice in threads, headers parsed once


def _read(reader: SimpleITKSeriesReader, files) -> tuple[np.ndarray, dict, object]:
    image = reader.read(files)
    array, meta = reader.get_data(image)
    return array, meta, image


@pytest.mark.parametrize("reverse", [False, True])  # descending positions: the slice axis points down
@pytest.mark.parametrize("pixel_type", [sitk.sitkUnknown, sitk.sitkInt32])
def test_threaded_reader_gives_the_series_readers_image(reverse: bool, pixel_type: int) -> None:
    files = sorted(ABDOMEN_DICOM.iterdir(), reverse=reverse)
    ref_array, ref_meta, ref_image = _read(SimpleITKSeriesReader(output_pixel_type=pixel_type), files)
    assert isinstance(ref_image, sitk.Image)
    array, meta, image = _read(SimpleITKSeriesReader(output_pixel_type=pixel_type, num_workers=3), files)
    assert not isinstance(image, sitk.Image)  # read slice by slice, 16 slices per thread and the two ends
    assert array.dtype == ref_array.dtype and array.flags.c_contiguous
    np.testing.assert_array_equal(array, ref_array)
    assert meta.keys() == ref_meta.keys()
    for key in meta:  # bit-equal geometry, as ITK computes it from the first and last files
        np.testing.assert_array_equal(np.asarray(meta[key]), np.asarray(ref_meta[key]), strict=True)
    assert float(meta["spacing"][2]) == 2.0


def test_threaded_reader_stores_int16_when_the_values_fit() -> None:
    files = sorted(ABDOMEN_DICOM.iterdir())
    ref, _, _ = _read(SimpleITKSeriesReader(output_pixel_type=sitk.sitkInt32), files)
    wide = SimpleITKSeriesReader(output_pixel_type=sitk.sitkInt32, num_workers=2, int16_range=(-31744, 32767))
    fits, _, _ = _read(wide, files)
    assert fits.dtype == np.int16
    np.testing.assert_array_equal(fits, ref)
    # a range the values leave: read again in the pixel type asked for
    narrow = SimpleITKSeriesReader(output_pixel_type=sitk.sitkInt32, num_workers=2, int16_range=(0, 10))
    does_not_fit, _, _ = _read(narrow, files)
    assert does_not_fit.dtype == np.int32
    np.testing.assert_array_equal(does_not_fit, ref)


def test_threaded_reader_falls_back_to_the_series_readers_error(tmp_path: Path) -> None:
    files = sorted(ABDOMEN_DICOM.iterdir())[:4]
    small = pydicom.dcmread(CHEST_DICOM / "0.dcm")
    small.PixelData = small.pixel_array[:256, :256].copy().tobytes()
    small.Rows = small.Columns = 256
    small.save_as(tmp_path / "small.dcm")
    files[2] = tmp_path / "small.dcm"
    messages = []
    for reader in (SimpleITKSeriesReader(), SimpleITKSeriesReader(num_workers=2)):
        with pytest.raises(RuntimeError, match="Size: \\[256, 256, 1\\]") as raised:
            reader.read(files)
        messages.append(re.sub(r"0x[0-9a-f]+", "0x", str(raised.value)))  # ITK names its objects' addresses
    assert messages[0] == messages[1]
    with pytest.raises(ValueError, match="num_workers"):
        SimpleITKSeriesReader(num_workers=-1)


def test_headers_carried_from_discovery_match_headers_read_again(tmp_path: Path) -> None:
    (case,) = discover_cases(ABDOMEN_DICOM)
    assert [h.path for h in case.headers] == list(case.files) and all(h.pixel_offset for h in case.headers)
    carried = load_ct(case)
    again = load_ct(CTCase(case.case_id, case.source_path, "dicom", case.files))  # built by hand: headers read now
    assert carried.dtype == again.dtype == torch.int16
    np.testing.assert_array_equal(carried.numpy(), again.numpy())
    np.testing.assert_array_equal(carried.affine.numpy(), again.affine.numpy())
    assert {k: str(v) for k, v in carried.meta.items()} == {k: str(v) for k, v in again.meta.items()}


def test_a_file_changed_since_discovery_is_read_again(tmp_path: Path) -> None:
    folder = _dicom_copies(ABDOMEN_DICOM, tmp_path / "changed", pixels=False)
    (case,) = discover_cases(folder)
    changed = case.files[10]
    ds = pydicom.dcmread(changed)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 100.0]  # now a gap: seen only if the header is read again
    ds.PatientID = ds.PatientID + " (a longer ID)"  # another size, whatever the clock's resolution
    ds.save_as(changed)
    with pytest.raises(CaseError, match=r"changed: gap of"):
        load_ct(case)


def test_pixel_data_checked_after_the_carried_header(tmp_path: Path) -> None:
    # truncated pixel data: only the pixel data element is parsed, with the whole file's outcome
    folder = _dicom_copies(CHEST_DICOM, tmp_path / "cut")
    data = (folder / "1.dcm").read_bytes()
    (folder / "1.dcm").write_bytes(data[:-1000])
    (case,) = discover_cases(folder)
    assert case.headers[1].pixel_offset is not None
    with pytest.raises(CaseError, match=r"1\.dcm: the pixel data are cut short: 523288 bytes, while Rows 512 x"):
        load_ct(case)
    # an element after the pixel data that replaces a header element when the whole file is read (Rows 600): the
    # whole file is read, as before, and its Rows named
    folder = _dicom_copies(CHEST_DICOM, tmp_path / "rows")
    with open(folder / "1.dcm", "ab") as f:
        f.write(struct.pack("<HH2sHH", 0x0028, 0x0010, b"US", 2, 600))
    with pytest.raises(CaseError, match=r"1\.dcm: the pixel data are cut short: 524288 bytes, while Rows 600 x"):
        load_ct(discover_cases(folder)[0])

