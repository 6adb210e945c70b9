# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Where the infection is: the zonal distribution (:mod:`~infnet_monai.stats.zones`) and the lesion table
(:mod:`~infnet_monai.stats.lesions`, with the nodule-like lesions after the infection's) of a case's masks on the
input's grid, in any orientation.

Both modules work on RAS-oriented arrays; :func:`case_readout` reorients the masks (axis flips and permutations
only, no resampling, so every voxel and every volume stays what it is) and gives back what the case's row and
``lesions.csv`` need. On a scan that cuts the lungs the zones by lung height are withheld (the zone score, the
per-zone percentages and the lesions' zones are empty, ``zones_withheld`` says why).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from infnet_monai.stats.lesions import lesion_summary, lesion_table
from infnet_monai.stats.zones import ZONES_WITHHELD_LUNGS_CUT, peripheral_mask, zone_columns, zone_distribution

__all__ = ["to_ras", "case_readout"]


def to_ras(arrays: list[np.ndarray | None], affine: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray]:
    """``arrays`` (same shape, voxel grid of ``affine``) flipped and permuted to the nearest RAS orientation, and
    the affine of that grid (same world positions)."""
    affine = np.asarray(affine, dtype=np.float64)
    shape = next(a.shape for a in arrays if a is not None)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("RAS"))
    out = [None if a is None else np.ascontiguousarray(nib.orientations.apply_orientation(a, transform)) for a in arrays]
    return out, affine @ nib.orientations.inv_ornt_aff(transform, shape)


def case_readout(infection: np.ndarray, lung: np.ndarray, image: np.ndarray, affine: np.ndarray, *,
                 classes: np.ndarray | None = None, nodules: np.ndarray | None = None,
                 lungs_cut_by_scan: bool = False, band_like_ml: float | None = None) -> tuple[dict, list[dict]]:
    """The zone figures of a case's row and its lesion rows.

    Args:
        infection, lung, image, classes, nodules: the case's masks and CT on the input's voxel grid (see
            :class:`~infnet_monai.pipeline.predictor.CaseResult`); ``nodules`` (the nodule-like lesions kept out of
            the infection) is optional.
        affine: voxel -> world (RAS mm) matrix of that grid.
        lungs_cut_by_scan: whether the scan cuts the lungs (the anatomical self-check of that name,
            :func:`~infnet_monai.stats.anatomy.lungs_cut_by_scan`): the zones by lung height are then withheld and not
            computed.
        band_like_ml: the self-check's ``band_like_infection_ml`` of these masks, if measured
            (:func:`~infnet_monai.stats.lesions.lesion_table` does not measure the depths again when it is 0).

    Returns:
        ``(fields, lesions)``: ``fields`` holds ``zones`` and ``distribution`` (dicts, for ``stats.json``), the flat
        columns ``zone_score`` and ``<zone>_infection_percent``, ``zones_withheld`` (``None``, or why the zones are
        withheld: :data:`~infnet_monai.stats.zones.ZONES_WITHHELD_LUNGS_CUT`, with ``zones``, ``zone_score`` and the
        percentages ``None``) and, with ``nodules``, ``nodule_like_lesions`` (their short rows,
        :func:`~infnet_monai.stats.lesions.lesion_summary`); ``lesions`` the rows of ``lesions.csv``: the infection's
        lesions (kind ``"infection"``), then the nodule-like ones (kind ``"nodule_like"``, ids continued).
    """
    (inf, lu, img, cls, nod), ras_affine = to_ras([infection, lung, image, classes, nodules], affine)
    spacing = tuple(float(s) for s in np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0)))
    peripheral = peripheral_mask(lu, spacing)  # once for both: its per-slice distance transforms are their main cost
    by_height = not lungs_cut_by_scan
    zones = zone_distribution(inf, lu, spacing, cls, peripheral=peripheral, by_height=by_height)
    fields = {
        "zones": zones["zones"],
        "distribution": zones["distribution"],
        **zone_columns(zones),
        "zones_withheld": None if by_height else ZONES_WITHHELD_LUNGS_CUT,
    }
    lesions = lesion_table(inf, lu, img, ras_affine, cls, peripheral=peripheral, with_zone=by_height,
                           band_like_ml=band_like_ml)
    if nod is not None:
        nodule_rows = lesion_table(
            nod, lu, img, ras_affine, peripheral=peripheral, kind="nodule_like", first_id=len(lesions) + 1,
            with_zone=by_height,
        )
        fields["nodule_like_lesions"] = lesion_summary(nodule_rows)
        lesions += nodule_rows
    return fields, lesions
