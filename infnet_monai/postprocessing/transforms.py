"""The 3D post-processing as MONAI transforms: array and dictionary pairs over channel-first volumes.

- :class:`LungMask` / :class:`LungMaskd`: right / left lung label map from a CT in Hounsfield units
  (:func:`~infnet_monai.postprocessing.lung.lung_mask`);
- :class:`InfectionMask` / :class:`InfectionMaskd`: the binary infection mask from the probability and the lung
  (:func:`~infnet_monai.postprocessing.infection.postprocess_infection`);
- :class:`InfectionClasses` / :class:`InfectionClassesd`: GGO / consolidation labels of that mask from the
  consolidation share (:func:`~infnet_monai.postprocessing.infection.infection_classes`).

Inputs are ``(1, X, Y, Z)`` arrays or MetaTensors with the slices along the last axis, as the pipeline keeps them in
RAS. The voxel spacing comes from a MetaTensor's affine (``pixdim``) unless ``spacing_mm`` is given. Outputs are
``(1, X, Y, Z)`` uint8 MetaTensors that keep the input's metadata, so ``Invertd`` and writers can follow.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from infnet_monai.postprocessing.infection import CONSOLIDATION_SHARE_THRESHOLD, infection_classes, postprocess_infection
from infnet_monai.postprocessing.lung import lung_mask

__all__ = ["LungMask", "LungMaskd", "InfectionMask", "InfectionMaskd", "InfectionClasses", "InfectionClassesd"]


def _volume(img: Any, name: str) -> np.ndarray:
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise ValueError(f"{name} must be a channel-first (1, X, Y, Z) volume, got shape {arr.shape}.")
    return arr[0]


def _spacing(img: Any, spacing_mm: Sequence[float] | None) -> tuple[float, float, float]:
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
    """Right (1) / left (2) lung label map of a CT in Hounsfield units; ``kwargs`` go to ``lung_mask``."""

    def __init__(self, spacing_mm: Sequence[float] | None = None, **kwargs: Any) -> None:
        self.spacing_mm = spacing_mm
        self.kwargs = kwargs

    def __call__(self, img: Any) -> torch.Tensor:
        return _like(lung_mask(_volume(img, "image"), _spacing(img, self.spacing_mm), **self.kwargs), img)


class LungMaskd(MapTransform):
    """Dictionary version of :class:`LungMask`: reads ``keys`` (the CT), writes ``output_key``."""

    def __init__(self, keys: KeysCollection, output_key: str = "lung", spacing_mm=None, allow_missing_keys=False, **kwargs):
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.transform = LungMask(spacing_mm, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key])
        return d


class InfectionMask(Transform):
    """Binary infection mask from a probability map and the lung; ``kwargs`` go to ``postprocess_infection``
    (``threshold``, ``min_lesion_volume_mm3``, ``min_lesion_extent_mm``, ``min_lesion_area_mm2``, ``lung_margin_mm``)."""

    def __init__(self, spacing_mm: Sequence[float] | None = None, **kwargs: Any) -> None:
        self.spacing_mm = spacing_mm
        self.kwargs = kwargs

    def __call__(self, probability: Any, lung: Any) -> torch.Tensor:
        mask = postprocess_infection(
            _volume(probability, "probability"), _volume(lung, "lung"), _spacing(probability, self.spacing_mm), **self.kwargs
        )
        return _like(mask, probability)


class InfectionMaskd(MapTransform):
    """Dictionary version of :class:`InfectionMask`: ``keys`` hold the probability, ``lung_key`` the lung, and the
    mask goes to ``output_key``."""

    def __init__(self, keys: KeysCollection, lung_key: str = "lung", output_key: str = "infection", spacing_mm=None,
                 allow_missing_keys=False, **kwargs):
        super().__init__(keys, allow_missing_keys)
        self.lung_key, self.output_key = lung_key, output_key
        self.transform = InfectionMask(spacing_mm, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.lung_key])
        return d


class InfectionClasses(Transform):
    """GGO (1) / consolidation (2) labels of an infection mask from the consolidation share."""

    def __init__(self, threshold: float = CONSOLIDATION_SHARE_THRESHOLD) -> None:
        self.threshold = threshold

    def __call__(self, infection: Any, consolidation_share: Any) -> torch.Tensor:
        classes = infection_classes(
            _volume(infection, "infection"), _volume(consolidation_share, "consolidation_share"), self.threshold
        )
        return _like(classes, infection)


class InfectionClassesd(MapTransform):
    """Dictionary version of :class:`InfectionClasses`: ``keys`` hold the infection mask, ``share_key`` the
    consolidation share, and the class map goes to ``output_key``."""

    def __init__(self, keys: KeysCollection, share_key: str = "consolidation_share", output_key: str = "classes",
                 threshold: float = CONSOLIDATION_SHARE_THRESHOLD, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.share_key, self.output_key = share_key, output_key
        self.transform = InfectionClasses(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.share_key])
        return d
