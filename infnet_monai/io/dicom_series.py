"""Reading a DICOM CT series: :class:`SimpleITKSeriesReader` (a MONAI ``ImageReader`` over SimpleITK / GDCM) and
:func:`load_dicom_series`, :func:`~infnet_monai.io.volume.load_ct`'s reader for a DICOM case.

The reader follows ``monai.data.ITKReader`` conventions (array indexed ``(X, Y, Z)``, LPS -> RAS affine), so no extra
``itk`` package is needed; it decodes the slices in threads, with the voxels and geometry of one
``sitk.ImageSeriesReader``. GDCM applies RescaleSlope/Intercept. The headers are those discovery read
(``CTCase.headers``): each file's header is parsed once per run; the size budget (:mod:`infnet_monai.io.budget`),
the geometry and the pixel data (:mod:`infnet_monai.io.dicom_checks`) are checked from them before GDCM decodes a
pixel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from infnet_monai.io.base_reader import CaseError, SourceInfo, check_file, read_volume
from infnet_monai.io.budget import dicom_size_refusal
from infnet_monai.io.cases import CTCase
from infnet_monai.io.dicom_checks import check_dicom_geometry, check_pixel_data
from infnet_monai.io.dicom_headers import SliceHeader, has_dicm_marker, modality_from_sop_class, read_slice_header
from infnet_monai.io.hounsfield import INT16_HU_RANGE

__all__ = ["SimpleITKSeriesReader", "load_dicom_series"]

logger = logging.getLogger(__name__)

_SLICES_PER_TASK = 32  # slices one thread reads, then stores transposed at once (longer runs of z written together)
_ROWS_PER_COPY = 16  # image rows of a block transposed at a time: what is read and written stays in cache (2x faster)


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


def load_dicom_series(
    case: CTCase, min_slices: int, max_spacing_mm: float, max_slices: int | None
) -> tuple[MetaTensor, SourceInfo]:
    """The voxels of a DICOM case as GDCM rescales them (not yet compacted or checked as HU), after the checks of its
    headers: size, geometry, modality and each file's pixel data.

    Args:
        case: a case of kind ``"dicom"``.
        min_slices, max_spacing_mm, max_slices: as :func:`~infnet_monai.io.volume.load_ct` takes them.

    Returns:
        ``MetaTensor`` ``(1, X, Y, Z)`` whose affine is that of the headers, and the source's modality, ids and
        scaling.

    Raises:
        CaseError: the series cannot be used; the message names the file and what to do.
    """
    headers = _dicom_headers(case)
    refusal = dicom_size_refusal(case.source_path, headers, max_slices)  # before any pixel data is read or inflated
    if refusal:
        raise CaseError(refusal)
    files, expected, sorted_headers = check_dicom_geometry(case, headers, min_slices, max_spacing_mm)
    first = headers[0]
    modality = first.field("modality")
    if modality is None:
        modality = modality_from_sop_class(first.field("sop_class_uid"))
        logger.debug("%s: no Modality tag; %s inferred from the SOP class.", case.source_path, modality or "nothing")
    if modality is not None and modality != "CT":
        raise CaseError(f"{case.source_path}: modality is {modality}, not CT. Only CT images can be segmented.")
    for path, header in zip(files, sorted_headers):  # after the geometry, which names the likelier problem of a series
        check_pixel_data(path, header)
    reader = SimpleITKSeriesReader(num_workers=_reader_threads(), int16_range=INT16_HU_RANGE)
    try:
        image = read_volume(reader, files, str(case.source_path))
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
    info = SourceInfo(
        modality=modality,
        patient_id=first.field("patient_id"),
        series_instance_uid=first.field("series_instance_uid"),
        rescale_missing=all(not h.has_rescale_intercept for h in headers),
        scaling=first.field("rescale"),
    )
    return image, info


def _dicom_headers(case: CTCase) -> list[SliceHeader]:
    """The header fields of each file of ``case``: those discovery read (``case.headers``) for the files unchanged
    since, the others read now."""
    if not case.files:
        raise CaseError(f"{case.source_path}: no DICOM files listed for this case. List the cases again.")
    carried = {header.path: header for header in case.headers}
    headers = []
    for path in case.files:
        path = Path(path)
        check_file(path)
        header = carried.get(path)
        if header is None or not header.is_current():
            header = read_slice_header(path)
        if header is None:
            raise CaseError(f"{path}: not a readable DICOM image. Remove it from the series folder or replace it.")
        headers.append(header)
    return headers

