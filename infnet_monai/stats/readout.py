# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Where the infection is: the zonal distribution (:mod:`~infnet_monai.stats.zones`) and the lesion table
(:mod:`~infnet_monai.stats.lesions`) of a case's masks on the input's grid, in any orientation.

Both modules work on RAS-oriented arrays; :func:`case_readout` reorients the masks (axis flips and permutations
only, no resampling, so every voxel and every volume stays what it is) and gives back what the case's row and
``lesions.csv`` need.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from infnet_monai.stats.lesions import lesion_table
from infnet_monai.stats.zones import peripheral_mask, zone_columns, zone_distribution

__all__ = ["to_ras", "case_readout"]


def to_ras(arrays: list[np.ndarray | None], affine: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray]:
    """``arrays`` (same shape, voxel grid of ``affine``) flipped and permuted to the nearest RAS orientation, and
    the affine of that grid (same world positions)."""
    affine = np.asarray(affine, dtype=np.float64)
    shape = next(a.shape for a in arrays if a is not None)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("RAS"))
    out = [None if a is None else np.ascontiguousarray(nib.orientations.apply_orientation(a, transform)) for a in arrays]
    return out, affine @ nib.orientations.inv_ornt_aff(transform, shape)


def case_readout(
    infection: np.ndarray, lung: np.ndarray, image: np.ndarray, affine: np.ndarray, classes: np.ndarray | None = None
) -> tuple[dict, list[dict]]:
    """The zone figures of a case's row and its lesion rows.

    Args:
        infection, lung, image, classes: the case's masks and CT on the input's voxel grid (see
            :class:`~infnet_monai.pipeline.predictor.CaseResult`).
        affine: voxel -> world (RAS mm) matrix of that grid.

    Returns:
        ``(fields, lesions)``: ``fields`` holds ``zones`` and ``distribution`` (dicts, for ``stats.json``) and the flat
        columns ``zone_score`` and ``<zone>_infection_percent``; ``lesions`` the rows of ``lesions.csv``.
    """
    (inf, lu, img, cls), ras_affine = to_ras([infection, lung, image, classes], affine)
    spacing = tuple(float(s) for s in np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0)))
    peripheral = peripheral_mask(lu, spacing)  # once for both: its per-slice distance transforms are their main cost
    zones = zone_distribution(inf, lu, spacing, cls, peripheral=peripheral)
    fields = {"zones": zones["zones"], "distribution": zones["distribution"], **zone_columns(zones)}
    return fields, lesion_table(inf, lu, img, ras_affine, cls, peripheral=peripheral)
