"""The pipeline's parts as MONAI components, shared by :class:`~infnet_monai.pipeline.CTSegmenter` and the bundle.

The bundle's ``configs/inference.json`` lists the same parts with ``_target_`` (``network_def``, ``preprocessing``,
``inferer``, ``postprocessing``); the command line and the Python API build them with the factories below. Either way
one implementation runs them (:class:`~infnet_monai.pipeline.CTSegmenter`, through its
:class:`~infnet_monai.pipeline.predictor.VolumePredictor`):

``preprocessing`` (a :class:`~monai.transforms.Compose` over ``{"image": case}``):
    :class:`~infnet_monai.transforms.LoadCTd` (the project's reader), ``Orientationd`` to RAS,
    :class:`~infnet_monai.postprocessing.LungMaskd` (lung mask from Hounsfield units, into ``"lung"``, and the central
    airway it found, into ``"airway"``), then the slice preparation: ``Orientationd`` of image and lung to the training
    slices' orientation, the Hounsfield window (``ScaleIntensityRanged``) and the standardisation
    (``NormalizeIntensityd``). The predictor applies the steps up to the last one that needs the whole volume once,
    and streams the slice-wise rest (:func:`split_slicewise`), with the network and its inversion, in slabs of
    slices.
``inferer``:
    :class:`~infnet_monai.inferers.LungCropSliceInferer` (MONAI's ``SliceInferer`` over each slice cropped to its
    lungs and resized to the network's input).
``postprocessing`` (a ``Compose`` over ``{"image": CT in RAS, "lung", "airway", "pred": infection probability,
"share": consolidation share}`` on the RAS grid):
    :class:`~infnet_monai.postprocessing.ExtendLungd`, :class:`~infnet_monai.postprocessing.InfectionMaskd` (with
    the nodule-like lesions apart), :class:`~infnet_monai.postprocessing.InfectionClassesd`, ``DeleteItemsd`` of
    the probabilities, :class:`~infnet_monai.stats.InfectionBurdend` (statistics on the RAS grid),
    :class:`~infnet_monai.stats.AnatomyChecksd` (the anatomical self-checks, with the lung mask's ``"airway"``: the
    trachea is not tracked again), :class:`~infnet_monai.stats.CaseReadoutd` (zones and the lesion table on the RAS
    grid, into ``"burden"`` and ``"lesions"``), ``DeleteItemsd`` of the airway, and ``Invertd`` of the masks (the
    infection, the nodule-like lesions under ``"nodules"``, the lung, the classes) and the CT through the RAS
    orientation back onto the input's voxel grid. :class:`~infnet_monai.pipeline.writer.CaseWriter` then writes the
    files.

The predictor applies the chains one step at a time (:func:`~infnet_monai.pipeline.predictor.apply_steps`), so that
what a step replaces or drops is freed at once.

The activation with the temperature is part of the network function (:class:`CTSegmenter`), not of
``postprocessing``: the crop rounds of the inferer and the GGO / consolidation head both need probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    Compose,
    DeleteItemsd,
    Invertd,
    NormalizeIntensityd,
    Orientationd,
    RepeatChanneld,
    ScaleIntensityRanged,
)

from infnet_monai.defaults import (
    BASAL_RIM_MAX_SHARE,
    DEFAULT_MAX_SLICES,
    DEFAULT_MIN_LESION_MM3,
    THRESHOLD,
    THROUGH_PLANE_MM,
)
from infnet_monai.postprocessing import (
    MIN_LESION_AREA_MM2,
    MIN_LESION_DEPTH_MM,
    MIN_LESION_EXTENT_MM,
    ExtendLungd,
    InfectionClassesd,
    InfectionMaskd,
    LungMaskd,
    extension_threshold_for,
)
from infnet_monai.stats.transforms import AnatomyChecksd, CaseReadoutd, InfectionBurdend
from infnet_monai.transforms.ct import LUNG_WINDOW_HU, WORLD_AXIS_LABELS, ct_slice_preprocessing
from infnet_monai.transforms.io import LoadCTd
from infnet_monai.transforms.slices import SLICE_MEAN, SLICE_STD

__all__ = ["ct_preprocessing", "ct_postprocessing", "split_slicewise"]


def ct_preprocessing(
    window_hu: Sequence[float] = LUNG_WINDOW_HU,
    in_channels: int = 1,
    max_slices: int = DEFAULT_MAX_SLICES,
    mean: float = SLICE_MEAN,
    std: float = SLICE_STD,
) -> Compose:
    """The default ``preprocessing``: load, RAS, lung mask, then the slice preparation (see the module docstring);
    ``in_channels``, ``mean`` and ``std`` are the checkpoint's."""
    return Compose(
        [
            LoadCTd("image", max_slices=max_slices),
            Orientationd("image", axcodes="RAS", labels=WORLD_AXIS_LABELS),
            LungMaskd("image", output_key="lung"),
            *ct_slice_preprocessing(window_hu, in_channels, mean=mean, std=std).transforms,
        ]
    )


def ct_postprocessing(
    volume_preprocessing: Compose,
    threshold: float = THRESHOLD,
    extension_threshold: float | None = None,
    min_lesion_volume_mm3: float = DEFAULT_MIN_LESION_MM3,
    min_lesion_extent_mm: float = MIN_LESION_EXTENT_MM,
    min_lesion_area_mm2: float = MIN_LESION_AREA_MM2,
    basal_rim_max_share: float = BASAL_RIM_MAX_SHARE,
    anatomy_checks: bool = True,
    through_plane_mm: float = THROUGH_PLANE_MM,
    min_lesion_depth_mm: float = MIN_LESION_DEPTH_MM,
) -> Compose:
    """The default ``postprocessing`` (see the module docstring); ``volume_preprocessing`` is the whole-volume part of
    the preprocessing (its orientation is inverted at the end); ``anatomy_checks=False`` leaves out the self-checks
    (a comparison of settings that does not need them)."""
    if extension_threshold is None:
        extension_threshold = extension_threshold_for(threshold)
    return Compose(
        [
            ExtendLungd("lung", probability_key="pred", image_key="image", threshold=extension_threshold),
            InfectionMaskd(
                "pred", lung_key="lung", output_key="infection", image_key="image", nodules_key="nodules",
                threshold=threshold, min_lesion_volume_mm3=min_lesion_volume_mm3,
                min_lesion_extent_mm=min_lesion_extent_mm, min_lesion_area_mm2=min_lesion_area_mm2,
                basal_rim_max_share=basal_rim_max_share, through_plane_mm=through_plane_mm,
                min_lesion_depth_mm=min_lesion_depth_mm,
            ),
            InfectionClassesd("infection", share_key="share", output_key="classes"),
            DeleteItemsd(["pred", "share"]),
            InfectionBurdend("infection", lung_key="lung", classes_key="classes", nodules_key="nodules", output_key="burden"),
            *([AnatomyChecksd("infection", lung_key="lung", image_key="image", output_key="burden")] if anatomy_checks else []),
            CaseReadoutd(
                "infection", lung_key="lung", image_key="image", classes_key="classes", nodules_key="nodules",
                output_key="burden", lesions_key="lesions",
            ),
            DeleteItemsd(["airway"]),
            # one key per step (each step's copy is one volume); "image" last: the others are inverted with its history
            *(
                Invertd(key, transform=volume_preprocessing, orig_keys="image", nearest_interp=True, allow_missing_keys=True)
                for key in ("infection", "nodules", "lung", "classes", "image")
            ),
        ]
    )


def _slicewise(t) -> bool:
    """Whether ``t`` works slice by slice on axial slices and keeps RAS's slice axis (superior) last."""
    if isinstance(t, Orientationd):
        codes = t.ornt_transform.axcodes
        return codes is not None and codes[2] == "S"
    if isinstance(t, (ScaleIntensityRanged, RepeatChanneld)):
        return True
    if isinstance(t, NormalizeIntensityd):  # with fixed statistics; computed ones would be the slab's, not the volume's
        return t.normalizer.subtrahend is not None and t.normalizer.divisor is not None
    return False


def split_slicewise(chain: Compose) -> tuple[Compose, Compose]:
    """``(whole-volume part, slice-wise part)`` of ``chain``: the slice-wise part is its longest tail of steps that
    work slice by slice (so slabs of slices can stream through it and its inverse); empty when there is none."""
    steps = list(chain.flatten().transforms)
    cut = len(steps)
    while cut > 0 and _slicewise(steps[cut - 1]):
        cut -= 1
    return Compose(steps[:cut]), Compose(steps[cut:])
