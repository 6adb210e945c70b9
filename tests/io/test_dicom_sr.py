"""DICOM SR measurement report: values against the stats row (read back two ways), references to the DICOM-SEG, the
source study, left-out NaNs, class segments, anonymised headers, atomic writing and refused inputs.

Everything runs on a small synthetic CT series written here (odd sizes, anisotropic pixels), its masks and the row
the burden functions compute from them.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from infnet_monai.io.dicom_seg import write_dicom_seg
from infnet_monai.io.dicom_sr import DICOM_SR_FILE, SR_MEASUREMENTS, read_dicom_sr, write_dicom_sr
from infnet_monai.stats.burden import class_burden, infection_burden
from infnet_monai.stats.zones import ZONES_WITHHELD_LUNGS_CUT

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
ROWS, COLUMNS, SLICES = 12, 11, 5
PIXEL_SPACING = (0.8, 0.7)  # (row, column) spacing, mm
SLICE_MM = 2.5
VERSION, MODEL = "9.9.9-test", "tiny-infnet.pt"
ANONYMISED_AWAY = ("PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "AccessionNumber")

# The concepts the SR should use, written out independently of the module: (code, scheme, finding site) -> row key
EXPECTED = {
    "right lung": {("118565006", "SCT", None): "right_lung_volume_ml"},
    "left lung": {("118565006", "SCT", None): "left_lung_volume_ml"},
    "infection": {
        ("118565006", "SCT", None): "infection_volume_ml",
        ("LUNGINVOLVED", "99INFNET", "39607008"): "infection_percent",
        ("LUNGINVOLVED", "99INFNET", "3341006"): "right_lung_infection_percent",
        ("LUNGINVOLVED", "99INFNET", "44029006"): "left_lung_infection_percent",
        ("246206008", "SCT", None): "lesion_count",
    },
    "ground-glass opacity": {
        ("118565006", "SCT", None): "ggo_volume_ml", ("LUNGINVOLVED", "99INFNET", "39607008"): "ggo_percent",
    },
    "consolidation": {
        ("118565006", "SCT", None): "consolidation_volume_ml",
        ("LUNGINVOLVED", "99INFNET", "39607008"): "consolidation_percent",
    },
}
UNITS = {"118565006": "ml", "LUNGINVOLVED": "%", "246206008": "{lesions}"}


def _write_series(folder: Path, drop: tuple[str, ...] = ()) -> list[Path]:
    """A CT series of SLICES axial images, LPS position (0, 0, k * SLICE_MM); ``drop`` removes header attributes."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "synthetic", 3, k + 1
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "P-042", "19700101", "F"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200401", "101010", "S1", "ACC-1"
        ds.ReferringPhysicianName = ""
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, k * SLICE_MM], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = list(PIXEL_SPACING), SLICE_MM
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((ROWS, COLUMNS), 200, dtype=np.int16).tobytes()
        for name in drop:
            delattr(ds, name)
        path = folder / f"im{k:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


# voxel (i, j, k) of the masks lies at LPS (i * column spacing, j * row spacing, k * SLICE_MM): column i, row j, slice k
AFFINE = np.diag([-PIXEL_SPACING[1], -PIXEL_SPACING[0], SLICE_MM, 1.0])
SPACING_MM = (PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_MM)


def _masks(left_lung: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = (COLUMNS, ROWS, SLICES)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[1:5, 2:10, :] = 1
    if left_lung:
        lung[6:10, 2:10, 1:] = 2
    infection = np.zeros(shape, dtype=np.uint8)
    infection[1:3, 2:4, 0:2] = 1  # three lesions, 26-separated; two in the right lung
    infection[3:5, 7:10, 3:5] = 1
    classes = np.zeros(shape, dtype=np.uint8)
    classes[infection > 0] = 1
    classes[3:5, 7:10, 4] = 2
    if left_lung:
        infection[7:9, 4:6, 2:4] = 1
        classes[7:9, 4:6, 2:4] = 2
    return lung, infection, classes


def _row(lung, infection, classes) -> dict:
    row = dict(infection_burden(infection, lung, SPACING_MM))
    if classes is not None:
        row.update(class_burden(classes, lung, SPACING_MM))
    return row


def _case(folder: Path, classes: bool = True, left_lung: bool = True, drop: tuple[str, ...] = ()):
    """Series, SEG and row of one synthetic case under ``folder``."""
    files = _write_series(folder / "series", drop)
    lung, infection, class_map = _masks(left_lung)
    class_map = class_map if classes else None
    seg = write_dicom_seg(folder / "out" / "segmentation.dcm", files, AFFINE, lung, infection, class_map, VERSION)
    return files, seg, _row(lung, infection, class_map)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A case with both lungs, three lesions and a class map, and its SR."""
    folder = tmp_path_factory.mktemp("sr_case")
    files, seg, row = _case(folder)
    sr = write_dicom_sr(folder / "out" / DICOM_SR_FILE, seg, files, row, VERSION, MODEL)
    return files, seg, row, sr


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def _code(item) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return str(c.CodeValue), str(c.CodingSchemeDesignator)


def _walk(ds: pydicom.Dataset) -> dict:
    """The measurement groups of an SR, read with pydicom only: {tracking id: {"ref": (uid, number), "num": {...}}}."""
    (imaging,) = [i for i in ds.ContentSequence if _code(i) == ("126010", "DCM")]  # Imaging Measurements
    groups = {}
    for group in imaging.ContentSequence:
        assert _code(group) == ("125007", "DCM") and group.ContentTemplateSequence[0].TemplateIdentifier == "1411"
        items = list(group.ContentSequence)
        (label,) = [str(i.TextValue) for i in items if _code(i) == ("112039", "DCM")]
        (image,) = [i for i in items if i.ValueType == "IMAGE" and _code(i) == ("121191", "DCM")]
        ref = image.ReferencedSOPSequence[0]
        num = {}
        for item in (i for i in items if i.ValueType == "NUM"):
            children = list(item.get("ContentSequence", []))
            sites = [str(c.ConceptCodeSequence[0].CodeValue) for c in children if _code(c) == ("363698007", "SCT")]
            texts = {_code(c)[0]: [] for c in children if c.ValueType == "TEXT"}
            for c in children:
                if c.ValueType == "TEXT":
                    texts[_code(c)[0]].append(str(c.TextValue))
            measured = item.MeasuredValueSequence[0]
            key = (*_code(item), sites[0] if sites else None)
            assert key not in num, f"{label}: {key} reported twice"
            num[key] = (float(measured.NumericValue), str(measured.MeasurementUnitsCodeSequence[0].CodeValue), texts)
        groups[label] = {
            "ref": (
                str(ref.ReferencedSOPInstanceUID), str(ref.ReferencedSOPClassUID), int(ref.ReferencedSegmentNumber)
            ),
            "num": num,
        }
    return groups


def _seg_numbers(seg_path: Path) -> dict[str, int]:
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    return {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}


@pytest.mark.parametrize("as_dataset", [False, True], ids=["seg-path", "seg-dataset"])
def test_read_dicom_sr_gives_back_the_row(tmp_path, case, as_dataset):
    files, seg_path, row, sr_path = case
    if as_dataset:  # the same SEG handed over in memory
        sr_path = write_dicom_sr(tmp_path / DICOM_SR_FILE, pydicom.dcmread(seg_path), files, row, VERSION, MODEL)
    back = read_dicom_sr(sr_path)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    assert back["segmentation_sop_instance_uid"] == seg.SOPInstanceUID
    assert back["segment_numbers"] == _seg_numbers(seg_path) == {
        "right lung": 1, "left lung": 2, "infection": 3, "ground-glass opacity": 4, "consolidation": 5,
    }
    assert back["algorithm"] == {"name": "infnet-monai", "version": VERSION, "parameters": [f"model={MODEL}"]}
    assert set(back["measurements"]) == set(SR_MEASUREMENTS)
    compared = 0
    for label, names in SR_MEASUREMENTS.items():
        assert set(back["measurements"][label]) == set(names)  # every row value is finite in this case
        for name, key in names.items():
            value, unit = back["measurements"][label][name]
            if key == "lesion_count":
                assert value == row[key] == 3 and isinstance(value, int) and unit == "{lesions}"
            else:
                assert value == pytest.approx(row[key], abs=0.01) and unit == ("ml" if name == "volume" else "%")
            compared += 1
    assert compared == 11


def test_sr_read_independently_with_pydicom_and_highdicom(case):
    files, seg_path, row, sr_path = case
    ds = pydicom.dcmread(sr_path)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)

    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR and ds.file_meta.MediaStorageSOPClassUID == COMPREHENSIVE_3D_SR
    assert ds.Modality == "SR" and ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert _code(ds) == ("126000", "DCM")  # Imaging Measurement Report
    assert ds.StudyInstanceUID == source.StudyInstanceUID == seg.StudyInstanceUID
    assert ds.SeriesInstanceUID not in (source.SeriesInstanceUID, seg.SeriesInstanceUID)
    patient = (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.AccessionNumber)
    assert patient == ("P-042", "Test^Patient", "19700101", "ACC-1")
    (procedure,) = [i for i in ds.ContentSequence if _code(i) == ("121058", "DCM")]  # Procedure reported
    code = procedure.ConceptCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("24627-2", "LN")
    assert [s.CodingSchemeDesignator for s in ds.CodingSchemeIdentificationSequence] == ["99INFNET"]
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence and str(source.SOPInstanceUID) in evidence

    groups = _walk(ds)
    assert set(groups) == set(EXPECTED)
    numbers = _seg_numbers(seg_path)
    n_values = 0
    for label, expected in EXPECTED.items():
        assert groups[label]["ref"] == (seg.SOPInstanceUID, seg.SOPClassUID, numbers[label])
        assert set(groups[label]["num"]) == set(expected)
        for key, row_key in expected.items():
            value, unit, algorithm = groups[label]["num"][key]
            assert unit == UNITS[key[0]]
            assert value == (row[row_key] if row_key == "lesion_count" else pytest.approx(row[row_key], abs=0.01))
            # TID 4019 on every measurement: name, version, the model as a parameter
            assert algorithm == {"111001": ["infnet-monai"], "111003": [VERSION], "111002": [f"model={MODEL}"]}
            n_values += 1
    assert n_values == 11

    parsed = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert isinstance(parsed.content, hd.sr.MeasurementReport)
    hd_groups = parsed.content.get_volumetric_roi_measurement_groups(referenced_sop_instance_uid=seg.SOPInstanceUID)
    assert len(hd_groups) == 5
    by_label = {g.tracking_identifier: g for g in hd_groups}
    for s in seg.SegmentSequence:
        group = by_label[str(s.SegmentLabel)]
        assert group.finding_type.value == s.SegmentedPropertyTypeCodeSequence[0].CodeValue
        assert group.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber == s.SegmentNumber
    volumes = by_label["infection"].get_measurements(name=hd.sr.CodedConcept("118565006", "SCT", "Volume"))
    assert [m.value for m in volumes] == [pytest.approx(row["infection_volume_ml"], abs=0.01)]


def test_nan_and_missing_values_are_left_out(tmp_path):
    files, seg_path, row = _case(tmp_path, left_lung=False)
    assert math.isnan(row["left_lung_infection_percent"]) and row["left_lung_volume_ml"] == 0.0
    row = {**row, "consolidation_percent": None}  # JSON null, as stats.json stores NaN
    del row["lesion_count"]
    sr_path = write_dicom_sr(tmp_path / DICOM_SR_FILE, seg_path, files, row, VERSION)
    back = read_dicom_sr(sr_path)
    infection = back["measurements"]["infection"]
    assert "left lung involvement" not in infection and "lesion count" not in infection
    assert infection["right lung involvement"][0] == pytest.approx(row["right_lung_infection_percent"], abs=0.01)
    assert back["measurements"]["consolidation"] == {"volume": (pytest.approx(row["consolidation_volume_ml"]), "ml")}
    assert back["measurements"]["left lung"] == {"volume": (0.0, "ml")}  # an empty lung has volume 0, reported
    assert back["algorithm"]["parameters"] == []  # no model name given
    groups = _walk(pydicom.dcmread(sr_path))
    n_reported = sum(len(g["num"]) for g in groups.values())
    n_finite = sum(_finite(row.get(k)) for keys in EXPECTED.values() for k in keys.values())
    assert n_reported == n_finite == 8
    # the empty left-lung segment has no frames in the SEG: still referenced, by segment number and source series
    assert groups["left lung"]["ref"][2] == 2
    (left,) = [
        g for g in hd.sr.srread(sr_path).content.get_volumetric_roi_measurement_groups()
        if g.tracking_identifier == "left lung"
    ]
    reference = left.referenced_segment
    assert not reference.has_source_images() and reference.referenced_segment_numbers == [2]
    assert reference.source_series_for_segmentation.value == pydicom.dcmread(files[0]).SeriesInstanceUID


def test_withheld_zones_and_nodule_like_lesions_are_not_measurements(tmp_path, case):
    """A scan that cuts the lungs has no zone figures (``None``, with the reason): the SR, which reports no zone
    figure, is the same as with them; nor are the nodule-like lesions of the row measurements."""
    files, seg_path, row, sr_path = case
    with_zones = {**row, "zone_score": 12, "right_upper_infection_percent": 4.5, "zones": {"right_upper": {"score": 1}}}
    withheld = {
        **row, "zone_score": None, "zones": None, "right_upper_infection_percent": None,
        "zones_withheld": ZONES_WITHHELD_LUNGS_CUT,
        "nodule_like_lesions": [{"lesion_id": 4, "volume_ml": 0.5, "centroid_lps_mm": [1.0, 2.0, 3.0],
                                 "largest_axial_diameter_mm": 9.0, "lung_side": "right"}],
    }  # fmt: skip
    reports = [
        read_dicom_sr(write_dicom_sr(tmp_path / name / DICOM_SR_FILE, seg_path, files, r, VERSION, MODEL))
        for name, r in (("zones", with_zones), ("withheld", withheld))
    ]
    assert reports[0]["measurements"] == reports[1]["measurements"] == read_dicom_sr(sr_path)["measurements"]
    assert {label: set(m) for label, m in reports[1]["measurements"].items()} == {
        label: set(names) for label, names in SR_MEASUREMENTS.items()
    }


@pytest.mark.parametrize("classes", [True, False], ids=["class-map", "no-class-map"])
def test_class_segments_only_with_a_class_map(tmp_path, classes):
    files, seg_path, row = _case(tmp_path, classes=classes)
    back = read_dicom_sr(write_dicom_sr(tmp_path / DICOM_SR_FILE, seg_path, files, row, VERSION))
    labels = ["right lung", "left lung", "infection"] + (["ground-glass opacity", "consolidation"] if classes else [])
    assert list(back["measurements"]) == labels
    assert list(back["segment_numbers"].values()) == list(range(1, len(labels) + 1))
    if classes:
        ggo, consolidation = back["measurements"]["ground-glass opacity"], back["measurements"]["consolidation"]
        assert ggo["volume"][0] == pytest.approx(row["ggo_volume_ml"], abs=0.01)
        assert consolidation["lung involvement"][0] == pytest.approx(row["consolidation_percent"], abs=0.01)
    else:
        assert not any("ggo" in k or "consolidation" in k for k in row)


def test_anonymised_series_without_type2_attributes(tmp_path):
    files, seg_path, row = _case(tmp_path, drop=ANONYMISED_AWAY)
    assert "PatientName" not in pydicom.dcmread(files[0], stop_before_pixels=True)
    sr_path = write_dicom_sr(tmp_path / DICOM_SR_FILE, seg_path, files, row, VERSION)
    ds = pydicom.dcmread(sr_path)
    for name in ANONYMISED_AWAY:  # type 2: present, empty
        assert name in ds and str(ds[name].value or "") == "", name
    assert ds.PatientID == "P-042" and ds.StudyInstanceUID == pydicom.dcmread(files[0]).StudyInstanceUID
    assert read_dicom_sr(sr_path)["measurements"]["infection"]["lesion count"] == (3, "{lesions}")


@pytest.mark.parametrize("complete", [False, True], ids=["incomplete-item-only", "beside-a-complete-item"])
def test_incomplete_study_references_are_left_out(tmp_path, complete):
    # some archives' series carry a Referenced Study Sequence item without its type-1 Referenced SOP Class UID;
    # copied into the SEG and the SR as it is, it makes both invalid
    files = _write_series(tmp_path / "series")
    kept = Dataset()
    kept.ReferencedSOPClassUID, kept.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", generate_uid()
    broken = Dataset()
    broken.ReferencedSOPInstanceUID = generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ReferencedStudySequence = [kept, broken] if complete else [broken]
        ds.save_as(f)
    lung, infection, classes = _masks()
    seg = write_dicom_seg(tmp_path / "out" / "segmentation.dcm", files, AFFINE, lung, infection, classes, VERSION)
    sr = write_dicom_sr(tmp_path / "out" / DICOM_SR_FILE, seg, files, _row(lung, infection, classes), VERSION)
    for path in (seg, sr):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if complete:
            (item,) = ds.ReferencedStudySequence
            assert item.ReferencedSOPInstanceUID == kept.ReferencedSOPInstanceUID
        else:
            assert "ReferencedStudySequence" not in ds
        if shutil.which("dciodvfy") is not None:
            result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
            assert errors == [], "\n".join(errors)
    assert len(pydicom.dcmread(files[0]).ReferencedStudySequence) == (2 if complete else 1)  # the files untouched


def test_written_atomically(tmp_path, case, monkeypatch):
    files, seg_path, row, _ = case
    out = tmp_path / "case"
    path = write_dicom_sr(out / DICOM_SR_FILE, seg_path, files, row, VERSION)
    assert path == out / DICOM_SR_FILE and sorted(p.name for p in out.iterdir()) == [DICOM_SR_FILE]
    before = path.read_bytes()

    def broken_save(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(hd.sr.Comprehensive3DSR, "save_as", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_sr(out / DICOM_SR_FILE, seg_path, files, row, VERSION)
    assert sorted(p.name for p in out.iterdir()) == [DICOM_SR_FILE]  # no temporary file left
    assert path.read_bytes() == before  # the earlier report is intact


def _without_infection(seg_path, files, row):
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    del seg.SegmentSequence[2]
    return seg, files, row


def _classes_without_class_map(seg_path, files, row):
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    seg.SegmentSequence = seg.SegmentSequence[:3]
    return seg, files, row


def _image_as_seg(seg_path, files, row):
    return files[0], files, row


def _other_study(seg_path, files, row):
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    seg.StudyInstanceUID = generate_uid()
    return seg, files, row


def _text_value(seg_path, files, row):
    return seg_path, files, {**row, "infection_volume_ml": "a lot"}


@pytest.mark.parametrize(
    "make, match",
    [
        (_without_infection, "lacks the segment.*'infection'"),
        (_classes_without_class_map, "no 'ground-glass opacity' segment.*ggo_volume_ml"),
        (_image_as_seg, "is not a DICOM Segmentation"),
        (_other_study, "belongs to study"),
        (_text_value, "infection_volume_ml='a lot' is not a number"),
    ],
    ids=["no-infection-segment", "row-has-classes-seg-not", "not-a-seg", "other-study", "text-value"],
)
def test_refused_inputs(tmp_path, case, make, match):
    files, seg_path, row, _ = case
    segmentation, sources, bad_row = make(seg_path, files, row)
    with pytest.raises(ValueError, match=match):
        write_dicom_sr(tmp_path / DICOM_SR_FILE, segmentation, sources, bad_row, VERSION)
    assert list(tmp_path.iterdir()) == []


def test_read_refuses_what_is_not_a_measurement_report(case):
    files, seg_path, _, _ = case
    for path in (files[0], seg_path):
        with pytest.raises(ValueError, match="not a readable DICOM SR"):
            read_dicom_sr(path)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_error(case):
    result = subprocess.run(["dciodvfy", str(case[3])], capture_output=True, text=True, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], "\n".join(errors)


def test_headers_read_once_for_seg_and_sr(tmp_path, monkeypatch):
    """The pipeline's writers read the source headers once for the SEG and the SR of a case: both objects are the
    ones written from headers read apart (UIDs and times aside), and the shared headers come back unchanged."""
    from infnet_monai.io import dicom_seg as seg_module
    from infnet_monai.pipeline import writer as writer_module

    files = _write_series(tmp_path / "series")
    lung, infection, classes = _masks()
    row = _row(lung, infection, classes)
    apart_seg = write_dicom_seg(tmp_path / "apart" / "segmentation.dcm", files, AFFINE, lung, infection, classes, VERSION)
    apart_sr = write_dicom_sr(tmp_path / "apart" / DICOM_SR_FILE, apart_seg, files, row, VERSION, MODEL)

    reads = []
    monkeypatch.setattr(writer_module, "read_source_headers", lambda f: reads.append(f) or seg_module.read_source_headers(f))
    headers = writer_module.SourceHeaders()
    shared = headers(files)
    before = [ds.to_json_dict() for ds in shared]
    seg = write_dicom_seg(tmp_path / "shared" / "segmentation.dcm", files, AFFINE, lung, infection, classes, VERSION,
                          source_headers=headers(files))
    sr = write_dicom_sr(tmp_path / "shared" / DICOM_SR_FILE, seg, files, row, VERSION, MODEL, source_headers=headers(files))
    assert len(reads) == 1
    assert [ds.to_json_dict() for ds in headers(files)] == before
    outputs = writer_module.CaseWriter.default(VERSION).outputs  # the pipeline's SEG and SR share one reader
    seg_out, sr_out = (next(o for o in outputs if isinstance(o, k))
                       for k in (writer_module.DicomSegmentation, writer_module.DicomMeasurementReport))
    assert seg_out.headers is sr_out.headers

    def content(path):
        ds = pydicom.dcmread(path)
        skip = {"SOPInstanceUID", "SeriesInstanceUID", "ContentDate", "ContentTime", "SeriesDate", "SeriesTime",
                "InstanceCreationDate", "InstanceCreationTime", "UID", "ReferencedSOPInstanceUID", "DateTime",
                "MediaStorageSOPInstanceUID", "DimensionOrganizationUID", "ContributionDateTime"}

        def walk(d):
            return {e.keyword: ([walk(i) for i in e.value] if e.VR == "SQ" else e.value)
                    for e in d if e.keyword not in skip}

        return walk(ds)

    assert content(seg) == content(apart_seg)
    assert content(sr) == content(apart_sr)
    with pytest.raises(ValueError, match="source headers given"):
        write_dicom_sr(tmp_path / "short.dcm", seg, files, row, VERSION, MODEL, source_headers=shared[:-1])
