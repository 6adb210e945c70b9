"""Where masks become numbers, as MONAI transforms: the burden statistics (:class:`InfectionBurden` /
:class:`InfectionBurdend`), the anatomical self-checks (:class:`AnatomyChecks` / :class:`AnatomyChecksd`) and the
read-out of zones and lesions (:class:`CaseReadout` / :class:`CaseReadoutd`).

They end the pipeline's post-processing on the RAS grid (the axial slice counts and the zones by height need it),
before the masks are brought back onto the input's grid: the read-out is one step of the chain (and of the bundle's
``inference.json``), not a second pass over the inverted masks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from infnet_monai.postprocessing.airway import Airway
from infnet_monai.postprocessing.transforms import channel_volume, voxel_spacing
from infnet_monai.stats.anatomy import anatomy_checks
from infnet_monai.stats.burden import class_burden, infection_burden, nodule_burden
from infnet_monai.stats.readout import case_readout

__all__ = ["InfectionBurden", "InfectionBurdend", "AnatomyChecks", "AnatomyChecksd", "CaseReadout", "CaseReadoutd"]


class InfectionBurden(Transform):
    """Burden statistics (:data:`~infnet_monai.stats.BURDEN_KEYS`, and the class keys when a class map is given)
    of an infection mask in a lung label map."""

    def __init__(self, spacing_mm: Sequence[float] | None = None) -> None:
        self.spacing_mm = spacing_mm

    def __call__(self, infection: Any, lung: Any, classes: Any = None, nodules: Any = None) -> dict:
        spacing = voxel_spacing(lung, self.spacing_mm)
        inf, lu = channel_volume(infection, "infection"), channel_volume(lung, "lung")
        row = dict(infection_burden(inf, lu, spacing))
        if classes is not None:
            row.update(class_burden(channel_volume(classes, "classes"), lu, spacing))
        if nodules is not None:
            row.update(nodule_burden(channel_volume(nodules, "nodules"), spacing))
        return row


class InfectionBurdend(MapTransform):
    """Dictionary version of :class:`InfectionBurden`: ``keys`` hold the infection mask, ``lung_key`` the lung and
    ``classes_key`` the class map and ``nodules_key`` the nodule-like lesions (both optional); the statistics go to
    ``output_key`` as a dictionary."""

    def __init__(self, keys: KeysCollection, lung_key: str = "lung", classes_key: str = "classes",
                 output_key: str = "burden", spacing_mm=None, allow_missing_keys: bool = False,
                 nodules_key: str = "nodules") -> None:
        super().__init__(keys, allow_missing_keys)
        self.lung_key, self.classes_key, self.nodules_key, self.output_key = lung_key, classes_key, nodules_key, output_key
        self.transform = InfectionBurden(spacing_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], d[self.lung_key], d.get(self.classes_key), d.get(self.nodules_key))
        return d


class AnatomyChecks(Transform):
    """The anatomical self-checks (:func:`~infnet_monai.stats.anatomy.anatomy_checks`) of an infection mask and a
    lung label map on a CT in HU; given the airway the lung mask found
    (:class:`~infnet_monai.postprocessing.LungMaskd`), the trachea is not tracked again."""

    def __init__(self, spacing_mm: Sequence[float] | None = None) -> None:
        self.spacing_mm = spacing_mm

    def __call__(self, image: Any, lung: Any, infection: Any, airway: Airway | None = None) -> dict:
        spacing = voxel_spacing(lung, self.spacing_mm)
        return anatomy_checks(
            channel_volume(image, "image"), channel_volume(lung, "lung"), channel_volume(infection, "infection"), spacing,
            airway=airway,
        )


class AnatomyChecksd(MapTransform):
    """Dictionary version of :class:`AnatomyChecks`: ``keys`` hold the infection mask, ``lung_key`` the lung,
    ``image_key`` the CT and ``airway_key`` the airway the lung mask found (optional: without it the trachea is
    tracked here); the checks are added to the dictionary at ``output_key`` (the burden statistics)."""

    def __init__(self, keys: KeysCollection, lung_key: str = "lung", image_key: str = "image",
                 output_key: str = "burden", spacing_mm=None, allow_missing_keys: bool = False,
                 airway_key: str | None = "airway") -> None:
        super().__init__(keys, allow_missing_keys)
        self.lung_key, self.image_key, self.output_key = lung_key, image_key, output_key
        self.airway_key = airway_key
        self.transform = AnatomyChecks(spacing_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            airway = d.get(self.airway_key) if self.airway_key is not None else None
            checks = self.transform(d[self.image_key], d[self.lung_key], d[key], airway)
            d[self.output_key] = {**d.get(self.output_key, {}), **checks}
        return d


class CaseReadout(Transform):
    """The zones and the lesion table (:func:`~infnet_monai.stats.readout.case_readout`) of an infection mask, a lung
    label map and the CT, with the class map and the nodule-like lesions when given; the affine comes from ``image``
    (a MetaTensor). Returns ``(fields, lesions)``."""

    def __call__(
        self, infection: Any, lung: Any, image: Any, classes: Any = None, nodules: Any = None,
        lungs_cut_by_scan: bool = False, band_like_ml: float | None = None,
    ) -> tuple[dict, list[dict]]:
        if not isinstance(image, MetaTensor):
            raise ValueError("image must be a MetaTensor: the lesion positions need its affine.")
        affine = np.asarray(image.affine.detach().cpu().numpy(), dtype=np.float64)
        return case_readout(
            channel_volume(infection, "infection"), channel_volume(lung, "lung"), channel_volume(image, "image"), affine,
            classes=None if classes is None else channel_volume(classes, "classes"),
            nodules=None if nodules is None else channel_volume(nodules, "nodules"),
            lungs_cut_by_scan=lungs_cut_by_scan, band_like_ml=band_like_ml,
        )


class CaseReadoutd(MapTransform):
    """Dictionary version of :class:`CaseReadout`: ``keys`` hold the infection mask, ``lung_key`` the lung,
    ``image_key`` the CT, ``classes_key`` and ``nodules_key`` the optional class map and nodule-like lesions. The zone
    fields are added to the dictionary at ``output_key`` (the burden statistics, whose ``lungs_cut_by_scan`` from
    :class:`AnatomyChecksd` withholds the zones by height, and whose ``band_like_infection_ml`` of 0 spares the lesion
    table the depths) and the lesion rows go to ``lesions_key``."""

    def __init__(self, keys: KeysCollection, lung_key: str = "lung", image_key: str = "image",
                 classes_key: str = "classes", nodules_key: str = "nodules", output_key: str = "burden",
                 lesions_key: str = "lesions", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lung_key, self.image_key, self.classes_key = lung_key, image_key, classes_key
        self.nodules_key, self.output_key, self.lesions_key = nodules_key, output_key, lesions_key
        self.transform = CaseReadout()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            burden = d.get(self.output_key, {})
            fields, lesions = self.transform(
                d[key], d[self.lung_key], d[self.image_key], d.get(self.classes_key), d.get(self.nodules_key),
                lungs_cut_by_scan=bool(burden.get("lungs_cut_by_scan", False)),
                band_like_ml=burden.get("band_like_infection_ml"),  # from AnatomyChecksd on the same masks
            )
            d[self.output_key] = {**burden, **fields}
            d[self.lesions_key] = lesions
        return d
