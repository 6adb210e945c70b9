"""DICOM-SEG output: round trip onto the NIfTI grid (real JPEG-lossless series), references, and header failures; the
frame mapping's two paths (plain slices of the mask, the general per-pixel index) on synthetic geometries, and the
overlap check that stands in for highdicom's."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import infnet_monai.io.dicom_seg as dicom_seg
from infnet_monai.io import discover_cases
from infnet_monai.io.dicom_seg import frame_indices, read_dicom_seg, write_dicom_seg
from infnet_monai.pipeline import CTSegmenter
from infnet_monai.testing.asserts import assert_masks_equal
from infnet_monai.testing.dicom import write_dicom_series


@pytest.fixture(scope="module")
def segmenter(tiny_model, tiny_class_model):
    return CTSegmenter(tiny_model, device="cpu", batch_slices=8, class_model_path=tiny_class_model)


def _mid_chest_run(series: Path, folder: Path, n: int = 40) -> Path:
    """``n`` consecutive slices from the middle of a real series (the files themselves, copied): still the real
    encoding and headers, a quarter of the work of the whole scan."""
    (case,) = discover_cases(series)
    files = case.files  # in slice order
    folder.mkdir()
    start = (len(files) - n) // 2
    for f in files[start : start + n]:
        shutil.copy(f, folder / f.name)
    return folder


def test_round_trip_on_the_real_jpeg_lossless_series(tmp_path, data_dir, segmenter):
    source = _mid_chest_run(data_dir / "ct" / "covid_ct_md_P001", tmp_path / "P001 mid-chest")
    (case,) = discover_cases(source)
    assert len(case.files) == 40
    assert pydicom.dcmread(case.files[0]).file_meta.TransferSyntaxUID.is_compressed
    report = segmenter.run(source, tmp_path / "out")
    assert report.exit_code == 0
    case_dir = tmp_path / "out" / case.case_id
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
    assert_masks_equal(back["infection"], inf > 0)
    assert_masks_equal(back["right lung"], lung == 1)
    assert_masks_equal(back["left lung"], lung == 2)
    assert_masks_equal(back["ground-glass opacity"], classes == 1)
    assert_masks_equal(back["consolidation"], classes == 2)
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


# ------------------------------------------------------------------------------------------- frame mapping, synthetic
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ROWS, COLUMNS, SLICES = 7, 5, 4
AXIAL, CORONAL, SAGITTAL = (1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1)
TILT = np.radians(20.0)
OBLIQUE = (np.cos(TILT), np.sin(TILT), 0.0, -np.sin(TILT) * 0.6, np.cos(TILT) * 0.6, -0.8)  # rotated and tilted


def _header(position, orientation, spacing=(0.8, 0.7), rows=ROWS, columns=COLUMNS) -> pydicom.Dataset:
    """The geometry of a source image: ``spacing`` is (row spacing, column spacing), mm."""
    ds = pydicom.Dataset()
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [float(v) for v in position], [float(v) for v in orientation]
    ds.PixelSpacing, ds.Rows, ds.Columns = list(spacing), rows, columns
    return ds


def _series(orientation, order, flips, spacing=(0.8, 0.7), slice_mm=2.5):
    """Headers of a series of SLICES images and the mask grid (RAS affine, shape) that holds them: the series' own
    (column, row, slice) grid with its axes put in ``order`` and those in ``flips`` reversed."""
    col_dir, row_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(col_dir, row_dir)
    origin = np.array([12.0, -30.0, 40.0])
    headers = [_header(origin + k * slice_mm * normal, orientation, spacing) for k in range(SLICES)]
    own = np.eye(4)  # (column, row, slice) -> LPS
    own[:3, :3] = np.stack([col_dir * spacing[1], row_dir * spacing[0], normal * slice_mm], axis=1)
    own[:3, 3] = origin
    sizes = (COLUMNS, ROWS, SLICES)
    to_own = np.zeros((4, 4))  # mask voxel -> (column, row, slice)
    to_own[3, 3] = 1.0
    for axis, source in enumerate(order):
        to_own[source, axis] = -1.0 if flips[axis] else 1.0
        to_own[source, 3] = sizes[source] - 1 if flips[axis] else 0.0
    return headers, LPS_TO_RAS @ own @ to_own, tuple(sizes[a] for a in order)


@pytest.mark.parametrize(
    "orientation", [AXIAL, CORONAL, SAGITTAL, OBLIQUE], ids=["axial", "coronal", "sagittal", "oblique"]
)
@pytest.mark.parametrize(
    "order, flips",
    [((0, 1, 2), (False, False, False)), ((0, 1, 2), (True, True, False)), ((1, 0, 2), (False, True, True)),
     ((2, 0, 1), (True, False, True))],
    ids=["own-grid", "flipped-in-plane", "transposed-flipped", "slices-first"],
)
def test_plain_slices_give_the_frames_of_the_per_pixel_index(orientation, order, flips):
    headers, affine, shape = _series(orientation, order, flips)
    mask = np.random.default_rng(7).integers(0, 3, size=shape)
    to_voxel = np.linalg.inv(affine)
    for ds in headers:
        plain = dicom_seg._frame_slices(ds, to_voxel, shape)
        assert plain is not None, "an image on the mask's axes should be a plain slice"
        index, transposed = plain
        frame = mask[index].T if transposed else mask[index]
        assert frame.shape == (ROWS, COLUMNS) and np.shares_memory(frame, mask)  # a view, not a copy
        np.testing.assert_array_equal(frame, mask[frame_indices(ds, affine, shape)])
        assert dicom_seg._frame_index(ds, to_voxel, shape) == plain


def test_images_across_the_mask_axes_take_the_per_pixel_index():
    # a 45-degree image on a 1 mm axial grid: its pixels hit voxels, but along diagonals, not along an axis
    half = np.sqrt(0.5)
    ds = _header([2.0, 0.0, 1.0], [half, half, 0, -half, half, 0], (np.sqrt(2),) * 2, 3, 3)
    affine, shape = LPS_TO_RAS, (5, 5, 3)  # voxel (i, j, k) at LPS (i, j, k)
    to_voxel = np.linalg.inv(affine)
    assert dicom_seg._frame_slices(ds, to_voxel, shape) is None
    index, transposed = dicom_seg._frame_index(ds, to_voxel, shape)
    i, j, k = frame_indices(ds, affine, shape)
    assert not transposed and all(np.array_equal(a, b) for a, b in zip(index, (i, j, k)))
    assert (i[0, 0], j[0, 0]) == (2, 0) and (i[2, 2], j[2, 2]) == (2, 4) and (k == 1).all()


@pytest.mark.parametrize(
    "position, orientation, accepted",
    [
        ([0.0, 0.0, 0.3], AXIAL, False),  # between two slices
        ([1.0, 0.0, 1.0], AXIAL, False),  # the last column beyond the grid
        ([0.0, 0.0, 1.0], (1.0, 0.02, 0.0, -0.02, 1.0, 0.0), False),  # a far corner 0.06 voxel off, the first on
        ([0.0, 0.0, 1.0], (1.0, 0.01, 0.0, -0.01, 1.0, 0.0), True),  # every pixel within 0.05 voxel
    ],
    ids=["off-grid", "outside", "far-corner-off", "within-tolerance"],
)
def test_both_paths_refuse_and_accept_the_same_images(position, orientation, accepted):
    ds = _header(position, np.asarray(orientation) / np.linalg.norm(orientation[:3]), (1.0, 1.0), 4, 4)
    affine, shape = LPS_TO_RAS, (4, 4, 2)
    if accepted:
        index, transposed = dicom_seg._frame_index(ds, np.linalg.inv(affine), shape)
        mask = np.arange(np.prod(shape)).reshape(shape)
        frame = mask[index].T if transposed else mask[index]
        np.testing.assert_array_equal(frame, mask[frame_indices(ds, affine, shape)])
        return
    with pytest.raises(ValueError, match="does not lie on the mask grid") as general:
        frame_indices(ds, affine, shape)
    assert dicom_seg._frame_slices(ds, np.linalg.inv(affine), shape) is None
    with pytest.raises(ValueError) as refused:
        dicom_seg._frame_index(ds, np.linalg.inv(affine), shape)
    assert str(refused.value) == str(general.value)


def _masks(shape):
    rng = np.random.default_rng(3)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[1:5, 1:-1, :] = 1
    lung[6:10, 2:-2, 1:] = 2
    infection = ((rng.random(shape) > 0.7) & (lung > 0)).astype(np.uint8)
    classes = infection * rng.integers(1, 3, size=shape).astype(np.uint8)
    return lung, infection, classes


@pytest.mark.parametrize("with_infection", [True, False], ids=["overlapping", "disjoint"])
def test_seg_frames_do_not_depend_on_the_path(tmp_path, monkeypatch, with_infection):
    # a RAS grid under an LPS series: every frame is the mask flipped in-plane and transposed
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-4.0, 7.0, -20.0]
    shape = (11, 9, 5)
    files = sorted(write_dicom_series(np.zeros(shape, np.int16), affine, tmp_path / "series").iterdir())
    lung, infection, classes = _masks(shape)
    if not with_infection:
        infection[:], classes[:] = 0, 0
    stacked = pydicom.dcmread(write_dicom_seg(tmp_path / "stack.dcm", files, affine, lung, infection, classes, "t"))
    assert stacked.SegmentsOverlap == ("YES" if with_infection else "NO") and stacked.NumberOfFrames > 0
    # the same SEG frame by frame through plain slices, then through the per-pixel index
    for name, helper in (("frames", "_stack_index"), ("pixels", "_frame_slices")):
        monkeypatch.setattr(dicom_seg, helper, lambda *args: None)
        other = pydicom.dcmread(write_dicom_seg(tmp_path / f"{name}.dcm", files, affine, lung, infection, classes, "t"))
        assert other.PixelData == stacked.PixelData, name
        assert other.PerFrameFunctionalGroupsSequence == stacked.PerFrameFunctionalGroupsSequence, name
        assert other.SegmentsOverlap == stacked.SegmentsOverlap, name
    monkeypatch.undo()

    back = read_dicom_seg(tmp_path / "stack.dcm", files, affine, shape)
    expected = {"right lung": lung == 1, "left lung": lung == 2, "infection": infection > 0,
                "ground-glass opacity": classes == 1, "consolidation": classes == 2}
    assert list(back) == list(expected)
    for label, mask in expected.items():
        np.testing.assert_array_equal(back[label], mask, err_msg=label)


def test_one_view_only_for_evenly_spaced_slices_along_one_axis():
    headers, affine, shape = _series(AXIAL, (1, 0, 2), (False, True, True))
    to_voxel = np.linalg.inv(affine)
    plans = [dicom_seg._frame_index(ds, to_voxel, shape) for ds in headers]
    mask = np.random.default_rng(11).integers(0, 3, size=shape)
    index, axis, transposed = dicom_seg._stack_index(plans)
    stack = dicom_seg._stack(mask, index, axis, transposed)
    assert np.shares_memory(stack, mask)
    np.testing.assert_array_equal(stack, [mask[i].T if t else mask[i] for i, t in plans])
    assert dicom_seg._stack_index(plans[:1]) is not None  # a single image
    assert dicom_seg._stack_index(plans[:1] + plans[2:]) is None  # a gap: uneven steps
    assert dicom_seg._stack_index([plans[0], plans[2], plans[1], plans[3]]) is None  # not in order
    assert dicom_seg._stack_index([plans[0], plans[0]]) is None  # one slice twice
    across = ((0, slice(None), slice(None)), plans[0][1])
    assert dicom_seg._stack_index(plans[:2] + [across]) is None  # a slice along another axis
    diagonal = (tuple(np.zeros((ROWS, COLUMNS), int) for _ in range(3)), False)
    assert dicom_seg._stack_index(plans[:2] + [diagonal]) is None  # a per-pixel index


def test_stack_of_every_segment_filled_from_one_copy():
    volume = np.random.default_rng(2).integers(0, 3, (70, 150, 9)).astype(np.uint8)  # slice-last, C order
    for index, transposed in (((slice(None), slice(None), slice(1, 9, 2)), True), ((slice(None, None, -1), slice(None), slice(8, None, -3)), False)):
        frames = dicom_seg._stack(volume, index, 2, transposed)
        outs = [np.zeros(frames.shape, dtype=bool) for _ in range(3)]
        dicom_seg._fill(outs, volume, index, 2, transposed, [(np.equal, 1), (np.equal, 2), (np.greater, 0)])
        for out, expected in zip(outs, (frames == 1, frames == 2, frames > 0)):
            np.testing.assert_array_equal(out, expected)


def test_overlap_check_agrees_with_highdicom():
    import highdicom as hd

    segmentation = dicom_seg._segmentation_class()
    assert segmentation is not hd.seg.Segmentation, "highdicom's pixel check changed: the cheap overlap check is off"
    binary, numbers = hd.seg.SegmentationTypeValues.BINARY, np.arange(1, 4)
    rng = np.random.default_rng(5)
    stacks = {"empty": np.zeros((3, 6, 5, 3), bool), "one-pixel-overlap": np.zeros((3, 6, 5, 3), bool)}
    stacks["one-pixel-overlap"][2, 4, 1, [0, 2]] = True
    labels = rng.integers(0, 4, (3, 6, 5))
    stacks["disjoint"] = np.stack([labels == v for v in (1, 2, 3)], axis=-1)
    stacks["random"] = rng.random((3, 6, 5, 3)) > 0.6
    for name, stack in stacks.items():
        ours = segmentation._check_and_cast_pixel_array(stack, numbers, binary, np.uint8)
        theirs = hd.seg.Segmentation._check_and_cast_pixel_array(stack, numbers, binary, np.uint8)
        assert ours[1] == theirs[1], name
        assert ours[0] is stack
    assert [segmentation._check_and_cast_pixel_array(stacks[n], numbers, binary, np.uint8)[1].value
            for n in ("empty", "one-pixel-overlap", "disjoint")] == ["NO", "YES", "NO"]
    with pytest.raises(ValueError, match="does not match"):  # anything else goes to highdicom's own check
        segmentation._check_and_cast_pixel_array(stacks["random"], np.arange(1, 3), binary, np.uint8)
