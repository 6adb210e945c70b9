"""Loading CT volumes as a MONAI transform: :class:`LoadCT` and :class:`LoadCTd`.

They put :func:`infnet_monai.io.load_ct` (the project's reader: NIfTI and DICOM series, validated, in Hounsfield units,
stored compactly) at the head of a MONAI chain, as ``LoadImaged`` heads the chains of the model-zoo bundles. The
input is a :class:`~infnet_monai.io.CTCase`, a path (a NIfTI file or a DICOM series folder holding one case), or an
already loaded ``MetaTensor``, which passes through. Volumes longer than ``max_slices`` are refused.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from infnet_monai.defaults import DEFAULT_MAX_SLICES
from infnet_monai.io.cases import CTCase, discover_cases
from infnet_monai.io.volume import CaseError, load_ct

__all__ = ["LoadCT", "LoadCTd"]


class LoadCT(Transform):
    """A CT case, a path or a loaded volume as a ``(1, X, Y, Z)`` MetaTensor in Hounsfield units.

    Args:
        max_slices: longer volumes (voxels along the longest axis) are refused with a :class:`CaseError` naming
            the file; a guard against a mistaken input (e.g. a whole-body scan at 0.5 mm), not a memory need.
    """

    def __init__(self, max_slices: int = DEFAULT_MAX_SLICES) -> None:
        if max_slices < 1:
            raise ValueError(f"max_slices must be >= 1, got {max_slices}.")
        self.max_slices = int(max_slices)

    def __call__(self, data: CTCase | str | os.PathLike | MetaTensor) -> MetaTensor:
        if isinstance(data, MetaTensor):
            image = data
        elif isinstance(data, CTCase):
            image = load_ct(data, max_slices=self.max_slices)  # refused from its headers, before any voxel is read
        else:
            cases = discover_cases(data)
            if len(cases) != 1:
                raise CaseError(f"{data}: {len(cases)} CT cases found here; give one NIfTI file or one DICOM series.")
            image = load_ct(cases[0], max_slices=self.max_slices)
        n_slices = int(max(image.shape[1:]))
        if n_slices > self.max_slices:
            source = image.meta.get("filename_or_obj", "")
            prefix = f"{source}: " if source else ""
            raise CaseError(
                f"{prefix}volume has {n_slices} voxels along its longest axis, above the limit of {self.max_slices}; "
                "check that this is the intended scan, or raise the limit with --max-slices."
            )
        return image


class LoadCTd(MapTransform):
    """Dictionary version of :class:`LoadCT`."""

    def __init__(self, keys: KeysCollection, max_slices: int = DEFAULT_MAX_SLICES, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCT(max_slices)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
