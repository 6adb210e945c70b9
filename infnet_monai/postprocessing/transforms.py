"""The 3D post-processing as MONAI transforms: array and dictionary pairs over channel-first volumes.

- :class:`LungMask` / :class:`LungMaskd`: right / left lung label map from a CT in Hounsfield units
  (:func:`~infnet_monai.postprocessing.lung.lung_mask`), and the dictionary version keeps the central airway it
  found for the anatomical self-checks (:class:`~infnet_monai.stats.AnatomyChecksd`);
- :class:`ExtendLung` / :class:`ExtendLungd`: the pathology-inclusive lung, the infection found against the lung
  joining it (:func:`~infnet_monai.postprocessing.extension.extend_lung`);
- :class:`InfectionMask` / :class:`InfectionMaskd`: the binary infection mask from the probability and the lung,
  and the nodule-like lesions kept out of it (:func:`~infnet_monai.postprocessing.infection.infection_and_nodules`);
- :class:`InfectionClasses` / :class:`InfectionClassesd`: GGO / consolidation labels of that mask from the
  consolidation share (:func:`~infnet_monai.postprocessing.infection.infection_classes`).

The burden statistics of the masks are :class:`infnet_monai.stats.InfectionBurden` / ``InfectionBurdend``.

A probability input may hold several channels (the network's infection probability, then the consolidation share):
``channel`` picks one.

Inputs are ``(1, X, Y, Z)`` arrays or MetaTensors with the slices along the last axis, as the pipeline keeps them in
RAS. The voxel spacing comes from a MetaTensor's affine (``pixdim``) unless ``spacing_mm`` is given. Outputs are
``(1, X, Y, Z)`` uint8 MetaTensors that keep the input's metadata, so ``Invertd`` and writers can follow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from infnet_monai.postprocessing.airway import Airway
from infnet_monai.postprocessing.extension import (
    EXTENSION_MAX_HU,
    EXTENSION_MIN_AREA_FRACTION,
    EXTENSION_THRESHOLD,
    extend_lung,
)
from infnet_monai.postprocessing.infection import (
    BASAL_RIM_MM,
    CONSOLIDATION_SHARE_THRESHOLD,
    infection_and_nodules,
    infection_classes,
)
from infnet_monai.postprocessing.lung import (
    CLOSING_RADIUS_MM,
    DOME_MIN_AREA_MM2,
    LUNG_THRESHOLD_HU,
    MAX_PURE_AIR_FRACTION,
    MIN_LUNG_COMPONENT_ML,
    MIN_RELATIVE_COMPONENT_VOLUME,
    PURE_AIR_HU,
    WORKING_SPACING_MM,
    LungMaskOptions,
    lung_mask_with_airway,
)
from infnet_monai.utils.memory import release_memory

__all__ = [
    "LungMask",
    "LungMaskd",
    "ExtendLung",
    "ExtendLungd",
    "InfectionMask",
    "InfectionMaskd",
    "InfectionClasses",
    "InfectionClassesd",
]


def channel_volume(img: Any, name: str, channel: int | None = None) -> np.ndarray:
    """The ``(X, Y, Z)`` array of a channel-first volume (without a copy); ``channel`` picks one of several."""
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim != 4 or (channel is None and arr.shape[0] != 1):
        raise ValueError(f"{name} must be a channel-first (1, X, Y, Z) volume, got shape {arr.shape}.")
    if channel is not None and not 0 <= channel < arr.shape[0]:
        raise ValueError(f"{name} has {arr.shape[0]} channel(s); channel {channel} was asked for.")
    return arr[0 if channel is None else channel]


def voxel_spacing(img: Any, spacing_mm: Sequence[float] | None) -> tuple[float, float, float]:
    if spacing_mm is not None:
        return tuple(float(s) for s in spacing_mm)
    if isinstance(img, MetaTensor):
        return tuple(float(s) for s in img.pixdim[:3])
    raise ValueError("no voxel spacing: give a MetaTensor with an affine, or spacing_mm.")


def _like(arr: np.ndarray, reference: Any) -> torch.Tensor:
    out = torch.from_numpy(np.ascontiguousarray(arr[None], dtype=np.uint8))
    if isinstance(reference, MetaTensor):
        return MetaTensor(out, meta=dict(reference.meta), applied_operations=list(reference.applied_operations))
    return out


class LungMask(Transform):
    """Right (1) / left (2) lung label map of a CT in Hounsfield units
    (:func:`~infnet_monai.postprocessing.lung.lung_mask_with_airway`).

    Args:
        spacing_mm: voxel size (mm) along the three axes; ``None`` (default): the MetaTensor's.
        threshold_hu, pure_air_hu, max_pure_air_fraction, min_component_ml, min_relative_volume, closing_radius_mm,
            remove_airway, working_spacing_mm, dome_min_area_mm2: the fields of
            :class:`~infnet_monai.postprocessing.lung.LungMaskOptions` (see there), checked here.
    """

    def __init__(self, spacing_mm: Sequence[float] | None = None, *, threshold_hu: float = LUNG_THRESHOLD_HU,
                 pure_air_hu: float = PURE_AIR_HU, max_pure_air_fraction: float = MAX_PURE_AIR_FRACTION,
                 min_component_ml: float = MIN_LUNG_COMPONENT_ML,
                 min_relative_volume: float = MIN_RELATIVE_COMPONENT_VOLUME,
                 closing_radius_mm: float = CLOSING_RADIUS_MM, remove_airway: bool = True,
                 working_spacing_mm: float | None = WORKING_SPACING_MM,
                 dome_min_area_mm2: float = DOME_MIN_AREA_MM2) -> None:
        self.spacing_mm = spacing_mm
        self.options = LungMaskOptions(
            threshold_hu=threshold_hu, pure_air_hu=pure_air_hu, max_pure_air_fraction=max_pure_air_fraction,
            min_component_ml=min_component_ml, min_relative_volume=min_relative_volume,
            closing_radius_mm=closing_radius_mm, remove_airway=remove_airway, working_spacing_mm=working_spacing_mm,
            dome_min_area_mm2=dome_min_area_mm2,
        )

    def __call__(self, img: Any) -> torch.Tensor:
        return self.with_airway(img)[0]

    def with_airway(self, img: Any) -> tuple[torch.Tensor, Airway | None]:
        """``(lung label map, the central airway found on the way)``
        (:func:`~infnet_monai.postprocessing.lung.lung_mask_with_airway`); the airway is ``None`` when none was
        found."""
        options = dataclasses.asdict(self.options)
        lung, airway = lung_mask_with_airway(channel_volume(img, "image"), voxel_spacing(img, self.spacing_mm), **options)
        return _like(lung, img), airway


class LungMaskd(MapTransform):
    """Dictionary version of :class:`LungMask`: reads ``keys`` (the CT), writes ``output_key``; the central airway
    it found (an :class:`~infnet_monai.postprocessing.airway.Airway` on the lung mask's working grid) goes to
    ``airway_key``, where :class:`~infnet_monai.stats.AnatomyChecksd` takes it instead of tracking the trachea
    again (nothing is written when none was found, or with ``airway_key=None``). The keyword-only arguments are
    :class:`LungMask`'s."""

    def __init__(self, keys: KeysCollection, output_key: str = "lung", spacing_mm=None, allow_missing_keys=False,
                 airway_key: str | None = "airway", *, threshold_hu: float = LUNG_THRESHOLD_HU,
                 pure_air_hu: float = PURE_AIR_HU, max_pure_air_fraction: float = MAX_PURE_AIR_FRACTION,
                 min_component_ml: float = MIN_LUNG_COMPONENT_ML,
                 min_relative_volume: float = MIN_RELATIVE_COMPONENT_VOLUME,
                 closing_radius_mm: float = CLOSING_RADIUS_MM,
                 remove_airway: bool = True, working_spacing_mm: float | None = WORKING_SPACING_MM,
                 dome_min_area_mm2: float = DOME_MIN_AREA_MM2) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.airway_key = airway_key
        self.transform = LungMask(
            spacing_mm, threshold_hu=threshold_hu, pure_air_hu=pure_air_hu,
            max_pure_air_fraction=max_pure_air_fraction,
            min_component_ml=min_component_ml, min_relative_volume=min_relative_volume,
            closing_radius_mm=closing_radius_mm, remove_airway=remove_airway, working_spacing_mm=working_spacing_mm,
            dome_min_area_mm2=dome_min_area_mm2,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key], airway = self.transform.with_airway(d[key])
            if self.airway_key is not None:
                d.pop(self.airway_key, None)  # never another volume's airway
                if airway is not None:
                    d[self.airway_key] = airway
        return d


class InfectionMask(Transform):
    """Binary infection mask from a probability map (``channel`` of it) and the lung
    (:func:`~infnet_monai.postprocessing.infection.infection_and_nodules`). Given the CT in HU, nodule-like lesions
    are kept out of the mask: :meth:`with_nodules` returns them too.

    Args:
        spacing_mm: voxel size (mm) along the three axes; ``None`` (default): the probability MetaTensor's.
        channel: the channel of the probability map that holds the infection probability.
        threshold, min_lesion_volume_mm3, min_lesion_extent_mm, min_lesion_area_mm2, basal_rim_max_share,
            basal_rim_mm, through_plane_mm, min_lesion_depth_mm: as
            :func:`~infnet_monai.postprocessing.infection.infection_and_nodules` takes them, checked when the
            transform runs.

    Attributes:
        kwargs: those eight keyword arguments, as passed to ``infection_and_nodules``.
    """

    def __init__(self, spacing_mm: Sequence[float] | None = None, channel: int = 0, *, threshold: float = 0.5,
                 min_lesion_volume_mm3: float = 10.0, min_lesion_extent_mm: float = 0.0,
                 min_lesion_area_mm2: float = 0.0, basal_rim_max_share: float = 1.0,
                 basal_rim_mm: float = BASAL_RIM_MM, through_plane_mm: float = 0.0,
                 min_lesion_depth_mm: float = 0.0) -> None:
        self.spacing_mm = spacing_mm
        self.channel = int(channel)
        self.kwargs = {
            "threshold": threshold, "min_lesion_volume_mm3": min_lesion_volume_mm3,
            "min_lesion_extent_mm": min_lesion_extent_mm, "min_lesion_area_mm2": min_lesion_area_mm2,
            "basal_rim_max_share": basal_rim_max_share, "basal_rim_mm": basal_rim_mm,
            "through_plane_mm": through_plane_mm, "min_lesion_depth_mm": min_lesion_depth_mm,
        }

    def __call__(self, probability: Any, lung: Any, image: Any = None) -> torch.Tensor:
        return self.with_nodules(probability, lung, image)[0]

    def with_nodules(self, probability: Any, lung: Any, image: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(infection, nodule-like lesions)``; the second is empty without ``image``."""
        prob = channel_volume(probability, "probability", self.channel)
        hu = None if image is None else channel_volume(image, "image")
        mask, nodules = infection_and_nodules(
            prob, channel_volume(lung, "lung"), voxel_spacing(probability, self.spacing_mm), volume_hu=hu, **self.kwargs
        )
        release_memory()
        return _like(mask, lung), _like(nodules, lung)


class InfectionMaskd(MapTransform):
    """Dictionary version of :class:`InfectionMask`: ``keys`` hold the probability, ``lung_key`` the lung, and the
    mask goes to ``output_key``; with ``image_key`` (the CT in HU) the nodule-like lesions go to ``nodules_key``.
    The keyword-only arguments are :class:`InfectionMask`'s."""

    def __init__(self, keys: KeysCollection, lung_key: str = "lung", output_key: str = "infection", spacing_mm=None,
                 channel: int = 0, allow_missing_keys=False, image_key: str | None = None, nodules_key: str = "nodules",
                 *, threshold: float = 0.5, min_lesion_volume_mm3: float = 10.0, min_lesion_extent_mm: float = 0.0,
                 min_lesion_area_mm2: float = 0.0, basal_rim_max_share: float = 1.0,
                 basal_rim_mm: float = BASAL_RIM_MM, through_plane_mm: float = 0.0,
                 min_lesion_depth_mm: float = 0.0) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = InfectionMask(
            spacing_mm, channel, threshold=threshold, min_lesion_volume_mm3=min_lesion_volume_mm3,
            min_lesion_extent_mm=min_lesion_extent_mm, min_lesion_area_mm2=min_lesion_area_mm2,
            basal_rim_max_share=basal_rim_max_share, basal_rim_mm=basal_rim_mm, through_plane_mm=through_plane_mm,
            min_lesion_depth_mm=min_lesion_depth_mm,
        )
        self.lung_key, self.output_key = lung_key, output_key
        self.image_key, self.nodules_key = image_key, nodules_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[self.image_key] if self.image_key is not None else None
            d[self.output_key], nodules = self.transform.with_nodules(d[key], d[self.lung_key], image)
            if self.image_key is not None:
                d[self.nodules_key] = nodules
        return d


class InfectionClasses(Transform):
    """GGO (1) / consolidation (2) labels of an infection mask from the consolidation share (``share_channel`` of
    its input)."""

    def __init__(self, threshold: float = CONSOLIDATION_SHARE_THRESHOLD, share_channel: int | None = None) -> None:
        self.threshold = threshold
        self.share_channel = share_channel

    def __call__(self, infection: Any, consolidation_share: Any) -> torch.Tensor:
        share = channel_volume(consolidation_share, "consolidation_share", self.share_channel)
        return _like(infection_classes(channel_volume(infection, "infection"), share, self.threshold), infection)


class InfectionClassesd(MapTransform):
    """Dictionary version of :class:`InfectionClasses`: ``keys`` hold the infection mask, ``share_key`` the
    consolidation share, and the class map goes to ``output_key``; without a share (a binary network) nothing is
    added."""

    def __init__(self, keys: KeysCollection, share_key: str = "consolidation_share", output_key: str = "classes",
                 threshold: float = CONSOLIDATION_SHARE_THRESHOLD, share_channel: int | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.share_key, self.output_key = share_key, output_key
        self.transform = InfectionClasses(threshold, share_channel)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            share = d.get(self.share_key)
            channel = self.transform.share_channel
            if share is None or (channel is not None and channel >= share.shape[0]):
                continue  # no consolidation share (a binary network): no class map
            d[self.output_key] = self.transform(d[key], share)
        return d


class ExtendLung(Transform):
    """The pathology-inclusive lung: infection (``channel`` of the probability) found against the lung joins it
    (:func:`~infnet_monai.postprocessing.extension.extend_lung`). The lung is extended in place when it is a
    ``uint8`` array (no copy on long scans).

    Args:
        spacing_mm: voxel size (mm) along the three axes; ``None`` (default): the CT MetaTensor's.
        channel: the channel of the probability map that holds the infection probability.
        threshold, max_hu, min_area_fraction, thorax, dome_min_area_mm2: as
            :func:`~infnet_monai.postprocessing.extension.extend_lung` takes them, checked when the transform runs.

    Attributes:
        kwargs: those five keyword arguments, as passed to ``extend_lung`` (which also gets ``in_place=True``).
    """

    def __init__(self, spacing_mm: Sequence[float] | None = None, channel: int = 0, *,
                 threshold: float = EXTENSION_THRESHOLD, max_hu: float = EXTENSION_MAX_HU,
                 min_area_fraction: float = EXTENSION_MIN_AREA_FRACTION, thorax: bool = True,
                 dome_min_area_mm2: float = DOME_MIN_AREA_MM2) -> None:
        self.spacing_mm = spacing_mm
        self.channel = int(channel)
        self.kwargs = {
            "threshold": threshold, "max_hu": max_hu, "min_area_fraction": min_area_fraction, "thorax": thorax,
            "dome_min_area_mm2": dome_min_area_mm2,
        }

    def __call__(self, lung: Any, probability: Any, image: Any) -> torch.Tensor:
        arr = channel_volume(lung, "lung")
        out = extend_lung(
            arr, channel_volume(probability, "probability", self.channel), channel_volume(image, "image"), voxel_spacing(image, self.spacing_mm),
            in_place=True, **self.kwargs,
        )
        release_memory()
        return lung if out is arr and isinstance(lung, torch.Tensor) else _like(out, lung)


class ExtendLungd(MapTransform):
    """Dictionary version of :class:`ExtendLung`: ``keys`` hold the lung (replaced by the extended lung),
    ``probability_key`` the probability and ``image_key`` the CT in Hounsfield units. The keyword-only arguments are
    :class:`ExtendLung`'s."""

    def __init__(self, keys: KeysCollection, probability_key: str = "pred", image_key: str = "image", spacing_mm=None,
                 channel: int = 0, allow_missing_keys: bool = False, *, threshold: float = EXTENSION_THRESHOLD,
                 max_hu: float = EXTENSION_MAX_HU, min_area_fraction: float = EXTENSION_MIN_AREA_FRACTION,
                 thorax: bool = True, dome_min_area_mm2: float = DOME_MIN_AREA_MM2) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ExtendLung(
            spacing_mm, channel, threshold=threshold, max_hu=max_hu, min_area_fraction=min_area_fraction, thorax=thorax,
            dome_min_area_mm2=dome_min_area_mm2,
        )
        self.probability_key, self.image_key = probability_key, image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], d[self.probability_key], d[self.image_key])
        return d
