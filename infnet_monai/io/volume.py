"""Loading a :class:`~infnet_monai.io.cases.CTCase` as a validated 3D CT volume in Hounsfield units.

:func:`load_ct` returns a ``monai.data.MetaTensor`` of shape ``(1, X, Y, Z)`` whose ``affine`` follows MONAI's
convention (voxel index -> RAS world millimetres), exactly as ``monai.transforms.LoadImage`` produces it, so the
pipeline can apply MONAI spatial transforms and invert them later:

- NIfTI: ``LoadImage(reader=CompactNibabelReader(...))``, MONAI's ``NibabelReader`` with the scaling applied
  without a float64 copy; the affine is nibabel's.
- DICOM: ``LoadImage(reader=SimpleITKSeriesReader(num_workers=...))`` on the case's sorted file list.
  ``SimpleITKSeriesReader`` is a MONAI ``ImageReader`` over SimpleITK (GDCM) that follows ``monai.data.ITKReader``
  conventions (array indexed ``(X, Y, Z)``, LPS -> RAS affine), so no extra ``itk`` package is needed; it decodes the
  slices in threads, with the voxels and geometry of one ``sitk.ImageSeriesReader``. GDCM applies
  RescaleSlope/Intercept. The headers are those discovery read (``CTCase.headers``): each file's header is parsed
  once per run (the pixel data check parses only the pixel data element).

The volume is checked, its geometry from the headers before the voxels are read, and any problem raises
:class:`CaseError` naming the file, the problem and what to do (each check is made once, in one function):

==========================================  ==================================================================
input                                       behaviour
==========================================  ==================================================================
missing / 0-byte / truncated / not an image refused
size in the headers over the budget         refused before any voxel is read or inflated: more than 2048 voxels
(:mod:`infnet_monai.io.budget`)             in-plane, than ``max_slices`` along the longest axis, or than half the
                                            memory available; the message names each number over its limit
2D image, 4D with more than one volume      refused (a 4D or 5D image with singleton extra dims is squeezed)
fewer than ``MIN_SLICES`` (2) slices        refused (the 2-slice chest series is the smallest accepted input)
NaN / Inf voxels                            refused, the count is given
voxel spacing <= 0 or > 20 mm               refused
stored values without rescale (>= 0, max    1024 is subtracted and a warning logged, when no rescale intercept
> 1000)                                     is recorded (DICOM: no RescaleIntercept tag; NIfTI: scl_inter unset
                                            or 0) and the histogram shows air (>= 1 % of voxels below -500 HU
                                            after the shift) and soft tissue (>= 1 % within +-100 HU) and little
                                            dense bone or metal (<= 10 % above +1000 HU; uniform noise has 50 %);
                                            else refused
no voxel below -500 HU                      refused (label map, normalised image or other units, not HU)
values below -1024 HU                       set to -1024 (air); scanners store padding outside the field of view
                                            as -2000/-2048/-3024, which is air for the segmentation
DICOM: missing slice (gap > 1.5x median)    refused, the gap is named (no resampling is done)
DICOM: non-uniform spacing (> 10 %)         refused
DICOM: duplicate slice positions            refused
DICOM: gantry tilt / sheared positions      refused when slices drift more than half a pixel in-plane
DICOM: non-CT modality, multi-frame files   refused
==========================================  ==================================================================
"""

from __future__ import annotations

import gzip
import logging
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader, NibabelReader
from monai.data.utils import affine_to_spacing, orientation_ras_lps
from monai.transforms import LoadImage
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from infnet_monai.io.budget import (
    InflateLimitError,
    dicom_file_bound,
    dicom_size_refusal,
    is_memory_error,
    memory_refusal,
    nifti_size_refusal,
    read_dicom,
)
from infnet_monai.io.cases import (
    CTCase,
    SliceHeader,
    field_value,
    has_dicm_marker,
    modality_from_sop_class,
    pixel_data_fields,
    read_slice_header,
)

__all__ = [
    "CaseError",
    "SimpleITKSeriesReader",
    "CompactNibabelReader",
    "load_ct",
    "MIN_SLICES",
    "MAX_SPACING_MM",
    "AIR_HU",
    "RAW_CT_OFFSET",
]

logger = logging.getLogger(__name__)

MIN_SLICES = 2
"""Fewest slices accepted. 2 is enough for the slice-wise 2D network; a single slice is a 2D image."""
MAX_SPACING_MM = 20.0
"""Largest voxel spacing accepted on any axis (mm)."""
MIN_SPACING_MM = 0.1
"""Smallest voxel spacing accepted on any axis (mm): clinical CT voxels are 0.2 mm and up; a smaller spacing is a
broken header (a spacing in metres, a pixdim of 0.001)."""
MIN_INPLANE_VOXELS = 8
"""Fewest voxels accepted along each in-plane axis: a smaller image is not a CT slice (a thumbnail, a test array)."""
HU_PLAUSIBLE_RANGE = (-1100.0, 4000.0)
"""Values a CT in Hounsfield units holds, besides its padding (the volume's minimum, outside the field of view)."""
HU_MAX_DENSE_FRACTION = 0.2
"""Largest share of the voxels (padding aside) above +1000 HU accepted: dense bone and metal are a few per cent of a
CT; more is noise or wrongly scaled data (the development scans: at most 0.44 %; `scripts/hu_plausibility.py`)."""
HU_MAX_EDGE_MEDIAN = 500.0
"""Largest median (HU) of the image's edge voxels (padding aside) accepted: a CT's edge is air, fat or soft tissue
(the development scans: -1013 to -786 HU; `scripts/hu_plausibility.py`); an edge near +1000 is an inverted scale (a negative slope)."""
HU_MAX_IMPLAUSIBLE_FRACTION = 0.05
"""Largest share of the voxels (padding aside) outside :data:`HU_PLAUSIBLE_RANGE` accepted: more means the scaling
(DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter) or the stored data is wrong. The development scans have
none."""
NIFTI1_MIN_VOX_OFFSET = 352
"""A single-file NIfTI-1 (.nii, .nii.gz) keeps its voxels after the 348-byte header and 4 extension bytes."""
AIR_HU = -1024.0
"""Lowest HU kept; lower values (padding outside the scan field of view) are set to this."""
RAW_CT_OFFSET = 1024.0
"""Offset subtracted from stored values that were written without their rescale intercept."""

_MAX_GAP_RATIO = 1.5  # a gap above this multiple of the median slice spacing means missing slices
_SPACING_TOLERANCE = 0.1  # relative deviation from the median spacing still called uniform
_DUPLICATE_MM = 1e-3  # slices closer than this along the normal are duplicates
_AIR_THRESHOLD_HU = -500.0  # a CT in HU always has voxels below this (air around the body, lungs)
_RAW_MIN_FRACTION = 0.01  # fraction of voxels in the air and in the soft-tissue ranges for a raw-value image
_RAW_MAX_DENSE_FRACTION = 0.1  # most voxels above +1000 HU (dense bone, metal) in a raw-value image; real CT: < 1 %


class CaseError(ValueError):
    """A CT case cannot be used; the message names the file, the problem and what to do."""


_SLICES_PER_TASK = 32  # slices one thread reads, then stores transposed at once (longer runs of z written together)
_ROWS_PER_COPY = 16  # image rows of a block transposed at a time: what is read and written stays in cache (2x faster)
_INT16_RANGE = (-32768 + int(RAW_CT_OFFSET), 32767)  # integer HU kept as int16: room for the raw-value correction


@dataclass
class _SliceStack:
    """A series read slice by slice (:meth:`SimpleITKSeriesReader.read` with ``num_workers``): the voxels, already
    indexed ``(X, Y, Z)`` and C-contiguous, and the geometry ``sitk.ImageSeriesReader`` gives the whole series."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


class _DoesNotFit(ValueError):
    """Integer voxels outside the int16 range asked for: the series is read again in its own pixel type."""


class SimpleITKSeriesReader(ImageReader):
    """MONAI image reader for DICOM series (or single images) based on SimpleITK / GDCM.

    It mirrors ``monai.data.ITKReader`` with ``reverse_indexing=False``: the array is indexed ``(X, Y, Z)`` (column,
    row, slice), ``affine`` maps voxel indices to world millimetres in RAS (LPS -> RAS when ``affine_lps_to_ras``),
    ``spatial_shape`` and ``original_channel_dim`` (``"no_channel"``) are set so that ``EnsureChannelFirst`` works.
    RescaleSlope/Intercept are applied by GDCM; by default the output keeps the pixel type GDCM gives (int16 for
    the usual integer rescale), which :func:`load_ct` then stores compactly.

    With ``num_workers`` a list of three or more files is read slice by slice by that many threads (GDCM decodes
    without Python's lock), each block of slices stored straight into the ``(X, Y, Z)`` array: the voxels, pixel type
    and geometry are those of the single ``sitk.ImageSeriesReader`` (which takes the geometry from the first and last
    files; so does this reader, reading those two as a series), without its copy and transpose afterwards. Anything
    unusual on the way (another slice size, several components, an unreadable file) makes it read the series with
    the single reader, which gives the same image or the same error as without ``num_workers``.

    Args:
        affine_lps_to_ras: convert the affine from ITK's LPS to RAS (as ``NibabelReader`` returns). Default True.
        output_pixel_type: SimpleITK pixel type of the read image. Default ``sitk.sitkUnknown`` (GDCM's own).
        num_workers: threads reading the slices of a file list; 0 (default) reads with one ``sitk.ImageSeriesReader``.
        int16_range: with ``num_workers``, integer voxels of another type than int16 are stored as int16 when all lie
            in this ``(low, high)`` range (else in their own type); ``None`` (default) keeps the pixel type.

    Example::

        image = LoadImage(reader=SimpleITKSeriesReader(), image_only=True, ensure_channel_first=True)(file_list)
    """

    def __init__(
        self,
        affine_lps_to_ras: bool = True,
        output_pixel_type: int = sitk.sitkUnknown,
        num_workers: int = 0,
        int16_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        self.affine_lps_to_ras = affine_lps_to_ras
        self.output_pixel_type = output_pixel_type
        self.num_workers = int(num_workers)
        self.int16_range = int16_range

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """SimpleITK is a hard dependency of this package, so any file or folder may be tried."""
        return True

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> sitk.Image | _SliceStack:
        """Read one image from a list of slice files (in the given order) or from a folder.

        Args:
            data: the files of one series, sorted along the slice normal, or one file, or a folder (the first
                series that GDCM finds in it is read).
            kwargs: unused, for API compatibility.

        Returns:
            the SimpleITK image; with ``num_workers`` and three or more files, the voxels and geometry read slice by
            slice (an object that :meth:`get_data` takes).
        """
        names = [str(p) for p in ensure_tuple(data)]
        if len(names) == 1 and Path(names[0]).is_dir():
            series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(names[0])
            if not series_ids:
                raise FileNotFoundError(f"{names[0]}: no DICOM series found in this folder.")
            names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(names[0], series_ids[0]))
        if self.num_workers and len(names) > 2:
            try:
                try:
                    return self._read_slices(names, self.int16_range)
                except _DoesNotFit:
                    return self._read_slices(names, None)
            except Exception as e:  # noqa: BLE001 - the single reader below gives the image or the error to report
                logger.debug("%s: not read slice by slice (%s: %s); read as one series.", names[0], type(e).__name__, e)
        return self._read_series(names, self.output_pixel_type)

    @staticmethod
    def _read_series(names: Sequence[str], pixel_type: int) -> sitk.Image:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(list(names))
        reader.SetOutputPixelType(pixel_type)
        return reader.Execute()

    def _read_slices(self, names: list[str], int16_range: tuple[int, int] | None) -> _SliceStack:
        """Read ``names`` (3 or more) slice by slice with ``num_workers`` threads, see the class docstring."""
        first, last = sitk.ImageFileReader(), sitk.ImageFileReader()
        for reader, name in ((first, names[0]), (last, names[-1])):
            reader.SetFileName(name)
            reader.ReadImageInformation()
        size = first.GetSize()
        if first.GetNumberOfComponents() != 1 or len(size) not in (2, 3) or size[2:] not in ((), (1,)):
            raise ValueError(f"{names[0]}: not one scalar slice.")
        if np.linalg.norm(np.subtract(last.GetOrigin(), first.GetOrigin())) < 1e-6:
            raise ValueError("the first and last slices lie at one position.")  # ITK then keeps a spacing of 1
        # the pixel type sitk.ImageSeriesReader takes: the one asked for, else the first file's
        pixel_type = self.output_pixel_type if self.output_pixel_type != sitk.sitkUnknown else first.GetPixelID()
        n, (columns, rows) = len(names), size[:2]

        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            # the first and last files as a series: what the whole series reader takes its geometry from
            ends_job = pool.submit(self._read_series, [names[0], names[-1]], pixel_type)
            ends = ends_job.result()
            ends_array = sitk.GetArrayViewFromImage(ends)
            if ends.GetSize() != (columns, rows, 2) or ends.GetNumberOfComponentsPerPixel() != 1:
                raise ValueError(f"{names[0]}: the first and last files do not read as two slices.")
            native = ends_array.dtype
            keep = native == np.int16 or not np.issubdtype(native, np.integer) or int16_range is None
            stored = native if keep else np.dtype(np.int16)
            out = np.empty((columns, rows, n), dtype=stored)

            def copy(values: np.ndarray, into: np.ndarray) -> None:
                """``into[...] = values``, in int16 only when every value lies in ``int16_range``."""
                if not keep and (int(values.min()) < int16_range[0] or int(values.max()) > int16_range[1]):
                    raise _DoesNotFit(f"values outside {int16_range}")
                into[...] = values

            def read_slice(name: str, into: np.ndarray) -> None:
                reader = sitk.ImageFileReader()
                reader.SetFileName(name)
                reader.SetOutputPixelType(pixel_type)
                image = reader.Execute()
                if image.GetSize()[:2] != (columns, rows) or image.GetNumberOfPixels() != columns * rows:
                    raise ValueError(f"{name}: another slice size {image.GetSize()}.")
                copy(sitk.GetArrayViewFromImage(image).reshape(rows, columns), into)  # a view: valid while image lives

            def read_block(z0: int) -> None:
                z1 = min(z0 + _SLICES_PER_TASK, n - 1)
                block = np.empty((z1 - z0, rows, columns), dtype=stored)  # cast slice by slice, then one transpose
                for k in range(z0, z1):
                    read_slice(names[k], block[k - z0])
                for y0 in range(0, rows, _ROWS_PER_COPY):
                    out[:, y0 : y0 + _ROWS_PER_COPY, z0:z1] = block[:, y0 : y0 + _ROWS_PER_COPY].transpose(2, 1, 0)

            for k, z in ((0, 0), (1, n - 1)):
                copy(ends_array[k].T, out[:, :, z])
            for job in [pool.submit(read_block, z0) for z0 in range(1, n - 1, _SLICES_PER_TASK)]:
                job.result()
        spacing = list(ends.GetSpacing())
        spacing[2] = spacing[2] / (n - 1)  # as ImageSeriesReader: |last - first position| / (n - 1)
        return _SliceStack(out, tuple(spacing), ends.GetOrigin(), ends.GetDirection())

    def get_data(self, img: sitk.Image | _SliceStack) -> tuple[np.ndarray, dict]:
        """Array ``(X, Y, Z)`` and MONAI metadata (``affine``, ``original_affine``, ``spatial_shape``, ...).

        Args:
            img: the image returned by :meth:`read`.

        Returns:
            the voxel array indexed ``(X, Y, Z)`` and the metadata dictionary.
        """
        if isinstance(img, _SliceStack):
            return img.array, self._meta(img.array.shape, img.spacing, img.origin, img.direction)
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components.")
        array = sitk.GetArrayFromImage(img).T  # SimpleITK gives (Z, Y, X)
        return array, self._meta(img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())

    def _meta(
        self, size: Sequence[int], spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
    ) -> dict:
        dim = len(size)
        direction = np.asarray(direction, dtype=np.float64).reshape(dim, dim)
        spacing = np.asarray(spacing, dtype=np.float64)
        affine = np.eye(dim + 1)
        affine[:dim, :dim] = direction @ np.diag(spacing)
        affine[:dim, -1] = np.asarray(origin, dtype=np.float64)
        if self.affine_lps_to_ras:
            affine = orientation_ras_lps(affine)
        return {
            MetaKeys.ORIGINAL_AFFINE: affine,
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(tuple(size)),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            "spacing": spacing,
        }


def _reader_threads() -> int:
    """Threads that read the slices of a DICOM series: the CPU threads torch was given (``OMP_NUM_THREADS``), at
    most 8 (each holds a block of decoded slices)."""
    return max(1, min(8, torch.get_num_threads()))


@dataclass
class _SourceInfo:
    modality: str | None = None
    patient_id: str | None = None
    series_instance_uid: str | None = None
    rescale_missing: bool = False
    scaling: str = ""


def load_ct(
    case: CTCase, min_slices: int = MIN_SLICES, max_spacing_mm: float = MAX_SPACING_MM, max_slices: int | None = None
) -> MetaTensor:
    """Load and validate one CT case as a volume in Hounsfield units, stored compactly.

    Integer Hounsfield units (the usual integer rescale slope and intercept) are kept as int16, so a 512 x 512 x 1200
    scan takes 0.6 GB instead of 1.3 GB (float32) or 2.5 GB (float64, nibabel's scaled read); other values are float32.
    The scaling is applied to the stored integers directly (:class:`CompactNibabelReader`).

    Args:
        case: a case from :func:`~infnet_monai.io.cases.discover_cases` (or built by hand).
        min_slices: fewest slices accepted (default :data:`MIN_SLICES` = 2).
        max_spacing_mm: largest voxel spacing accepted on any axis, in mm (default 20).
        max_slices: most voxels along the longest axis (``--max-slices``), refused from the headers before anything
            is read; ``None`` (default): no such limit. The in-plane size and the memory available are always
            checked first (:mod:`infnet_monai.io.budget`).

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)``, int16 or float32, HU clipped below at -1024. ``.affine`` (float64, 4x4)
        maps voxel indices to RAS world mm as MONAI's ``LoadImage`` gives it. ``.meta`` also holds
        ``filename_or_obj`` (the case's source path), ``case_id``, ``source_kind`` (``"nifti"``/``"dicom"``),
        ``patient_id``, ``series_instance_uid`` and ``modality`` (strings, ``""`` when unknown so that the
        metadata collates), ``hu_correction`` (``"none"`` or ``"subtracted 1024"``) and ``clipped_below_air``
        (number of voxels raised to -1024).

    Raises:
        CaseError: the case cannot be used; the message says why and what to do.
    """
    if case.error:
        raise CaseError(case.error)
    if case.kind == "nifti":
        image, info = _load_nifti(case, min_slices, max_spacing_mm, max_slices)
    elif case.kind == "dicom":
        image, info = _load_dicom(case, min_slices, max_spacing_mm, max_slices)
    else:
        raise CaseError(f"{case.source_path}: unknown case kind {case.kind!r}; expected 'nifti' or 'dicom'.")
    name = str(case.source_path)
    image, correction, clipped = _to_hounsfield(image, name, info.rescale_missing, info.scaling)
    image.meta[ImageMetaKey.FILENAME_OR_OBJ] = name
    image.meta.update(
        {
            "case_id": case.case_id,
            "source_kind": case.kind,
            "patient_id": info.patient_id or case.patient_id or "",
            "series_instance_uid": info.series_instance_uid or case.series_instance_uid or "",
            "modality": info.modality or "",
            "hu_correction": correction,
            "clipped_below_air": clipped,
        }
    )
    logger.info(
        "%s: loaded %s, spacing %s mm%s.",
        case.case_id,
        "x".join(str(s) for s in image.shape[1:]),
        ", ".join(f"{s:.3g}" for s in affine_to_spacing(image.affine, r=3).tolist()),
        f", {clipped} voxel(s) below {AIR_HU:g} HU set to {AIR_HU:g}" if clipped else "",
    )
    return image


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CaseError(f"{path}: file not found (moved or deleted since the cases were listed). Check the input.")
    if not path.is_file():
        raise CaseError(f"{path}: not a regular file. Pass a NIfTI file or a DICOM series folder.")
    if path.stat().st_size == 0:
        raise CaseError(f"{path}: file is empty (0 bytes); the copy or export was interrupted. Copy it again.")


def _load_with(reader: ImageReader, files: Sequence[Path] | Path, name: str) -> MetaTensor:
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
    return _compact(image)


def _compact(image: MetaTensor) -> MetaTensor:
    """int16 when the values are integers that fit with room for the raw-value correction, else float32."""
    if image.dtype == torch.int16 or image.dtype == torch.float32:
        return image
    if not image.is_floating_point():
        lo, hi = int(image.min()), int(image.max())
        if _INT16_RANGE[0] <= lo and hi <= _INT16_RANGE[1]:
            return image.to(torch.int16)
    return image.to(torch.float32)


class CompactNibabelReader(NibabelReader):
    """MONAI's :class:`~monai.data.NibabelReader` with nibabel's own geometry (see :meth:`read`) and the NIfTI scaling
    (``scl_slope``, ``scl_inter``) applied to the
    stored integers without nibabel's float64 intermediate: integer results stay integers (int32 at most; :func:`load_ct`
    makes them int16), others become float32. Values equal what nibabel's scaled read gives."""

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any):
        """``nibabel.load`` of each file, without MONAI's ``correct_nifti_header_if_necessary``: that rebuilds the
        affine from ``pixdim`` when the sform's voxel size differs from it, while nibabel (and so the written masks)
        take the sform. The volume is measured in the geometry the masks carry: one geometry per case."""
        names = ensure_tuple(data)
        self.filenames = names
        options = {**self.kwargs, **kwargs}
        images = [nib.load(name, **options) for name in names]
        return images if len(names) > 1 else images[0]

    def _get_array_data(self, img, filename):  # noqa: D102 - see the class docstring
        proxy = img.dataobj
        raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
        if not raw.dtype.isnative:  # a big-endian file: torch takes native byte order only
            raw = raw.astype(raw.dtype.newbyteorder("="))
        slope = float(getattr(proxy, "slope", 1.0) if getattr(proxy, "slope", None) is not None else 1.0)
        inter = float(getattr(proxy, "inter", 0.0) if getattr(proxy, "inter", None) is not None else 0.0)
        if not np.isfinite(slope) or slope == 0.0:
            slope = 1.0  # nibabel's rule: no scaling
        if not np.isfinite(inter):
            inter = 0.0
        if slope == 1.0 and inter == 0.0:
            return raw
        if np.issubdtype(raw.dtype, np.integer) and slope == int(slope) and inter == int(inter):
            lo, hi = int(raw.min()) * int(slope), int(raw.max()) * int(slope)
            bounds = sorted((lo, hi))
            if bounds[0] + int(inter) >= -(2**31) and bounds[1] + int(inter) < 2**31:
                out = raw.astype(np.int32)
                if slope != 1.0:
                    out *= int(slope)
                out += int(inter)
                return out
        out = raw.astype(np.float32)
        out *= np.float32(slope)
        out += np.float32(inter)
        return out


def _load_nifti(
    case: CTCase, min_slices: int, max_spacing_mm: float, max_slices: int | None
) -> tuple[MetaTensor, _SourceInfo]:
    path = Path(case.files[0]) if case.files else Path(case.source_path)
    _check_file(path)
    stored = _check_nifti_stream(path, max_slices)
    try:
        header_image = nib.load(path)
        shape = tuple(int(s) for s in header_image.shape)
        affine = np.asarray(header_image.affine, dtype=np.float64)  # what MONAI's NibabelReader gives the volume
        # nibabel moves scl_slope/scl_inter into the data proxy (1 and 0 when unset); writers store 1/0 for
        # "no scaling", so only a non-zero intercept counts as a recorded rescale
        inter = float(getattr(header_image.dataobj, "inter", 0.0) or 0.0)
        slope = float(getattr(header_image.dataobj, "slope", 1.0) or 1.0)
    except Exception as e:
        raise CaseError(
            f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}). The file is truncated, corrupt or not "
            "NIfTI despite its name: export it again as .nii/.nii.gz."
        ) from e
    if len(shape) < 3:
        raise CaseError(
            f"{path}: 2D image of shape {shape}; a 3D CT volume (X, Y, Z) is needed. Export the whole series."
        )
    _check_nifti_header(path, header_image, stored, shape)
    extra = shape[3:]
    if any(s > 1 for s in extra):
        raise CaseError(
            f"{path}: {len(shape)}D image of shape {shape} holds {int(np.prod(extra))} volumes; one 3D CT volume is "
            "needed. Split it (e.g. nibabel's four_to_three) and give one volume per case."
        )
    _check_extent(path, shape[:3], min_slices)
    _check_spacing(path, affine, max_spacing_mm)
    image = _load_with(CompactNibabelReader(squeeze_non_spatial_dims=True), path, str(path))
    if tuple(image.shape) != (1, *shape[:3]):
        raise CaseError(
            f"{path}: the voxel data read (shape {tuple(image.shape[1:])}) does not match the header's {shape}. "
            "Export the image again as .nii/.nii.gz."
        )
    scaling = f"scl_slope {slope:g}, scl_inter {inter:g}"
    return image, _SourceInfo(rescale_missing=not np.isfinite(inter) or inter == 0.0, scaling=scaling)


def _stream_size(path: Path, needed: int) -> int:
    """Bytes of the (decompressed) file, reading a gzip stream to its end so that its CRC and length are checked; it
    stops once more than ``needed`` bytes came (the file is refused then, without inflating the rest)."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while size <= needed and (chunk := f.read(1 << 22)):  # bounded memory
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CaseError(
            f"{path}: the gzip stream is damaged ({type(e).__name__}: {e}); its voxels cannot be trusted. The file "
            "was corrupted in storage or transfer: copy or export it again."
        ) from e
    return size


def _check_nifti_stream(path: Path, max_slices: int | None = None) -> nib.Nifti1Header:
    """Check the stored header's basic fields and the data size before anything is decoded: ``dim[0]``, the
    dimensions, the datatype and ``vox_offset`` must describe exactly the bytes the file (gzip checked to its end)
    holds; a changed header would otherwise read the voxels shifted, in pieces or as another type. Returns the
    header as stored (nibabel's own reading sets a 0 in pixdim to 1)."""
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            head = f.read(4)
        sizeof_hdr = int(np.frombuffer(head, "<i4")[0]) if len(head) == 4 else 0
        if sizeof_hdr not in (348, 540) and len(head) == 4:
            sizeof_hdr = int(np.frombuffer(head, ">i4")[0])
        klass = nib.Nifti2Header if sizeof_hdr == 540 else nib.Nifti1Header
        with nib.openers.ImageOpener(str(path)) as f:
            stored = klass.from_fileobj(f, check=False)
    except Exception as e:  # noqa: BLE001 - random bytes can fail anywhere in the parse
        raise CaseError(
            f"{path}: not a readable NIfTI image ({type(e).__name__}: {e}). The file is truncated, corrupt or not "
            "NIfTI despite its name: export it again as .nii/.nii.gz."
        ) from e
    magic = bytes(stored["magic"]).rstrip(b"\0")
    if magic not in (b"n+1", b"n+2", b"ni1", b"ni2"):
        raise CaseError(
            f"{path}: not a NIfTI image (magic {magic!r}, expected b'n+1'). The file is corrupt or another format "
            "despite its name: export it again as .nii/.nii.gz."
        )
    forms = {k: np.asarray(stored[k], dtype=np.float64) for k in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x",
             "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")}  # fmt: skip
    broken = [k for k, v in forms.items() if not np.all(np.isfinite(v))]
    if broken:  # even in a form whose code says "unused": a header with NaN in it is damaged
        raise CaseError(
            f"{path}: the header's {', '.join(broken)} hold NaN or infinite numbers, so the volume's position cannot "
            "be trusted. The header is damaged: fix it or export the image again."
        )
    dim = [int(d) for d in stored["dim"]]
    if not 1 <= dim[0] <= 7:
        raise CaseError(
            f"{path}: header field dim[0] is {dim[0]}, but it must give the number of dimensions (1 to 7). The "
            "header is damaged: export the image again."
        )
    if any(d < 1 for d in dim[1 : dim[0] + 1]):
        raise CaseError(f"{path}: header dimensions {dim[1 : dim[0] + 1]} hold a size below 1. The header is damaged.")
    try:
        itemsize = np.dtype(stored.get_data_dtype()).itemsize
    except Exception as e:  # noqa: BLE001 - an unknown datatype code
        raise CaseError(f"{path}: unknown NIfTI datatype code {int(stored['datatype'])} ({e}). The header is damaged.") from e
    refusal = nifti_size_refusal(path, stored, max_slices)  # before a byte is inflated, in Python ints
    if refusal:
        raise CaseError(refusal)
    offset = int(stored["vox_offset"])
    needed = offset + int(np.prod(dim[1 : dim[0] + 1], dtype=np.int64)) * itemsize
    size = _stream_size(path, needed)
    if offset >= int(stored["sizeof_hdr"]) and size != needed:
        state = "is cut short" if size < needed else "holds more data than the header describes"
        raise CaseError(
            f"{path}: the file {state}: {'over ' if size > needed else ''}{size} bytes"
            f"{' uncompressed' if path.name.lower().endswith('.gz') else ''}, "
            f"while the header (dim {dim[1 : dim[0] + 1]}, datatype {stored.get_data_dtype()}, vox_offset {offset}) "
            f"needs {needed}. The file is truncated or its header was changed: export it again."
        )
    return stored


def _check_nifti_header(path: Path, image: nib.Nifti1Image, stored: nib.Nifti1Header, shape: Sequence[int]) -> None:
    """Refuse NIfTI headers that would give wrong voxels or a wrong geometry without any other error: a voxel offset
    inside the header, a zero or undefined pixdim, and a qform and sform that both claim to place the volume but
    disagree by more than half a voxel (the volume would be measured in one and the masks written in the other)."""
    header = image.header
    first = int(getattr(header, "sizeof_hdr", NIFTI1_MIN_VOX_OFFSET - 4)) + 4  # 352 for NIfTI-1, 544 for NIfTI-2
    offset = int(getattr(image.dataobj, "offset", first))
    single_file = path.name.lower().endswith((".nii", ".nii.gz"))
    if single_file and isinstance(header, nib.Nifti1Header) and offset < first:
        raise CaseError(
            f"{path}: vox_offset {offset} lies inside the {first}-byte NIfTI header, so the voxels "
            "would be read from the header bytes. The file is damaged: export it again."
        )
    pixdim = np.asarray(stored["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        raise CaseError(
            f"{path}: pixdim {pixdim.tolist()} holds a zero or undefined voxel size, which would be taken as 1 mm. "
            "Fix the header's voxel sizes (pixdim[1:4]) or export the image again."
        )
    try:
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
    except Exception as e:  # nibabel's HeaderDataError on a NaN quaternion, among others
        raise CaseError(f"{path}: the qform or sform cannot be read ({type(e).__name__}: {e}). Fix the header.") from e
    if any(m is not None and not np.all(np.isfinite(m)) for m in (qform, sform)):
        raise CaseError(f"{path}: the qform or sform holds NaN or infinite numbers. Fix the header.")
    if qform is None or sform is None or not (qcode and scode):
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    apart = np.linalg.norm((corners @ qform.T - corners @ sform.T)[:, :3], axis=1).max()
    voxel = float(np.min(affine_to_spacing(np.asarray(sform, dtype=np.float64), r=3)))
    if not np.isfinite(apart) or apart > 0.5 * voxel:
        raise CaseError(
            f"{path}: the qform and the sform place the volume {apart:.1f} mm apart (more than half a voxel). Which "
            "geometry is right cannot be told from the file: fix the header (e.g. set the wrong one's code to 0)."
        )


def _dicom_headers(case: CTCase) -> list[SliceHeader]:
    """The header fields of each file of ``case``: those discovery read (``case.headers``) for the files unchanged
    since, the others read now."""
    if not case.files:
        raise CaseError(f"{case.source_path}: no DICOM files listed for this case. List the cases again.")
    carried = {header.path: header for header in case.headers}
    headers = []
    for path in case.files:
        path = Path(path)
        _check_file(path)
        header = carried.get(path)
        if header is None or not header.is_current():
            header = read_slice_header(path)
        if header is None:
            raise CaseError(f"{path}: not a readable DICOM image. Remove it from the series folder or replace it.")
        headers.append(header)
    return headers


_NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)  # implicit / explicit VR little endian, explicit VR big endian, deflated: pixels stored as they are


_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"  # the dataset is one zlib stream: no element can be found by its offset


def _pixel_data_tail(path: Path, header: SliceHeader) -> Dataset | None:
    """The elements of ``path`` from its pixel data on, parsed by pydicom as ``pydicom.dcmread`` parses them when it
    reads the whole file (same VR encoding, positions, errors and warnings), without parsing the header again; or
    ``None`` when that cannot be vouched for (no pixel data offset, a deflated dataset, an element out of order after
    the pixel data): the whole file is read then."""
    syntax = header.transfer_syntax
    if header.pixel_offset is None or header.encoding is None or syntax == _DEFLATED_SYNTAX:
        return None
    if not isinstance(syntax, str):  # reading it raised: the whole file's read raises it where it did
        return None
    implicit, little = header.encoding
    with open(path, "rb") as f:
        f.seek(header.pixel_offset)
        head = f.read(6)
        # pydicom takes a dataset's VR encoding from its first element: the pixel data's must give the header's
        found_implicit = len(head) < 6 or not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)
        if found_implicit != implicit:
            return None
        f.seek(header.pixel_offset)
        tail = read_dataset(f, implicit, little)
    if any(tag < 0x7FE00008 for tag in tail.keys()):  # would replace a header element in the whole file's dataset
        return None
    return tail


def _check_pixel_data(path: Path, header: SliceHeader) -> None:
    """Refuse an image whose pixel data do not fit its header: a size other than Rows x Columns x BitsAllocated
    (a cut copy, a changed Rows), native data under a compressed transfer syntax or the reverse, or pixels that are
    not one grayscale sample of 8, 16 or 32 bits. GDCM would otherwise read such data shifted or as noise.

    Only the pixel data element is parsed, after the header fields read at discovery (:func:`_pixel_data_tail`);
    the whole file where that cannot be done."""
    fields = (header.transfer_syntax, header.pixel_format, header.photometric)
    try:
        tail = _pixel_data_tail(path, header)
        if tail is None:
            ds = read_dicom(path, force=True, max_inflated=dicom_file_bound(header))  # a deflated one within a bound
            fields = pixel_data_fields(ds)
            element = ds.get_item("PixelData")
        else:
            element = tail.get_item("PixelData")
        data = element.value if element is not None else None
    except InflateLimitError as e:
        raise CaseError(f"{path}: {e}. Export the series again without deflate compression.") from e
    except Exception as e:  # noqa: BLE001 - pydicom may raise anything on a damaged file
        raise CaseError(f"{path}: the DICOM file cannot be read to its end ({type(e).__name__}: {e}). Copy it again.") from e
    if data is None:
        raise CaseError(
            f"{path}: the pixel data are missing or cut short (the file ends before them): the file was truncated or "
            "damaged in a copy. Copy or export the series again."
        )
    syntax = field_value(fields[0])
    encapsulated = bool(getattr(element, "is_undefined_length", False)) or getattr(element, "length", 0) == 0xFFFFFFFF
    try:
        rows, cols, bits, samples, stored, frames = field_value(fields[1])
    except (TypeError, ValueError) as e:
        raise CaseError(f"{path}: Rows, Columns, BitsAllocated or SamplesPerPixel is not a number ({e}).") from e
    photometric = field_value(fields[2])
    if bits not in (8, 16, 32) or not 1 <= stored <= bits or samples != 1 or not photometric.startswith("MONOCHROME"):
        raise CaseError(
            f"{path}: pixels of BitsAllocated {bits}, BitsStored {stored}, SamplesPerPixel {samples}, "
            f"PhotometricInterpretation {photometric}: not a grayscale CT image (8, 16 or 32 bits, one sample). "
            "The header is damaged or the image is not CT: export the series again."
        )
    if syntax in _NATIVE_SYNTAXES:
        if encapsulated:
            raise CaseError(
                f"{path}: the pixel data are compressed (encapsulated) but the transfer syntax {syntax} says they are "
                "not. The header is damaged: export the series again."
            )
        needed = rows * cols * samples * frames * bits // 8
        if len(data) < needed or len(data) > needed + 1:  # + 1: a padding byte to an even length
            state = "cut short" if len(data) < needed else "longer than the header describes"
            raise CaseError(
                f"{path}: the pixel data are {state}: {len(data)} bytes, while Rows {rows} x Columns {cols} x "
                f"BitsAllocated {bits} need {needed}. The file was truncated or its header changed: export it again."
            )
    elif not encapsulated:
        raise CaseError(
            f"{path}: the transfer syntax {syntax} is a compressed one, but the pixel data are stored uncompressed. "
            "The header is damaged: export the series again."
        )


def _vector(header: SliceHeader, name: str, keyword: str, n: int, path: Path) -> np.ndarray:
    try:
        value = np.asarray(header.field(name), dtype=np.float64)
    except Exception as e:
        raise CaseError(
            f"{path}: DICOM tag {keyword} is missing or invalid ({e}); the slice geometry cannot be built. "
            "Export the series with complete headers."
        ) from None
    if value.shape != (n,) or not np.all(np.isfinite(value)):
        raise CaseError(f"{path}: DICOM tag {keyword} must hold {n} numbers, got {list(value)}.")
    return value


def _check_single_frames(files: list[Path], headers: list[SliceHeader]) -> None:
    for path, header in zip(files, headers):
        frames = header.field("frames")
        if frames > 1:
            raise CaseError(
                f"{path}: multi-frame DICOM ({frames} frames in one file) is not supported. Convert the series "
                "to NIfTI (e.g. with dcm2niix) and give the NIfTI file."
            )


def _regular_slice_spacing(folder, files: list[Path], along: np.ndarray) -> float:
    """The median slice spacing of the sorted positions ``along`` the normal; duplicates, gaps (missing slices) and
    non-uniform spacing are refused."""
    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < _DUPLICATE_MM)
    if dup.size:
        i = int(dup[0])
        raise CaseError(
            f"{folder}: {dup.size} duplicate slice position(s), e.g. {files[i].name} and {files[i + 1].name} at "
            f"{along[i]:.3f} mm along the slice normal. The folder mixes two acquisitions of one series: keep one."
        )
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if gaps[worst] > _MAX_GAP_RATIO * median:
        raise CaseError(
            f"{folder}: gap of {gaps[worst]:.3g} mm between slices {files[worst].name} and {files[worst + 1].name} "
            f"({gaps[worst] / median:.2g}x the median spacing of {median:.3g} mm): slice(s) are missing. Export the "
            "complete series (volumes are not resampled)."
        )
    if abs(gaps[worst] - median) > _SPACING_TOLERANCE * median:
        raise CaseError(
            f"{folder}: non-uniform slice spacing: {gaps[worst]:.3g} mm between {files[worst].name} and "
            f"{files[worst + 1].name}, median {median:.3g} mm. Resample the series to uniform spacing (e.g. convert "
            "it to NIfTI with a tool that resamples) and give that file."
        )
    return median


def _check_stacked(folder, positions: np.ndarray, normal: np.ndarray, along: np.ndarray, pixel_mm: float, tilt_tag) -> None:
    """Refuse slice positions that drift in-plane by more than half a pixel (gantry tilt, shear)."""
    offsets = positions - positions[0]
    inplane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.max(np.linalg.norm(inplane, axis=1)))
    if drift > 0.5 * pixel_mm:
        extent = float(along[-1] - along[0])
        angle = float(np.degrees(np.arctan2(drift, extent)))
        raise CaseError(
            f"{folder}: slice positions are not stacked along the slice normal: they drift {drift:.3g} mm in-plane "
            f"over {extent:.3g} mm (about {angle:.2g} degrees; GantryDetectorTilt={tilt_tag}). Gantry-tilted or "
            "sheared series are not supported: correct the tilt (e.g. dcm2niix does) and give the NIfTI file."
        )


def _check_dicom_geometry(
    case: CTCase, headers: list[SliceHeader], min_slices: int, max_spacing_mm: float
) -> tuple[list[Path], np.ndarray, list[SliceHeader]]:
    """Validate slice geometry from the headers; return the files sorted along the normal, the volume's RAS affine
    and the headers in the files' order."""
    folder = case.source_path
    files = [Path(p) for p in case.files]
    _check_single_frames(files, headers)
    orientations = [_vector(h, "orientation", "ImageOrientationPatient", 6, p) for p, h in zip(files, headers)]
    positions = np.stack([_vector(h, "position", "ImagePositionPatient", 3, p) for p, h in zip(files, headers)])
    pixel_spacings = [_vector(h, "pixel_spacing", "PixelSpacing", 2, p) for p, h in zip(files, headers)]
    sizes = {(h.rows, h.columns) for h in headers}
    if len(sizes) > 1:
        raise CaseError(f"{folder}: slices of different sizes {sorted(sizes)} in one series. Export it again.")
    for path, o, s in zip(files, orientations, pixel_spacings):
        if not np.allclose(o, orientations[0], atol=1e-4) or not np.allclose(s, pixel_spacings[0], atol=1e-4):
            raise CaseError(
                f"{folder}: slice {path.name} has another orientation or pixel spacing than {files[0].name}; "
                "the series is not one regular volume. Export it again or reformat it."
            )
    row_cos, col_cos = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_cos, col_cos)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-3:
        raise CaseError(f"{files[0]}: ImageOrientationPatient {list(orientations[0])} is degenerate.")
    normal /= norm
    (rows, cols), n = next(iter(sizes)), len(files)
    _check_extent(folder, (cols, rows, n), min_slices)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    files = [files[i] for i in order]
    median = _regular_slice_spacing(folder, files, along)
    pixel = pixel_spacings[0]
    _check_stacked(folder, positions, normal, along, float(np.min(pixel)), headers[0].field("gantry_tilt"))
    lps = np.eye(4)
    lps[:3, 0] = row_cos * pixel[1]  # PixelSpacing is (between rows, between columns)
    lps[:3, 1] = col_cos * pixel[0]
    lps[:3, 2] = normal * median
    lps[:3, 3] = positions[0]
    ras = orientation_ras_lps(lps)
    _check_spacing(folder, ras, max_spacing_mm)
    return files, ras, [headers[i] for i in order]


def _load_dicom(
    case: CTCase, min_slices: int, max_spacing_mm: float, max_slices: int | None
) -> tuple[MetaTensor, _SourceInfo]:
    headers = _dicom_headers(case)
    refusal = dicom_size_refusal(case.source_path, headers, max_slices)  # before any pixel data is read or inflated
    if refusal:
        raise CaseError(refusal)
    files, expected, sorted_headers = _check_dicom_geometry(case, headers, min_slices, max_spacing_mm)
    first = headers[0]
    modality = first.field("modality")
    if modality is None:
        modality = modality_from_sop_class(first.field("sop_class_uid"))
        logger.debug("%s: no Modality tag; %s inferred from the SOP class.", case.source_path, modality or "nothing")
    if modality is not None and modality != "CT":
        raise CaseError(f"{case.source_path}: modality is {modality}, not CT. Only CT images can be segmented.")
    for path, header in zip(files, sorted_headers):  # after the geometry, which names the likelier problem of a series
        _check_pixel_data(path, header)
    reader = SimpleITKSeriesReader(num_workers=_reader_threads(), int16_range=_INT16_RANGE)
    try:
        image = _load_with(reader, files, str(case.source_path))
    except CaseError:
        bare = [p for p in files if not has_dicm_marker(p)]
        if bare:
            raise CaseError(
                f"{bare[0]}{f' and {len(bare) - 1} more file(s)' if len(bare) > 1 else ''}: no DICOM preamble and file "
                "meta ('DICM' at byte 128), so GDCM cannot read the pixels. Write the series as DICOM files (e.g. "
                "gdcmconv or dcmconv +F) or export it again."
            ) from None
        raise
    got = np.asarray(image.affine, dtype=np.float64)
    rows, cols = first.rows, first.columns
    if tuple(image.shape) != (1, cols, rows, len(files)) or not np.allclose(got, expected, atol=1e-2, rtol=1e-3):
        raise CaseError(
            f"{case.source_path}: the volume read by SimpleITK (shape {tuple(image.shape)}, affine {got.tolist()}) "
            f"does not match the DICOM headers (shape {(1, cols, rows, len(files))}, affine {expected.tolist()}). "
            "Convert the series to NIfTI (e.g. with dcm2niix) and give the NIfTI file."
        )
    info = _SourceInfo(
        modality=modality,
        patient_id=first.field("patient_id"),
        series_instance_uid=first.field("series_instance_uid"),
        rescale_missing=all(not h.has_rescale_intercept for h in headers),
        scaling=first.field("rescale"),
    )
    return image, info


def _check_extent(name, shape: Sequence[int], min_slices: int) -> None:
    """Refuse a volume of ``shape`` ``(X, Y, Z)`` with fewer than ``min_slices`` slices or slices under 2x2 voxels."""
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


def _check_spacing(name, affine: np.ndarray, max_spacing_mm: float) -> None:
    """Refuse a voxel-to-world ``affine`` (RAS, from the headers) with a spacing outside [:data:`MIN_SPACING_MM`,
    ``max_spacing_mm``] or
    that is not finite and invertible."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = affine_to_spacing(affine, r=3)
    if not np.all(np.isfinite(affine)) or np.any(spacing < MIN_SPACING_MM) or np.any(spacing > max_spacing_mm):
        raise CaseError(
            f"{name}: voxel spacing {np.round(spacing, 4).tolist()} mm is outside [{MIN_SPACING_MM:g}, {max_spacing_mm:g}] mm on some "
            "axis. Check the image header (NIfTI pixdim/sform/qform or DICOM PixelSpacing and slice positions)."
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise CaseError(f"{name}: the image affine {affine.tolist()} is singular. Fix the image header.")


_COUNT_SLAB = 1 << 20  # voxels tested at a time: small masks, reused, instead of one volume-sized mask per test


def _count_voxels(volume: torch.Tensor, *tests: Callable[[np.ndarray], np.ndarray]) -> list[int]:
    """How many voxels of ``volume`` (on the CPU) pass each test (a function giving a bool mask of its numpy
    argument), in one pass over slabs of :data:`_COUNT_SLAB` voxels: no volume-sized mask is allocated (and paged in)
    per test. numpy, not torch: many small torch operations wait on its worker threads."""
    flat = volume.detach().numpy().reshape(-1)
    counts = [0] * len(tests)
    for start in range(0, flat.size, _COUNT_SLAB):
        part = flat[start : start + _COUNT_SLAB]
        for i, test in enumerate(tests):
            counts[i] += int(np.count_nonzero(test(part)))
    return counts


def _check_hu_range(image: MetaTensor, name: str, scaling: str) -> None:
    """Refuse a volume whose values, its padding (the minimum value) aside, leave :data:`HU_PLAUSIBLE_RANGE` for more
    than :data:`HU_MAX_IMPLAUSIBLE_FRACTION` of the voxels: a wrong slope or intercept, or data of another type."""
    low, high = HU_PLAUSIBLE_RANGE
    hu = (lambda v: v) if image.is_floating_point() else (lambda v: int(v))
    volume = image.as_tensor()
    padding = volume.min().item()
    n_padding, n_low, n_high, dense = _count_voxels(
        volume, lambda v: v == padding, lambda v: v < hu(low), lambda v: v > hu(high), lambda v: v > hu(1000.0)
    )
    rest = image.numel() - n_padding
    if rest == 0:
        return  # one value only: the air and body checks tell what is wrong
    outside = (n_low - n_padding if padding < hu(low) else n_low) + n_high  # below the range, padding aside
    edges = torch.cat([volume[0, [0, -1]].reshape(-1), volume[0, :, [0, -1]].reshape(-1)])
    edges = edges[edges != padding]
    edge_median = float(edges.float().median()) if edges.numel() else float("nan")
    if dense > HU_MAX_DENSE_FRACTION * rest or edge_median > HU_MAX_EDGE_MEDIAN:
        raise CaseError(
            f"{name}: {100.0 * dense / rest:.0f}% of the voxels are denser than +1000 HU and the image's edge has a "
            f"median of {edge_median:.0f} HU ({scaling or 'no scaling recorded'}): this is noise or an inverted or "
            "wrong scale, not a CT in Hounsfield units (bone is a few per cent of a CT, its edge is air or tissue). "
            "Export the original CT again."
        )
    if outside > HU_MAX_IMPLAUSIBLE_FRACTION * rest:
        raise CaseError(
            f"{name}: {100.0 * outside / rest:.0f}% of the voxels lie outside [{low:g}, {high:g}] HU (values "
            f"{float(image.min()):g}..{float(image.max()):g}; {scaling or 'no scaling recorded'}): the rescale slope "
            "or intercept is wrong, or the data were damaged. A CT in Hounsfield units has air near -1000 and bone "
            "below 4000: fix the scaling or export the original CT again."
        )


def _to_hounsfield(image: MetaTensor, name: str, rescale_missing: bool, scaling: str = "") -> tuple[MetaTensor, str, int]:
    """Check that ``image`` holds HU, correct raw stored values, clip padding to air."""
    n_bad = 0
    if image.is_floating_point():
        (n_bad,) = _count_voxels(image.as_tensor(), lambda v: ~np.isfinite(v))
    if n_bad:
        raise CaseError(
            f"{name}: {n_bad} voxel(s) are NaN or infinite. The image is damaged or was processed with errors: "
            "export the original CT again."
        )
    # thresholds as Python ints for integer volumes: a float scalar would make torch compare a float32 copy
    hu = (lambda v: v) if image.is_floating_point() else (lambda v: int(v))
    vmin, vmax = float(image.as_tensor().min()), float(image.as_tensor().max())
    correction = "none"
    if vmin >= 0.0 and vmax > 1000.0:
        total = image.numel()
        air, soft, dense = (
            n / total
            for n in _count_voxels(
                image.as_tensor(),
                lambda v: v <= hu(RAW_CT_OFFSET + _AIR_THRESHOLD_HU),
                lambda v: (v >= hu(RAW_CT_OFFSET - 100.0)) & (v <= hu(RAW_CT_OFFSET + 100.0)),
                lambda v: v > hu(RAW_CT_OFFSET + 1000.0),
            )
        )
        fits = air >= _RAW_MIN_FRACTION and soft >= _RAW_MIN_FRACTION and dense <= _RAW_MAX_DENSE_FRACTION
        if not (rescale_missing and fits):
            reason = (
                "its header records a rescale slope/intercept, so the values should already be HU"
                if not rescale_missing
                else f"the histogram does not look like raw CT ({air:.1%} air-like, {soft:.1%} soft-tissue-like, "
                f"{dense:.1%} above +1000 HU)"
            )
            raise CaseError(
                f"{name}: values range from {vmin:g} to {vmax:g} with none below 0, so they are not Hounsfield units, "
                f"and {reason}. Convert the image to HU (HU = stored value x slope + intercept) and try again."
            )
        logger.warning(
            "%s: values range from %g to %g without a rescale intercept; treating them as raw CT values and "
            "subtracting %g to get HU (%.1f%% air-like, %.1f%% soft-tissue-like voxels).",
            name,
            vmin,
            vmax,
            RAW_CT_OFFSET,
            100 * air,
            100 * soft,
        )
        image.sub_(hu(RAW_CT_OFFSET))
        correction = f"subtracted {RAW_CT_OFFSET:g}"
    _check_hu_range(image, name, scaling)
    n_air, clipped = _count_voxels(image.as_tensor(), lambda v: v < hu(_AIR_THRESHOLD_HU), lambda v: v < hu(AIR_HU))
    if not n_air:
        raise CaseError(
            f"{name}: no voxel below {_AIR_THRESHOLD_HU:g} HU (values {float(image.min()):g}..{float(image.max()):g})."
            " A CT in Hounsfield units always shows air (about -1000 HU) around the body and in the lungs; this "
            "looks like a label map, a normalised image or other units. Give the original CT in HU."
        )
    if clipped:
        image.clamp_(min=hu(AIR_HU))
    return image, correction, clipped
