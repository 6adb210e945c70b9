"""DICOM-SEG output: round trip onto the NIfTI grid (real JPEG-lossless series), references, and header failures."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from infnet_monai.io import discover_cases
from infnet_monai.io.dicom_seg import frame_indices, read_dicom_seg
from infnet_monai.pipeline import CTSegmenter


@pytest.fixture(scope="module")
def segmenter(tiny_model, tiny_class_model):
    return CTSegmenter(tiny_model, device="cpu", batch_slices=8, class_model_path=tiny_class_model)


def test_round_trip_on_the_real_jpeg_lossless_series(tmp_path, data_dir, segmenter):
    source = data_dir / "ct" / "covid_ct_md_P001"
    (case,) = discover_cases(source)
    assert pydicom.dcmread(case.files[0]).file_meta.TransferSyntaxUID.is_compressed
    report = segmenter.run(source, tmp_path)
    assert report.exit_code == 0
    case_dir = tmp_path / case.case_id
    stats = json.loads((case_dir / "stats.json").read_text())
    seg_path = Path(stats["dicom_seg_path"])
    assert seg_path == case_dir / "segmentation.dcm"

    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == pydicom.dcmread(case.files[0]).StudyInstanceUID
    (ref,) = seg.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == case.series_instance_uid
    referenced = {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence}
    assert referenced == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in case.files}
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["right lung", "left lung", "infection", "ground-glass opacity", "consolidation"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence][:2] == ["3341006", "44029006"]

    infection = nib.load(case_dir / "infection.nii.gz")
    lung = np.asarray(nib.load(case_dir / "lung.nii.gz").dataobj)
    classes = np.asarray(nib.load(case_dir / "infection_classes.nii.gz").dataobj)
    inf = np.asarray(infection.dataobj)
    back = read_dicom_seg(seg_path, case.files, infection.affine, inf.shape)
    np.testing.assert_array_equal(back["infection"], inf > 0)
    np.testing.assert_array_equal(back["right lung"], lung == 1)
    np.testing.assert_array_equal(back["left lung"], lung == 2)
    np.testing.assert_array_equal(back["ground-glass opacity"], classes == 1)
    np.testing.assert_array_equal(back["consolidation"], classes == 2)
    assert int(back["infection"].sum()) == int((inf > 0).sum()) > 0


def test_stripped_headers_give_a_note_and_keep_the_nifti_outputs(tmp_path, data_dir, segmenter, tiny_model):
    source = data_dir / "ct" / "chest_2slice_dicom"
    report = segmenter.run(source, tmp_path / "a")
    assert report.exit_code == 0
    case_dir = tmp_path / "a" / report.rows[0]["case_id"]
    stats = json.loads((case_dir / "stats.json").read_text())
    assert not (case_dir / "segmentation.dcm").exists() and "dicom_seg_path" not in stats
    assert any("segmentation.dcm not written" in n and "Modality" in n for n in stats["notes"])
    assert (case_dir / "infection.nii.gz").is_file() and (case_dir / "lung.nii.gz").is_file()
    # the --no-dicom-seg switch: not even tried
    CTSegmenter(tiny_model, device="cpu", batch_slices=8, classes=False, dicom_seg=False).run(source, tmp_path / "b")
    stats = json.loads((tmp_path / "b" / report.rows[0]["case_id"] / "stats.json").read_text())
    assert not any("segmentation.dcm" in n for n in stats["notes"])


def test_frames_off_the_mask_grid_are_refused():
    ds = pydicom.Dataset()
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.3], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.Rows, ds.Columns = [1.0, 1.0], 4, 4
    lps_grid = np.diag([-1.0, -1.0, 1.0, 1.0])  # voxel (i, j, k) at LPS (i, j, k): the series' own grid
    with pytest.raises(ValueError, match="does not lie on the mask grid"):  # between two slices
        frame_indices(ds, lps_grid, (4, 4, 2))
    ds.ImagePositionPatient = [0.0, 0.0, 1.0]
    i, j, k = frame_indices(ds, lps_grid, (4, 4, 2))
    assert (k == 1).all() and (i == np.arange(4)[None, :]).all() and (j == np.arange(4)[:, None]).all()
    with pytest.raises(ValueError, match="does not lie on the mask grid"):  # an RAS grid at the origin: x < 0
        frame_indices(ds, np.eye(4), (4, 4, 2))
    ras_grid = np.eye(4)
    ras_grid[:3, 3] = [-3.0, -3.0, 0.0]  # voxel (0, 0, k) at RAS (-3, -3): LPS (3, 3)
    i, j, _ = frame_indices(ds, ras_grid, (4, 4, 2))
    assert i[0, 0] == 3 and i[0, 3] == 0 and j[0, 0] == 3 and j[3, 0] == 0
