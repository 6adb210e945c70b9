"""Loading a :class:`~infnet_monai.io.cases.CTCase` as a validated 3D CT volume in Hounsfield units.

:func:`load_ct` returns a ``monai.data.MetaTensor`` of shape ``(1, X, Y, Z)`` whose ``affine`` follows MONAI's
convention (voxel index -> RAS world millimetres), exactly as ``monai.transforms.LoadImage`` produces it, so the
pipeline can apply MONAI spatial transforms and invert them later:

- NIfTI (:mod:`infnet_monai.io.nifti`): ``LoadImage(reader=CompactNibabelReader(...))``, MONAI's ``NibabelReader``
  with the scaling applied without a float64 copy; the affine is nibabel's.
- DICOM (:mod:`infnet_monai.io.dicom_series`): ``LoadImage(reader=SimpleITKSeriesReader(num_workers=...))`` on the
  case's sorted file list. ``SimpleITKSeriesReader`` is a MONAI ``ImageReader`` over SimpleITK (GDCM) that follows
  ``monai.data.ITKReader`` conventions (array indexed ``(X, Y, Z)``, LPS -> RAS affine), so no extra ``itk`` package
  is needed; it decodes the slices in threads, with the voxels and geometry of one ``sitk.ImageSeriesReader``. GDCM
  applies RescaleSlope/Intercept. The headers are those discovery read (``CTCase.headers``): each file's header is
  parsed once per run (the pixel data check of :mod:`infnet_monai.io.dicom_checks` parses only the pixel data
  element).
- Hounsfield units (:mod:`infnet_monai.io.hounsfield`): the values are stored compactly, checked and corrected.

The volume is checked, its geometry from the headers before the voxels are read, and any problem raises
:class:`CaseError` naming the file, the problem and what to do (each check is made once, in one function; the
limits any volume must meet are in :mod:`infnet_monai.io.base_reader`):

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

import logging

from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.utils import ImageMetaKey

from infnet_monai.io.base_reader import MAX_SPACING_MM, MIN_SLICES, CaseError
from infnet_monai.io.cases import CTCase
from infnet_monai.io.dicom_series import load_dicom_series
from infnet_monai.io.hounsfield import AIR_HU, compact_hu, to_hounsfield
from infnet_monai.io.nifti import load_nifti
from infnet_monai.utils.deprecation import moved_names

__all__ = ["CaseError", "load_ct"]

logger = logging.getLogger(__name__)

MOVED_NAMES = {
    "SimpleITKSeriesReader": "infnet_monai.io.dicom_series.SimpleITKSeriesReader",
    "CompactNibabelReader": "infnet_monai.io.nifti.CompactNibabelReader",
    "NIFTI1_MIN_VOX_OFFSET": "infnet_monai.io.nifti.NIFTI1_MIN_VOX_OFFSET",
    "RAW_CT_OFFSET": "infnet_monai.io.hounsfield.RAW_CT_OFFSET",
    "HU_PLAUSIBLE_RANGE": "infnet_monai.io.hounsfield.HU_PLAUSIBLE_RANGE",
    "HU_MAX_DENSE_FRACTION": "infnet_monai.io.hounsfield.HU_MAX_DENSE_FRACTION",
    "HU_MAX_EDGE_MEDIAN": "infnet_monai.io.hounsfield.HU_MAX_EDGE_MEDIAN",
    "HU_MAX_IMPLAUSIBLE_FRACTION": "infnet_monai.io.hounsfield.HU_MAX_IMPLAUSIBLE_FRACTION",
    "MIN_SPACING_MM": "infnet_monai.io.base_reader.MIN_SPACING_MM",
    "MIN_INPLANE_VOXELS": "infnet_monai.io.base_reader.MIN_INPLANE_VOXELS",
}
"""Names that this module held in 0.10.0 -> where they are now (:data:`AIR_HU`, :data:`MIN_SLICES` and
:data:`MAX_SPACING_MM`, which :func:`load_ct` uses, are still found here; their homes are
:mod:`~infnet_monai.io.hounsfield` and :mod:`~infnet_monai.io.base_reader`)."""

__getattr__ = moved_names(__name__, MOVED_NAMES)


def load_ct(
    case: CTCase, min_slices: int = MIN_SLICES, max_spacing_mm: float = MAX_SPACING_MM, max_slices: int | None = None
) -> MetaTensor:
    """Load and validate one CT case as a volume in Hounsfield units, stored compactly.

    Integer Hounsfield units (the usual integer rescale slope and intercept) are kept as int16, so a 512 x 512 x 1200
    scan takes 0.6 GB instead of 1.3 GB (float32) or 2.5 GB (float64, nibabel's scaled read); other values are float32.
    The scaling is applied to the stored integers directly (:class:`~infnet_monai.io.nifti.CompactNibabelReader`).

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
        image, info = load_nifti(case, min_slices, max_spacing_mm, max_slices)
    elif case.kind == "dicom":
        image, info = load_dicom_series(case, min_slices, max_spacing_mm, max_slices)
    else:
        raise CaseError(f"{case.source_path}: unknown case kind {case.kind!r}; expected 'nifti' or 'dicom'.")
    name = str(case.source_path)
    image, correction, clipped = to_hounsfield(compact_hu(image), name, info.rescale_missing, info.scaling)
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
