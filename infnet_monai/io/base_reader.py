"""What the CT readers (:mod:`~infnet_monai.io.nifti`, :mod:`~infnet_monai.io.dicom_series`) share: the error a
case that cannot be used raises, the limits any CT volume must meet whatever its format, the checks of the file and of
the geometry its headers give, and reading through MONAI's ``LoadImage``.

:func:`infnet_monai.io.volume.load_ct` is the door; nnU-Net's ``imageio/base_reader_writer.py`` plays this part there.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from monai.data.utils import affine_to_spacing
from monai.transforms import LoadImage

from infnet_monai.io.budget import is_memory_error, memory_refusal

__all__ = [
    "CaseError",
    "SourceInfo",
    "MIN_SLICES",
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "MIN_INPLANE_VOXELS",
    "check_file",
    "check_extent",
    "check_spacing",
    "read_volume",
]

MIN_SLICES = 2
"""Fewest slices accepted. 2 is enough for the slice-wise 2D network; a single slice is a 2D image."""
MAX_SPACING_MM = 20.0
"""Largest voxel spacing accepted on any axis (mm)."""
MIN_SPACING_MM = 0.1
"""Smallest voxel spacing accepted on any axis (mm): clinical CT voxels are 0.2 mm and up; a smaller spacing is a
broken header (a spacing in metres, a pixdim of 0.001)."""
MIN_INPLANE_VOXELS = 8
"""Fewest voxels accepted along each in-plane axis: a smaller image is not a CT slice (a thumbnail, a test array)."""


class CaseError(ValueError):
    """A CT case cannot be used; the message names the file, the problem and what to do."""


@dataclass
class SourceInfo:
    """What a reader tells :func:`~infnet_monai.io.volume.load_ct` about the source besides the voxels.

    Attributes:
        modality: the DICOM Modality (``None`` for NIfTI or when unknown).
        patient_id: the DICOM PatientID, ``None`` when unknown.
        series_instance_uid: the DICOM SeriesInstanceUID, ``None`` when unknown.
        rescale_missing: no rescale intercept is recorded (DICOM: no RescaleIntercept tag; NIfTI: ``scl_inter``
            unset or 0), so stored raw values may be corrected (:func:`~infnet_monai.io.hounsfield.to_hounsfield`).
        scaling: the recorded scaling in words, for messages.
    """

    modality: str | None = None
    patient_id: str | None = None
    series_instance_uid: str | None = None
    rescale_missing: bool = False
    scaling: str = ""


def check_file(path: Path) -> None:
    """Refuse a missing, non-regular or empty file; the message says what to do."""
    if not path.exists():
        raise CaseError(f"{path}: file not found (moved or deleted since the cases were listed). Check the input.")
    if not path.is_file():
        raise CaseError(f"{path}: not a regular file. Pass a NIfTI file or a DICOM series folder.")
    if path.stat().st_size == 0:
        raise CaseError(f"{path}: file is empty (0 bytes); the copy or export was interrupted. Copy it again.")


def check_extent(name, shape: Sequence[int], min_slices: int) -> None:
    """Refuse a volume of ``shape`` ``(X, Y, Z)`` with fewer than ``min_slices`` slices or slices with fewer than
    :data:`MIN_INPLANE_VOXELS` voxels along a side."""
    if shape[2] < min_slices:
        raise CaseError(
            f"{name}: {shape[2]} slice(s) of {shape[0]}x{shape[1]}; at least {min_slices} slices are needed for a 3D "
            "volume. Export the whole series."
        )
    if min(shape[:2]) < MIN_INPLANE_VOXELS:
        raise CaseError(
            f"{name}: slices of {shape[0]}x{shape[1]} voxels are too small to be a CT image (at least "
            f"{MIN_INPLANE_VOXELS}x{MIN_INPLANE_VOXELS} are needed). Give the whole CT slice, not a crop or a thumbnail."
        )


def check_spacing(name, affine: np.ndarray, max_spacing_mm: float) -> None:
    """Refuse a voxel-to-world ``affine`` (RAS, from the headers) with a spacing outside [:data:`MIN_SPACING_MM`,
    ``max_spacing_mm``] or that is not finite and invertible."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = affine_to_spacing(affine, r=3)
    if not np.all(np.isfinite(affine)) or np.any(spacing < MIN_SPACING_MM) or np.any(spacing > max_spacing_mm):
        raise CaseError(
            f"{name}: voxel spacing {np.round(spacing, 4).tolist()} mm is outside [{MIN_SPACING_MM:g}, {max_spacing_mm:g}] mm on some "
            "axis. Check the image header (NIfTI pixdim/sform/qform or DICOM PixelSpacing and slice positions)."
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise CaseError(f"{name}: the image affine {affine.tolist()} is singular. Fix the image header.")


def read_volume(reader: ImageReader, files: Sequence[Path] | Path, name: str) -> MetaTensor:
    """The voxels of ``files`` read by ``reader`` through MONAI's ``LoadImage`` (channel first, the reader's dtype).

    Args:
        reader: the MONAI image reader.
        files: one file, or the files of one series in order.
        name: the case's source, for messages.

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)`` with the reader's affine.

    Raises:
        CaseError: the voxels could not be read (the lack of memory named as such).
    """
    with warnings.catch_warnings():
        # LoadImage also instantiates MONAI's default readers; without nvImageCodec one of them warns on every
        # construction although it is never used here
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
        loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=None)
    try:
        image = loader(files if isinstance(files, Path) else list(files))
    except Exception as e:
        if is_memory_error(e):
            raise CaseError(memory_refusal(name, e)) from e
        raise CaseError(
            f"{name}: the voxel data could not be read ({type(e).__name__}: {e}). The file is probably truncated "
            "or corrupt, or uses an unsupported compression: export or copy it again."
        ) from e
    if not isinstance(image, MetaTensor):  # LoadImage always returns one with image_only=True
        image = MetaTensor(image)
    return image

