"""DICOM Segmentation objects (DICOM-SEG) for PACS and viewers, written and read with highdicom.

A case that came from a DICOM series gets ``OUTPUT/<case_id>/segmentation.dcm``: one binary segment each for the right
lung, the left lung and the infection (plus GGO and consolidation when the class map exists), with coded concepts,
referencing the source series' instances. Its frames lie on the source slices: every mask voxel is placed through
the source images' own geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and the mask's
affine, so the round trip back to the NIfTI grid is exact (:func:`read_dicom_seg`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infnet_monai.utils.arrays import fortran_order
from infnet_monai.utils.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "SEGMENT_LABELS", "DICOM_SEG_FILE", "write_dicom_seg", "read_dicom_seg", "frame_indices", "read_source_headers",
]

DICOM_SEG_FILE = "segmentation.dcm"

SEGMENT_LABELS: tuple[str, ...] = ("right lung", "left lung", "infection", "ground-glass opacity", "consolidation")
"""Segment labels, in segment-number order (the last two only with a class map)."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

_OFF_GRID_VOXELS = 0.05
"""Largest distance (in voxels) of a source pixel from its mask voxel: more means another grid."""


def _codes():
    from highdicom.sr import CodedConcept

    anatomy = CodedConcept("123037004", "SCT", "Anatomical Structure")
    altered = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    lung = CodedConcept("39607008", "SCT", "Lung")
    return {
        "right lung": (anatomy, CodedConcept("3341006", "SCT", "Right lung"), None),
        "left lung": (anatomy, CodedConcept("44029006", "SCT", "Left lung"), None),
        "infection": (altered, CodedConcept("52988006", "SCT", "Lesion"), lung),
        "ground-glass opacity": (altered, CodedConcept("112120", "DCM", "Ground glass opacity"), lung),
        "consolidation": (altered, CodedConcept("95436008", "SCT", "Lung consolidation"), lung),
    }


def _pixel_grid(ds, to_voxel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask-voxel coordinates (``to_voxel``: RAS world to voxel) of the source image's first pixel and the steps to
    the next row and the next column: three 3-vectors."""
    position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    origin = to_voxel[:3, :3] @ (_LPS_TO_RAS @ position) + to_voxel[:3, 3]
    step_col = to_voxel[:3, :3] @ (_LPS_TO_RAS @ (orientation[:3] * col_spacing))  # next column
    step_row = to_voxel[:3, :3] @ (_LPS_TO_RAS @ (orientation[3:] * row_spacing))  # next row
    return origin, step_row, step_col


def _to_voxel(affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.asarray(affine, dtype=np.float64))


def _indices(ds, to_voxel: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    origin, step_row, step_col = _pixel_grid(ds, to_voxel)
    rows, cols = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
    exact = origin[:, None, None] + rows[None] * step_row[:, None, None] + cols[None] * step_col[:, None, None]
    index = np.round(exact).astype(np.int64)
    off_grid = float(np.abs(exact - index).max())
    inside = all((index[a] >= 0).all() and (index[a] < shape[a]).all() for a in range(3))
    if off_grid > _OFF_GRID_VOXELS or not inside:
        raise ValueError(
            f"source image {getattr(ds, 'SOPInstanceUID', '?')} does not lie on the mask grid "
            f"(largest offset {off_grid:.3f} voxel, inside the grid: {inside})"
        )
    return index[0], index[1], index[2]


def frame_indices(ds, affine: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices ``(i, j, k)`` of the mask grid (``affine``, RAS world) for every pixel ``(row, column)`` of the
    source image ``ds``: three ``(Rows, Columns)`` integer arrays.

    Raises:
        ValueError: the image's pixels do not fall on the mask's voxels (another series, or resampled masks).
    """
    return _indices(ds, _to_voxel(affine), shape)


def _axis_slice(start: int, step: int, count: int) -> slice:
    stop = start + step * count
    return slice(start, stop if stop >= 0 else None, step)


def _frame_slices(ds, to_voxel: np.ndarray, shape: Sequence[int]) -> tuple[tuple, bool] | None:
    """The source image ``ds`` as a plain slice of the mask, when its rows and columns run along mask axes (the usual
    case: the mask is the series' own grid, perhaps flipped): ``(index, transposed)`` such that ``mask[index]`` is
    the frame, or its transpose when ``transposed``. None for any other image (oblique, off the grid, outside it).

    The pixel's voxel coordinates are affine in (row, column), so their distance to the integer steps' prediction
    is largest at a corner: checking the four corners checks every pixel as :func:`frame_indices` does.
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 2 or cols < 2:
        return None
    origin, step_row, step_col = _pixel_grid(ds, to_voxel)
    row_int, col_int = np.round(step_row), np.round(step_col)
    row_axes, col_axes = np.flatnonzero(row_int), np.flatnonzero(col_int)
    if len(row_axes) != 1 or len(col_axes) != 1 or row_axes[0] == col_axes[0]:
        return None
    start = np.round(origin)
    for r in (0, rows - 1):
        for c in (0, cols - 1):
            exact = origin + r * step_row + c * step_col  # as frame_indices computes it
            index = start + r * row_int + c * col_int
            if np.abs(exact - index).max() > _OFF_GRID_VOXELS or (index < 0).any() or (index >= shape).any():
                return None
    row_axis, col_axis = int(row_axes[0]), int(col_axes[0])
    index = [int(v) for v in start]
    index[row_axis] = _axis_slice(index[row_axis], int(row_int[row_axis]), rows)
    index[col_axis] = _axis_slice(index[col_axis], int(col_int[col_axis]), cols)
    return tuple(index), row_axis > col_axis


def _frame_index(ds, to_voxel: np.ndarray, shape: Sequence[int]) -> tuple[tuple, bool]:
    """Where the pixels of ``ds`` lie in the mask: ``(index, transposed)`` such that ``mask[index]`` is the frame
    (its transpose when ``transposed``); a view when the image is a slice of the mask (:func:`_frame_slices`), else
    the fancy index of :func:`frame_indices`.

    Raises:
        ValueError: as :func:`frame_indices`.
    """
    plain = _frame_slices(ds, to_voxel, shape)
    return plain if plain is not None else (_indices(ds, to_voxel, shape), False)


def _stack_index(plans: Sequence[tuple[tuple, bool]]) -> tuple[tuple, int, bool] | None:
    """One view for all frames, when every frame is a plain slice (:func:`_frame_slices`) along the same mask axis, at
    evenly spaced positions, with the same rows and columns (a series on its own grid): ``(index, axis, transposed)``
    such that ``mask[index]`` with ``axis`` moved first (and its last two axes swapped when ``transposed``) is the
    ``(frames, Rows, Columns)`` stack. None otherwise."""
    first, transposed = plans[0]
    axes = [a for a, v in enumerate(first) if isinstance(v, int)]
    if len(axes) != 1:
        return None  # the per-pixel index
    axis = axes[0]
    rest = [v for a, v in enumerate(first) if a != axis]
    for index, flag in plans[1:]:
        if flag != transposed or not isinstance(index[axis], int):
            return None
        if [v for a, v in enumerate(index) if a != axis] != rest:
            return None
    positions = [index[axis] for index, _ in plans]
    steps = set(np.diff(positions).tolist()) or {1}
    if len(steps) != 1 or 0 in steps:
        return None
    stack = list(first)
    stack[axis] = _axis_slice(positions[0], steps.pop(), len(positions))
    return tuple(stack), axis, transposed


def _stack(volume: np.ndarray, index: tuple, axis: int, transposed: bool) -> np.ndarray:
    stack = np.moveaxis(volume[index], axis, 0)
    return stack.transpose(0, 2, 1) if transposed else stack


def _fill(outs: Sequence[np.ndarray], volume: np.ndarray, index: tuple, axis: int, transposed: bool, tests) -> None:
    """``out[...] = test(frames, value)`` for each ``out`` and ``(test, value)`` of ``tests``, where ``frames`` is the
    ``(frames, rows, columns)`` stack of ``volume`` (:func:`_stack_index`).

    The mask is first copied into Fortran order (:func:`~infnet_monai.utils.arrays.fortran_order`, in blocks): held
    slice-last in C order, as the pipeline holds it, each frame would be read one scattered pixel at a time, once per
    segment; in Fortran order a frame is one contiguous plane (0.5 s instead of 1.5 s for the five segments of a
    512 x 512 x 248 scan)."""
    frames = _stack(fortran_order(volume), index, axis, transposed)
    for out, (test, value) in zip(outs, tests):
        test(frames, value, out=out)


_TYPE2_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "AccessionNumber",
)
"""Patient and study attributes a DICOM-SEG must carry but may leave empty (type 2); anonymised series often drop
them. They are added empty to the in-memory copies of the source headers (the files are never changed)."""

_REFERENCE_SEQUENCES = ("ReferencedPatientSequence", "ReferencedStudySequence")
"""Optional (type 3) sequences of the patient and study modules, which highdicom copies from the source header as they
are; each item is a SOP reference whose class and instance UIDs are both type 1."""


_REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
)


def _check_headers(sources, files) -> None:
    if len(sources) != len(files):
        raise ValueError(f"{len(sources)} source headers given for {len(files)} source files")
    for ds, f in zip(sources, files):
        missing = [name for name in _REQUIRED if name not in ds or ds.get(name) in (None, "")]
        if missing:
            raise ValueError(
                f"{f}: the DICOM header lacks {', '.join(missing)}, which a DICOM-SEG needs to reference its source "
                "(stripped or anonymised too far); the NIfTI outputs are complete"
            )


def _source_header(ds):
    """The in-memory source header ``ds``, fit to have its patient and study attributes copied into a derived object:
    missing type-2 attributes added empty, and reference items that lack a type-1 UID (a Referenced Study Sequence
    item without its SOP Class UID, in some archives' series) left out, the sequence with them when none is left."""
    for name in _TYPE2_ATTRIBUTES:
        if name not in ds:
            setattr(ds, name, "")
    for name in _REFERENCE_SEQUENCES:
        items = ds.get(name)
        if items is None:
            continue
        kept = [item for item in items if item.get("ReferencedSOPClassUID") and item.get("ReferencedSOPInstanceUID")]
        if len(kept) < len(items):
            left_out = len(items) - len(kept)
            logger.debug("%s: %d incomplete %s item(s) left out", ds.get("SOPInstanceUID", "?"), left_out, name)
            if kept:
                setattr(ds, name, kept)
            else:
                delattr(ds, name)
    return ds


def read_source_headers(source_files: Sequence[str | os.PathLike]) -> list:
    """The headers of a derived object's source images (the DICOM-SEG's and the SR's), without their pixel data.

    Each header is read as ``pydicom.dcmread(..., stop_before_pixels=True)`` and made fit to have its patient and
    study attributes copied into a derived object: missing type-2 attributes are added empty, and reference items
    that lack a type-1 UID (a Referenced Study Sequence item without its SOP Class UID, in some archives' series) are
    left out, the sequence with them when none is left.

    Args:
        source_files: the source series' files.

    Returns:
        one ``pydicom.Dataset`` per file, in the order of ``source_files``.
    """
    import pydicom

    return [_source_header(pydicom.dcmread(str(f), stop_before_pixels=True)) for f in source_files]


def _segments(lung, infection, classes) -> dict[str, tuple[np.ndarray, np.ufunc, int]]:
    """Per segment label, ``(volume, test, value)``: the segment is ``test(volume, value)``."""
    segments = {
        "right lung": (lung, np.equal, 1), "left lung": (lung, np.equal, 2), "infection": (infection, np.greater, 0),
    }
    if classes is not None:
        segments["ground-glass opacity"] = (classes, np.equal, 1)
        segments["consolidation"] = (classes, np.equal, 2)
    return segments


def write_dicom_seg(
    path: str | os.PathLike,
    source_files: Sequence[str | os.PathLike],
    affine: np.ndarray,
    lung: np.ndarray,
    infection: np.ndarray,
    classes: np.ndarray | None = None,
    software_version: str = "",
    source_headers: Sequence | None = None,
) -> Path:
    """Write the masks (all on the grid of ``affine``) as a binary DICOM-SEG that references ``source_files``.

    ``source_headers``: the headers of ``source_files`` as :func:`read_source_headers` gives them, when the caller
    has read them already (the SR of the same case uses them too); read here when ``None``. They are not changed.

    Raises:
        ValueError: the source headers lack the geometry or identifiers a DICOM-SEG needs, or do not match the masks.
    """
    import highdicom as hd

    sources = read_source_headers(source_files) if source_headers is None else list(source_headers)
    _check_headers(sources, source_files)
    lung = np.asarray(lung)
    segments = _segments(lung, np.asarray(infection), None if classes is None else np.asarray(classes))
    to_voxel = _to_voxel(affine)
    plans = [_frame_index(ds, to_voxel, lung.shape) for ds in sources]
    stack = _stack_index(plans)
    # segment-major: each frame highdicom encodes is a contiguous plane, and its overlap check a fast reduction
    planes = np.zeros((len(segments), len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=bool)
    specs = list(segments.values())
    if stack is not None:
        groups: dict[int, list[int]] = {}  # the segments of one mask are filled in one pass over it
        for s, (volume, _, _) in enumerate(specs):
            groups.setdefault(id(volume), []).append(s)
        for members in groups.values():
            _fill([planes[s] for s in members], specs[members[0]][0], *stack, [specs[s][1:] for s in members])
    else:
        for s, (volume, test, value) in enumerate(specs):
            for f, (index, transposed) in enumerate(plans):
                frame = volume[index]
                test(frame.T if transposed else frame, value, out=planes[s, f])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="infnet-monai", version=software_version or "unknown", family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")
    )
    codes = _codes()
    descriptions = []
    for number, label in enumerate(segments, start=1):
        category, kind, region = codes[label]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[region] if region is not None else None,
        ))
    with warnings.catch_warnings(record=True) as caught:  # highdicom's remarks on the source's own attributes
        warnings.simplefilter("always")
        seg = _segmentation(hd, sources, np.moveaxis(planes, 0, -1), descriptions, software_version)
    for w in caught:  # e.g. a single-component PatientName copied from the source: not ours to fix, not an error
        logger.debug("highdicom: %s", w.message)
    return atomic_write(path, lambda tmp: seg.save_as(tmp))


@functools.cache
def _segmentation_class():
    """highdicom's ``Segmentation``, with a cheaper check of a 4D boolean stack of segments where highdicom's check has
    the signature of highdicom 0.28 (else highdicom's own class, slower but the same object).

    highdicom finds overlapping segments by summing the whole stack over segments into a 64-bit copy: for a
    thin-slice chest CT (248 x 512 x 512 x 5) that is 0.5 GB and about a second. The subclass counts the segments of
    one frame at a time in 8 bits and stops at the first overlap; any other input goes to highdicom's check.
    """
    import highdicom as hd

    base = hd.seg.Segmentation
    check = getattr(base, "_check_and_cast_pixel_array", None)
    expected = ["pixel_array", "segment_numbers", "segmentation_type", "dtype"]
    if check is None or list(inspect.signature(check).parameters) != expected:
        return base

    class Segmentation(base):
        @classmethod
        def _check_and_cast_pixel_array(cls, pixel_array, segment_numbers, segmentation_type, dtype):
            if not (
                isinstance(pixel_array, np.ndarray) and pixel_array.dtype == bool and pixel_array.ndim == 4
                and pixel_array.shape[-1] == len(segment_numbers)
                and segmentation_type == hd.seg.SegmentationTypeValues.BINARY
            ):
                return super()._check_and_cast_pixel_array(pixel_array, segment_numbers, segmentation_type, dtype)
            overlap = any(np.add.reduce(plane, axis=-1, dtype=np.uint8).max() > 1 for plane in pixel_array)
            values = hd.seg.SegmentsOverlapValues
            return pixel_array, values.YES if overlap else values.NO

    return Segmentation


def _segmentation(hd, sources, pixels: np.ndarray, descriptions, software_version: str):
    return _segmentation_class()(
        source_images=sources, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="infnet-monai", manufacturer_model_name="Inf-Net (MONAI)",
        software_versions=software_version or "unknown", device_serial_number="none",
        series_description="infnet-monai lungs and COVID-19 infection",
        omit_empty_frames=bool(pixels.any()),  # a scan without lung: keep the (empty) frames, a SEG needs one
    )


def read_dicom_seg(
    path: str | os.PathLike, source_files: Sequence[str | os.PathLike], affine: np.ndarray, shape: Sequence[int]
) -> dict[str, np.ndarray]:
    """Decode a DICOM-SEG back onto the mask grid (``affine``, ``shape``): one boolean array per segment label."""
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(str(path))
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, assert_missing_frames_are_empty=False
    )
    out = {str(d.SegmentLabel): np.zeros(tuple(shape), dtype=bool) for d in seg.SegmentSequence}
    to_voxel = _to_voxel(affine)
    for f, ds in enumerate(sources):
        index, transposed = _frame_index(ds, to_voxel, shape)
        for s, d in enumerate(seg.SegmentSequence):
            frame = frames[f, ..., s] > 0
            out[str(d.SegmentLabel)][index] = frame.T if transposed else frame
    return out
