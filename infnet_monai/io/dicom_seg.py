"""DICOM Segmentation objects (DICOM-SEG) for PACS and viewers, written and read with highdicom.

A case that came from a DICOM series gets ``OUTPUT/<case_id>/segmentation.dcm``: one binary segment each for the right
lung, the left lung and the infection (plus GGO and consolidation when the class map exists), with coded concepts,
referencing the source series' instances. Its frames lie on the source slices: every mask voxel is placed through
the source images' own geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) and the mask's
affine, so the round trip back to the NIfTI grid is exact (:func:`read_dicom_seg`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infnet_monai.utils.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["SEGMENT_LABELS", "DICOM_SEG_FILE", "write_dicom_seg", "read_dicom_seg", "frame_indices"]

DICOM_SEG_FILE = "segmentation.dcm"

SEGMENT_LABELS: tuple[str, ...] = ("right lung", "left lung", "infection", "ground-glass opacity", "consolidation")
"""Segment labels, in segment-number order (the last two only with a class map)."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


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


def frame_indices(ds, affine: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices ``(i, j, k)`` of the mask grid (``affine``, RAS world) for every pixel ``(row, column)`` of the
    source image ``ds``: three ``(Rows, Columns)`` integer arrays.

    Raises:
        ValueError: the image's pixels do not fall on the mask's voxels (another series, or resampled masks).
    """
    position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    origin = to_voxel[:3, :3] @ (_LPS_TO_RAS @ position) + to_voxel[:3, 3]
    step_col = to_voxel[:3, :3] @ (_LPS_TO_RAS @ (orientation[:3] * col_spacing))  # next column
    step_row = to_voxel[:3, :3] @ (_LPS_TO_RAS @ (orientation[3:] * row_spacing))  # next row
    rows, cols = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
    exact = origin[:, None, None] + rows[None] * step_row[:, None, None] + cols[None] * step_col[:, None, None]
    index = np.round(exact).astype(np.int64)
    off_grid = float(np.abs(exact - index).max())
    inside = all((index[a] >= 0).all() and (index[a] < shape[a]).all() for a in range(3))
    if off_grid > 0.05 or not inside:
        raise ValueError(
            f"source image {getattr(ds, 'SOPInstanceUID', '?')} does not lie on the mask grid "
            f"(largest offset {off_grid:.3f} voxel, inside the grid: {inside})"
        )
    return index[0], index[1], index[2]


_TYPE2_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "AccessionNumber",
)
"""Patient and study attributes a DICOM-SEG must carry but may leave empty (type 2); anonymised series often drop
them. They are added empty to the in-memory copies of the source headers (the files are never changed)."""


_REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
)


def _check_headers(sources, files) -> None:
    for ds, f in zip(sources, files):
        missing = [name for name in _REQUIRED if name not in ds or ds.get(name) in (None, "")]
        if missing:
            raise ValueError(
                f"{f}: the DICOM header lacks {', '.join(missing)}, which a DICOM-SEG needs to reference its source "
                "(stripped or anonymised too far); the NIfTI outputs are complete"
            )


def _with_type2(ds):
    for name in _TYPE2_ATTRIBUTES:
        if name not in ds:
            setattr(ds, name, "")
    return ds


def _segment_masks(lung, infection, classes) -> dict[str, np.ndarray]:
    masks = {"right lung": lung == 1, "left lung": lung == 2, "infection": infection > 0}
    if classes is not None:
        masks["ground-glass opacity"] = classes == 1
        masks["consolidation"] = classes == 2
    return masks


def write_dicom_seg(
    path: str | os.PathLike,
    source_files: Sequence[str | os.PathLike],
    affine: np.ndarray,
    lung: np.ndarray,
    infection: np.ndarray,
    classes: np.ndarray | None = None,
    software_version: str = "",
) -> Path:
    """Write the masks (all on the grid of ``affine``) as a binary DICOM-SEG that references ``source_files``.

    Raises:
        ValueError: the source headers lack the geometry or identifiers a DICOM-SEG needs, or do not match the masks.
    """
    import highdicom as hd
    import pydicom

    sources = [_with_type2(pydicom.dcmread(str(f), stop_before_pixels=True)) for f in source_files]
    _check_headers(sources, source_files)
    masks = _segment_masks(np.asarray(lung), np.asarray(infection), classes)
    shape = np.asarray(lung).shape
    pixels = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns), len(masks)), dtype=bool)
    for f, ds in enumerate(sources):
        i, j, k = frame_indices(ds, affine, shape)
        for s, mask in enumerate(masks.values()):
            pixels[f, ..., s] = mask[i, j, k]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="infnet-monai", version=software_version or "unknown", family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")
    )
    codes = _codes()
    descriptions = []
    for number, label in enumerate(masks, start=1):
        category, kind, region = codes[label]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[region] if region is not None else None,
        ))
    with warnings.catch_warnings(record=True) as caught:  # highdicom's remarks on the source's own attributes
        warnings.simplefilter("always")
        seg = _segmentation(hd, sources, pixels, descriptions, software_version)
    for w in caught:  # e.g. a single-component PatientName copied from the source: not ours to fix, not an error
        logger.debug("highdicom: %s", w.message)
    return atomic_write(path, lambda tmp: seg.save_as(tmp))


def _segmentation(hd, sources, pixels: np.ndarray, descriptions, software_version: str):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels.astype(np.uint8),
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
    for f, ds in enumerate(sources):
        i, j, k = frame_indices(ds, affine, shape)
        for s, d in enumerate(seg.SegmentSequence):
            out[str(d.SegmentLabel)][i, j, k] = frames[f, ..., s] > 0
    return out
