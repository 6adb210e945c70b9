"""Tests of case discovery (infnet_monai.io.cases) on temporary cohorts built from the real shared CT data."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException

from infnet_monai.io.cases import CTCase, discover_cases, instance_numbers_by_z, sanitize_case_id
from infnet_monai.io.dicom_headers import HeaderError, read_dicom_header, read_slice_header

from infnet_monai.data.paths import shared_data_dir

DATA = shared_data_dir() / "ct"
ABDOMEN_NII = DATA / "abdomen_3mm_small.nii.gz"
ABDOMEN_DICOM = DATA / "abdomen_dicom"
CHEST_DICOM = DATA / "chest_2slice_dicom"

# skips without the shared data, and fails the run when INFNET_REQUIRE_SHARED_DATA=1 (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("data_dir")


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)
    return dst


def _header_copies(src_folder: Path, dst: Path, modify=None, names=None, count: int | None = None) -> list[Path]:
    """Write header-only DICOM copies (no pixel data: discovery reads headers only)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sorted(src_folder.iterdir())[:count]):
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        if modify is not None:
            modify(ds, i)
        path = dst / (names(i) if names else src.name)
        ds.save_as(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort") / "my cohort"
    # NIfTI in nested folders with spaces and non-ASCII characters
    _link(ABDOMEN_NII, root / "Patient Ä 1" / "ct scan.nii.gz")
    _link(ABDOMEN_NII, root / "患者 3" / "ct.nii.gz")
    # id collision: "a_b" + "x" and "a" + "b_x" both give "a_b_x"
    _link(ABDOMEN_NII, root / "a_b" / "x.nii.gz")
    _link(ABDOMEN_NII, root / "a" / "b_x.nii")  # a symlink named .nii pointing to gz data: only discovery here
    # a DICOM folder with the real series plus a second, shorter series and a coronal series with more slices
    series = root / "site B" / "patient 2" / "series 1"
    for src in sorted(ABDOMEN_DICOM.iterdir()):
        _link(src, series / src.name)

    def second(ds: pydicom.Dataset, i: int) -> None:
        ds.SeriesInstanceUID = "1.2.3.4.5.6"
        ds.SeriesDescription = "short"

    _header_copies(ABDOMEN_DICOM, series, second, names=lambda i: f"short_{i:02d}.dcm", count=5)

    def coronal(ds: pydicom.Dataset, i: int) -> None:
        ds.SeriesInstanceUID = "1.2.3.4.5.7"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-250.0, -300.0 + 2.0 * i, -700.0]

    _header_copies(ABDOMEN_DICOM, series, coronal, names=lambda i: f"cor_{i:02d}", count=20)
    for i in range(20, 25):  # 25 coronal slices in all: more than the axial series
        ds = pydicom.dcmread(series / "cor_00", stop_before_pixels=True)
        ds.ImagePositionPatient = [-250.0, -300.0 + 2.0 * i, -700.0]
        ds.save_as(series / f"cor_{i:02d}")
    # MR only
    _header_copies(CHEST_DICOM, root / "mr only", lambda ds, i: setattr(ds, "Modality", "MR"))
    # hostile PatientIDs
    _header_copies(CHEST_DICOM, root / "pid1", lambda ds, i: setattr(ds, "PatientID", "../../x"))
    _header_copies(CHEST_DICOM, root / "pid2", lambda ds, i: setattr(ds, "PatientID", "a/b"))
    # headerless DICOM (no preamble, no file meta): found through the force=True fallback
    headerless = root / "headerless"
    headerless.mkdir()
    for src in sorted(CHEST_DICOM.iterdir()):
        ds = pydicom.dcmread(src)
        plain = pydicom.Dataset()
        for element in ds:
            plain.add(element)
        pydicom.dcmwrite(headerless / src.stem, plain, implicit_vr=True, little_endian=True)
    # things to ignore
    (root / "notes.txt").write_text("not an image\n")
    (root / "meta.json").write_text("{}")
    (series / "list.csv").write_text("a,b\n")
    (root / "README").write_bytes(bytes(range(256)) * 8)  # binary, no extension, not DICOM
    _link(ABDOMEN_NII, root / ".hidden" / "ct.nii.gz")
    _link(ABDOMEN_NII, root / ".dot.nii.gz")
    _link(ABDOMEN_NII, root / "__MACOSX" / "ct.nii.gz")
    # an output folder inside the input
    _link(ABDOMEN_NII, root / "output" / "abdomen_seg.nii.gz")
    return root


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../../x", "_.._x"),
        ("a/b", "a_b"),
        ("", "case"),
        ("..", "case"),
        (".", "case"),
        (".hidden", "hidden"),
        ("Müller Patient 1", "Muller_Patient_1"),
        ("患者", "__"),
        ("CON", "_CON"),
        ("ok-id_1.2", "ok-id_1.2"),
    ],
)
def test_sanitize_case_id(name: str, expected: str) -> None:
    assert sanitize_case_id(name) == expected


def test_sanitize_case_id_is_always_safe() -> None:
    for name in ["x" * 300, "/", "\\..\\..", "a\x00b", " ", "...a"]:
        out = sanitize_case_id(name)
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", out), out
        assert len(out) <= 100 and out not in (".", "..")


def test_single_nifti_file() -> None:
    cases = discover_cases(ABDOMEN_NII)
    assert cases == [CTCase("abdomen_3mm_small", ABDOMEN_NII, "nifti", (ABDOMEN_NII,))]


def test_single_dicom_folder() -> None:
    (case,) = discover_cases(ABDOMEN_DICOM)
    assert (case.case_id, case.kind, case.source_path, case.error) == ("abdomen_dicom", "dicom", ABDOMEN_DICOM, None)
    assert len(case.files) == 20
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in case.files]
    assert z == sorted(z)  # sorted along the slice normal
    assert case.series_instance_uid is None  # the real series has an empty SeriesInstanceUID


def test_stripped_two_slice_series() -> None:
    (case,) = discover_cases(CHEST_DICOM)
    assert [f.name for f in case.files] == ["0.dcm", "1.dcm"]
    assert case.patient_id is None and case.series_instance_uid.startswith("1.2.826.")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        discover_cases(tmp_path / "nope")
    with pytest.raises(ValueError, match="single DICOM file"):
        discover_cases(CHEST_DICOM / "0.dcm")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a NIfTI"):
        discover_cases(tmp_path / "x.txt")
    assert discover_cases(tmp_path) == []


def test_cohort(cohort: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="infnet_monai.io"):
        cases = discover_cases(cohort, exclude=[cohort / "output"])
    by_id = {c.case_id: c for c in cases}
    assert list(by_id) == [
        "Patient_A_1_ct_scan",
        "a_b_x",
        "a_b_x-2",
        "headerless",
        "mr_only",
        "pid1",
        "pid2",
        "site_B_patient_2_series_1",
        "___3_ct",
    ]
    assert by_id["a_b_x"].source_path == cohort / "a" / "b_x.nii"
    assert by_id["a_b_x-2"].source_path == cohort / "a_b" / "x.nii.gz"
    assert by_id["Patient_A_1_ct_scan"].files == (cohort / "Patient Ä 1" / "ct scan.nii.gz",)

    dicom = by_id["site_B_patient_2_series_1"]
    assert dicom.error is None and len(dicom.files) == 20
    assert all(f.name.startswith("CT.") for f in dicom.files)
    assert len(dicom.notes) == 2
    assert any("1.2.3.4.5.6" in n and "fewer slices" in n for n in dicom.notes)
    assert any("1.2.3.4.5.7" in n and "not axial" in n and "25 slices" in n for n in dicom.notes)
    logged = [r.getMessage() for r in caplog.records if "3 series" in r.getMessage()]
    assert logged and "chose series <no SeriesInstanceUID> (CT, axial, 20 slices" in logged[0]

    mr = by_id["mr_only"]
    assert mr.files == () and mr.error and "MR" in mr.error and "no axial CT series" in mr.error

    assert len(by_id["headerless"].files) == 2

    for key, pid in (("pid1", "../../x"), ("pid2", "a/b")):
        assert by_id[key].patient_id == pid  # kept as data ...
        safe = sanitize_case_id(pid)  # ... and made safe before any use as a path
        assert "/" not in safe and not safe.startswith(".")

    # deterministic
    assert discover_cases(cohort, exclude=[cohort / "output"]) == cases


def test_output_folder_inside_input_is_excluded(cohort: Path) -> None:
    ids = {c.case_id for c in discover_cases(cohort)}
    assert "output_abdomen_seg" in ids
    ids = {c.case_id for c in discover_cases(cohort, exclude=[str(cohort / "output")])}
    assert "output_abdomen_seg" not in ids


def test_read_dicom_header(cohort: Path) -> None:
    assert read_dicom_header(cohort / "README") is None
    assert read_dicom_header(cohort / "notes.txt") is None
    assert read_dicom_header(cohort / "headerless" / "0").Rows == 512


def test_discovery_carries_each_files_header_fields() -> None:
    (case,) = discover_cases(ABDOMEN_DICOM)
    assert [h.path for h in case.headers] == list(case.files)  # one per file, in the files' order
    for path, header in zip(case.files, case.headers):
        ds = pydicom.dcmread(path)
        st = path.stat()
        assert header.stamp == (st.st_size, st.st_mtime_ns) and header.is_current()
        assert header.position == tuple(float(v) for v in ds.ImagePositionPatient)
        assert header.orientation == tuple(float(v) for v in ds.ImageOrientationPatient)
        assert (header.rows, header.columns, header.frames, header.modality) == (512, 512, 1, "CT")
        assert header.pixel_format == (512, 512, 16, 1, int(ds.BitsStored), 1)
        assert header.transfer_syntax == ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        with open(path, "rb") as f:  # the pixel data element starts where the header read stopped
            f.seek(header.pixel_offset)
            assert f.read(4) == b"\xe0\x7f\x10\x00"
    # the same numbers as reading the headers again; headers are not part of a case's equality
    assert instance_numbers_by_z(case) == instance_numbers_by_z(case.files) and len(instance_numbers_by_z(case)) == 20
    assert case == dataclasses.replace(case, headers=()) and "headers" not in repr(case)


def test_a_header_field_that_fails_to_read_fails_where_it_is_used(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CHEST_DICOM / "0.dcm")
    element = ds.get_item(0x00280100)  # BitsAllocated, US: one byte is not a value
    ds[0x00280100] = RawDataElement(element.tag, "US", 1, b"\x01", 0, False, True)
    ds.save_as(tmp_path / "0.dcm")
    header = read_slice_header(tmp_path / "0.dcm")
    assert isinstance(header.pixel_format, HeaderError) and header.modality is None  # read, not raised
    with pytest.raises(BytesLengthException):  # what reading BitsAllocated from the dataset raises
        header.field("pixel_format")
    assert header.field("rows") == 512
    assert read_slice_header(tmp_path / "missing.dcm") is None


# ---------------------------------------------------------------------------------------------------------------------
# only CT: what is not a CT volume is passed over with its reason (issue 33)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DOSE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.67"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _dose_report(path: Path) -> Path:
    """A valid X-Ray Radiation Dose SR (no image), as scanners export beside the series."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = DOSE_SR_STORAGE, pydicom.uid.generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.PatientID = "SR", pydicom.uid.generate_uid(), "p"
    ds.ValueType, ds.ContentSequence = "CONTAINER", []
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_chest_without_modality_is_found_as_ct_by_its_sop_class() -> None:
    (case,) = discover_cases(CHEST_DICOM)
    assert pydicom.dcmread(CHEST_DICOM / "0.dcm", stop_before_pixels=True).get("Modality") is None
    assert case.error is None and len(case.files) == 2 and case.notes == ()


def test_mr_sop_class_without_modality_is_not_ct(tmp_path: Path) -> None:
    _header_copies(CHEST_DICOM, tmp_path / "mr", lambda ds, i: setattr(ds, "SOPClassUID", MR_IMAGE_STORAGE))
    (case,) = discover_cases(tmp_path / "mr")
    assert case.files == () and "no axial CT series" in case.error and "(MR, axial, 2 slices" in case.error
    # beside a CT series it is an ignored series, not CT
    _header_copies(CHEST_DICOM, tmp_path / "both", names=lambda i: f"ct{i}.dcm")

    def mr(ds: pydicom.Dataset, i: int) -> None:
        ds.SOPClassUID, ds.SeriesInstanceUID = MR_IMAGE_STORAGE, "1.2.3.9"
        ds.ImagePositionPatient = [0.0, 0.0, 100.0 + i]

    _header_copies(CHEST_DICOM, tmp_path / "both", mr, names=lambda i: f"mr{i}.dcm")
    (case,) = discover_cases(tmp_path / "both")
    assert [f.name for f in case.files] == ["ct0.dcm", "ct1.dcm"]
    assert any("1.2.3.9 (MR" in n and n.endswith("not CT") for n in case.notes)


def test_localizer_secondary_capture_and_dose_report_are_passed_over(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _header_copies(CHEST_DICOM, folder)

    def localizer(ds: pydicom.Dataset, i: int) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesInstanceUID = "1.2.3.1"

    _header_copies(CHEST_DICOM, folder, localizer, names=lambda i: f"scout{i}.dcm", count=1)
    _header_copies(CHEST_DICOM, folder, lambda ds, i: setattr(ds, "SOPClassUID", SECONDARY_CAPTURE),
                   names=lambda i: "dose page.dcm", count=1)  # fmt: skip
    _dose_report(folder / "rdsr.dcm")
    skipped: list[tuple[Path, str]] = []
    (case,) = discover_cases(folder, skipped=skipped)
    assert case.error is None and [f.name for f in case.files] == ["0.dcm", "1.dcm"] and case.dropped == ()
    reasons = {p.name: r for p, r in skipped}
    assert reasons["scout0.dcm"] == "a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER), not a CT volume"
    assert reasons["dose page.dcm"].startswith("a secondary capture (Secondary Capture Image Storage")
    assert reasons["rdsr.dcm"] == "a radiation dose report (X-Ray Radiation Dose SR Storage), not an image"
    # alone in a folder they make no case (and no error row unless --strict makes the passed-over paths rows)
    skipped.clear()
    only = tmp_path / "only"
    _dose_report(only / "rdsr.dcm")
    _header_copies(CHEST_DICOM, only, localizer, names=lambda i: f"scout{i}.dcm")
    assert discover_cases(only, skipped=skipped) == [] and len(skipped) == 3
    with pytest.raises(ValueError, match="a radiation dose report .* not an image"):  # given as the input itself
        discover_cases(only / "rdsr.dcm")


def test_derived_series_is_taken_only_without_an_original(tmp_path: Path) -> None:
    folder = tmp_path / "mpr"
    _header_copies(CHEST_DICOM, folder)

    def mpr(ds: pydicom.Dataset, i: int) -> None:
        ds.ImageType, ds.SeriesInstanceUID = ["DERIVED", "SECONDARY", "MPR"], "1.2.3.2"
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], 500.0 + i]

    for k in range(3):  # 6 derived slices: more than the original's 2
        _header_copies(CHEST_DICOM, folder, lambda ds, i, k=k: mpr(ds, 2 * k + i), names=lambda i, k=k: f"mpr{k}{i}")
    (case,) = discover_cases(folder)
    assert [f.name for f in case.files] == ["0.dcm", "1.dcm"]
    (note,) = case.notes
    assert "1.2.3.2" in note and "derived (ImageType DERIVED\\SECONDARY\\MPR), and the folder holds an original" in note
    for f in ("0.dcm", "1.dcm"):
        (folder / f).unlink()
    (case,) = discover_cases(folder)
    assert len(case.files) == 6 and case.notes == ()


def test_a_tie_is_not_called_fewer_slices(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "phases"
    _header_copies(CHEST_DICOM, folder, lambda ds, i: setattr(ds, "SeriesInstanceUID", "1.2.3.4"), names=str)
    _header_copies(CHEST_DICOM, folder, lambda ds, i: setattr(ds, "SeriesInstanceUID", "1.2.3.5"),
                   names=lambda i: f"c{i}")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="infnet_monai.io"):
        (case,) = discover_cases(folder)
    assert case.series_instance_uid == "1.2.3.4"
    (note,) = case.notes
    assert "1.2.3.5" in note and "fewer slices" not in note and "as many slices (2) as the chosen series: a tie" in note
    assert any("tie at 2 slices" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "body_part, noted",
    [("HEAD", True), ("ABDOMEN", True), ("PELVIS", True), ("CHEST", False), ("CHEST_ABDOMEN", False),
     ("THORAX", False), ("LUNG", False), ("WHOLEBODY", False), ("", False)],
)  # fmt: skip
def test_body_part_other_than_the_chest_is_a_note(tmp_path: Path, body_part: str, noted: bool) -> None:
    _header_copies(CHEST_DICOM, tmp_path / "s", lambda ds, i: setattr(ds, "BodyPartExamined", body_part))
    (case,) = discover_cases(tmp_path / "s")
    assert case.error is None and len(case.files) == 2
    assert case.notes == ((f"BodyPartExamined is {body_part!r}, not the chest: check that the scan covers the lungs",)
                          if noted else ())  # fmt: skip


def test_devices_and_fifos_are_named_as_such(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _link(ABDOMEN_NII, cohort / "ct.nii.gz")
    os.mkfifo(cohort / "pipe.nii.gz")
    os.symlink("/dev/zero", cohort / "zero.nii.gz")
    os.symlink(cohort / "missing.nii.gz", cohort / "broken.nii.gz")
    skipped: list[tuple[Path, str]] = []
    assert [c.case_id for c in discover_cases(cohort, skipped=skipped)] == ["ct"]
    reasons = {p.name: r for p, r in skipped}
    assert reasons == {
        "pipe.nii.gz": "a FIFO (named pipe), not a regular file",
        "zero.nii.gz": "a device (through a link), not a regular file",
        "broken.nii.gz": "broken link",
    }
    with pytest.raises(ValueError, match="a FIFO .named pipe., not a regular file nor a folder"):
        discover_cases(cohort / "pipe.nii.gz")
    with pytest.raises(ValueError, match="/dev/zero: a device, not a regular file"):
        discover_cases("/dev/zero")
    with pytest.raises(FileNotFoundError, match="a broken link"):
        discover_cases(cohort / "broken.nii.gz")
