"""The burden statistics as MONAI transforms: :class:`InfectionBurden` / :class:`InfectionBurdend`.

They end the pipeline's post-processing on the RAS grid (the axial slice counts need it), before the masks are
brought back onto the input's grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from infnet_monai.postprocessing.airway import Airway
from infnet_monai.postprocessing.transforms import channel_volume, voxel_spacing
from infnet_monai.stats.anatomy import anatomy_checks
from infnet_monai.stats.burden import class_burden, infection_burden, nodule_burden

__all__ = ["InfectionBurden", "InfectionBurdend", "AnatomyChecks", "AnatomyChecksd"]


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
        self.lung_key, self.classes_key, self.output_key = lung_key, classes_key, output_key
        self.nodules_key = nodules_key
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
