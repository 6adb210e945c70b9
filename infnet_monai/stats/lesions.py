# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
One row per 3D lesion: kind, volume, GGO / consolidation volumes, lung side, zone, position in patient coordinates,
mean density, largest axial diameter, slice span and peripheral share.

A lesion is a 3D 26-connected component of the infection inside the lung (``infection > 0`` and ``lung > 0``), as
:func:`~infnet_monai.stats.infection_burden` counts lesions, so the volumes of the ``"infection"`` lesions sum to the
infection volume inside the lung. The nodule-like lesions that the post-processing keeps out of the infection
(:func:`~infnet_monai.postprocessing.infection_and_nodules`) are listed after them with the kind ``"nodule_like"``
(:func:`~infnet_monai.stats.readout.case_readout`).

Arrays follow :mod:`infnet_monai.stats.zones`: RAS-oriented ``(X, Y, Z)`` (voxel axis 0 toward Right, 1 toward
Anterior, 2 toward Superior), ``lung`` 0 / 1 right / 2 left. Zones and the peripheral rule are those of
:mod:`infnet_monai.stats.zones`.

Positions are in DICOM patient coordinates (LPS, mm): the voxel centre's world RAS coordinates from ``affine``
(nibabel convention, voxel index -> RAS mm), with x and y negated.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from infnet_monai.postprocessing.infection import CONSOLIDATION_LABEL, GGO_LABEL, lesions_reaching_depth
from infnet_monai.postprocessing.lung import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from infnet_monai.stats.anatomy import BAND_DEPTH_MM
from infnet_monai.stats.burden import MM3_PER_ML
from infnet_monai.stats.zones import (
    ZONE_KEYS,
    check_zone_masks,
    infection_components,
    majority_zone,
    peripheral_mask,
    slice_thirds,
    voxel_zones,
)
from infnet_monai.utils.files import atomic_write

__all__ = ["LESIONS_FILE", "LESION_COLUMNS", "LESION_KINDS", "lesion_table", "lesion_summary", "write_lesion_csv"]

LESIONS_FILE = "lesions.csv"
"""File name of a case's lesion table."""

_LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])

LESION_KINDS: tuple[str, ...] = ("infection", "nodule_like")
"""Values of the ``kind`` column: a lesion of the infection, or a nodule-like lesion kept out of it (solid, compact,
in aerated lung: :func:`~infnet_monai.postprocessing.nodules.nodule_like`)."""

LESION_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "kind",
    "volume_ml",
    "ggo_volume_ml",
    "consolidation_volume_ml",
    "lung_side",
    "zone",
    "centroid_lps_x_mm",
    "centroid_lps_y_mm",
    "centroid_lps_z_mm",
    "bbox_lps_min_x_mm",
    "bbox_lps_min_y_mm",
    "bbox_lps_min_z_mm",
    "bbox_lps_max_x_mm",
    "bbox_lps_max_y_mm",
    "bbox_lps_max_z_mm",
    "mean_hu",
    "largest_axial_diameter_mm",
    "slices",
    "peripheral_share",
    "band_like",
)
"""Keys of each :func:`lesion_table` row, in CSV column order."""

_CSV_DECIMALS: dict[str, int] = {
    **{key: 4 for key in ("volume_ml", "ggo_volume_ml", "consolidation_volume_ml")},
    **{key: 2 for key in LESION_COLUMNS if key.endswith("_mm")},
    "mean_hu": 1,
    "peripheral_share": 3,
}

_HULL_MIN_POINTS = 32  # fewer candidate points: all pairwise distances are cheaper than a hull


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"affine must be a finite 4x4 voxel-to-RAS matrix, got shape {affine.shape}.")
    codes = nib.aff2axcodes(affine)
    if tuple(codes) != ("R", "A", "S"):
        raise ValueError(
            f"the arrays must be RAS-oriented (voxel axes toward Right, Anterior, Superior), but the affine's axis "
            f"codes are {''.join(str(c) for c in codes)}; reorient them first, e.g. with MONAI "
            "Orientationd(axcodes='RAS')."
        )
    return affine


def _diameter(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` ``(N, 2)``."""
    if len(points) < 2:
        return 0.0
    if len(points) >= _HULL_MIN_POINTS:
        try:
            points = points[ConvexHull(points).vertices]  # the farthest pair are hull vertices
        except QhullError:  # all on one line: every pair is a candidate, still exact
            pass
    return float(pdist(points).max())


def _largest_axial_diameter(ijk: np.ndarray, spacing_xy: tuple[float, float]) -> float:
    """Greatest distance (mm) between two voxel centres of one lesion on any one axial slice.

    ``ijk`` ``(N, 3)`` are its voxel indices. A convex hull vertex of a slice's points is the first or last point of
    its row (a point between two others of its row is not a vertex), so only those are compared.
    """
    order = np.lexsort((ijk[:, 1], ijk[:, 0], ijk[:, 2]))  # by slice, then row (axis 0), then axis 1
    i, j, k = ijk[order, 0], ijk[order, 1], ijk[order, 2]
    new_row = np.ones(len(order), dtype=bool)
    new_row[1:] = (k[1:] != k[:-1]) | (i[1:] != i[:-1])
    first = np.flatnonzero(new_row)
    last = np.append(first[1:] - 1, len(order) - 1)
    ends = np.union1d(first, last)
    ci, cj, ck = i[ends], j[ends], k[ends]
    slice_start = np.flatnonzero(np.append(True, ck[1:] != ck[:-1]))
    slice_stop = np.append(slice_start[1:], len(ends))
    points = np.column_stack((ci * spacing_xy[0], cj * spacing_xy[1]))
    return max(_diameter(points[a:b]) for a, b in zip(slice_start, slice_stop))


def _lung_side(labels: np.ndarray) -> str:
    right = bool(np.any(labels == RIGHT_LUNG_LABEL))
    left = bool(np.any(labels == LEFT_LUNG_LABEL))
    return "both" if right and left else ("right" if right else "left")


def lesion_table(
    infection: np.ndarray,
    lung: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    classes: np.ndarray | None = None,
    peripheral: np.ndarray | None = None,
    kind: str = "infection",
    first_id: int = 1,
    with_zone: bool = True,
    band_like_ml: float | None = None,
) -> list[dict]:
    """One row per 3D lesion of the infection (or of the nodule-like lesions) inside the lung, largest first.

    Args:
        infection: ``(X, Y, Z)`` RAS infection mask; voxels ``> 0`` inside the lung (``lung > 0``) are infected.
        lung: lung label map of the same shape: 0 background, 1 right lung, 2 left lung.
        image: the CT of the same shape, in HU.
        affine: ``4 x 4`` voxel-index -> world RAS (mm) matrix of the arrays (nibabel convention); its axis codes must
            be ``RAS``. The voxel size is the norm of each column of ``affine[:3, :3]``.
        classes: optional class map of the same shape (0, 1 GGO, 2 consolidation), counted as given on each lesion's
            voxels.
        peripheral: :func:`~infnet_monai.stats.zones.peripheral_mask` of ``lung`` (the whole volume) when already at
            hand (:func:`~infnet_monai.stats.readout.case_readout`); else computed here on the lesions' box.
        kind: the ``kind`` of every row, one of :data:`LESION_KINDS` (``"nodule_like"`` for the mask of the
            nodule-like lesions given as ``infection``, with ``classes=None``: they are neither GGO nor
            consolidation).
        first_id: the ``lesion_id`` of the first row (the nodule-like rows continue the ids of the infection rows).
        with_zone: ``False`` leaves ``zone`` empty (``None``): on a scan that cuts the lungs the zones by lung height
            are withheld (:data:`~infnet_monai.stats.zones.ZONES_WITHHELD_LUNGS_CUT`).
        band_like_ml: the case's ``band_like_infection_ml`` when the self-check already measured it
            (:func:`~infnet_monai.stats.anatomy.band_like_infection_ml`, same masks): at 0 no lesion is band-like and
            the depths are not measured again; ``None`` (default) measures them.

    Returns:
        list of dicts with the keys of :data:`LESION_COLUMNS`, ordered by volume, largest first (equal volumes in the
        order of their first voxel in C order); values are not rounded:

        - ``lesion_id``: ``first_id``, ``first_id + 1``, ... in that order.
        - ``kind``: ``kind``.
        - ``volume_ml``; ``ggo_volume_ml``, ``consolidation_volume_ml`` (``None`` without ``classes``), in mL.
        - ``lung_side``: ``"right"``, ``"left"`` or ``"both"``.
        - ``zone``: the :data:`~infnet_monai.stats.zones.ZONE_KEYS` zone holding most of its voxels (a tie goes to
          the upper-most zone, then to the right lung); ``None`` without ``with_zone``.
        - ``centroid_lps_{x,y,z}_mm``: mean of its voxel centres, LPS mm.
        - ``bbox_lps_{min,max}_{x,y,z}_mm``: bounding box of its voxel centres, LPS mm.
        - ``mean_hu``: mean of ``image`` over its voxels.
        - ``largest_axial_diameter_mm``: greatest distance between two of its voxel centres on one axial slice (axis
          2), from the in-plane voxel size (exact for any anisotropic in-plane spacing; 0.0 for one voxel per slice).
        - ``slices``: number of axial slices it spans.
        - ``peripheral_share``: fraction (0-1) of its voxels that are peripheral
          (:func:`~infnet_monai.stats.zones.peripheral_mask`).
        - ``band_like``: ``True`` when none of its voxels lies
          :data:`~infnet_monai.stats.anatomy.BAND_DEPTH_MM` inside the lung (a band along the pleura or the
          diaphragm; :func:`~infnet_monai.postprocessing.infection.lesions_reaching_depth`), ``None`` for nodule-like
          rows. The band-like rows add up to the case's ``band_like_infection_ml``.

    Raises:
        ValueError: when the arrays are not 3D of the same shape, ``lung`` holds labels other than 0, 1, 2,
            ``affine`` is not a finite RAS 4 x 4 matrix, or ``kind`` is not one of :data:`LESION_KINDS`.
    """
    if kind not in LESION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(LESION_KINDS)}, got {kind!r}.")
    infection, lung, classes = check_zone_masks(infection, lung, classes)
    image = np.asarray(image)
    if image.shape != lung.shape:
        raise ValueError(f"image must have the masks' shape {lung.shape}, got {image.shape}.")
    affine = _check_affine(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_ml = float(np.prod(spacing)) / MM3_PER_ML

    found = infection_components(infection, lung)
    if found is None:
        return []
    labels, n, box = found
    idx = np.nonzero(labels)
    lab = labels[idx]
    order = np.argsort(lab, kind="stable")
    idx = tuple(a[order] for a in idx)
    starts = np.searchsorted(lab[order], np.arange(1, n + 2))
    ijk = np.column_stack(idx) + np.array([b.start for b in box])
    lung_values = lung[box][idx]
    hu = image[box][idx]
    class_values = None if classes is None else classes[box][idx]
    zones = voxel_zones(lung_values, ijk[:, 2], slice_thirds(lung)) if with_zone else None
    if peripheral is None:
        peripheral = peripheral_mask(lung, spacing, box)[idx]
    else:
        if np.shape(peripheral) != lung.shape:
            raise ValueError(f"peripheral must have the lung's shape {lung.shape}, got {np.shape(peripheral)}.")
        peripheral = np.asarray(peripheral)[box][idx]
    if kind == "nodule_like":
        deep = None
    elif band_like_ml == 0:  # the self-check found none on these masks: every lesion reaches deep enough
        deep = np.ones(n + 1, dtype=bool)
    else:
        deep = lesions_reaching_depth(labels, n, lung, spacing, BAND_DEPTH_MM, [b.start for b in box])

    rows = []
    sizes = np.diff(starts)
    for lesion_id, c in enumerate(np.argsort(-sizes, kind="stable"), start=int(first_id)):
        part = slice(starts[c], starts[c + 1])
        voxels = ijk[part]
        lps = (voxels @ affine[:3, :3].T + affine[:3, 3]) * _LPS_FROM_RAS
        centroid, low, high = lps.mean(axis=0), lps.min(axis=0), lps.max(axis=0)
        if class_values is None:
            ggo_ml = consolidation_ml = None
        else:
            ggo_ml = int(np.count_nonzero(class_values[part] == GGO_LABEL)) * voxel_ml
            consolidation_ml = int(np.count_nonzero(class_values[part] == CONSOLIDATION_LABEL)) * voxel_ml
        zone = None if zones is None else ZONE_KEYS[majority_zone(np.bincount(zones[part], minlength=len(ZONE_KEYS)))]
        rows.append(
            {
                "lesion_id": lesion_id,
                "kind": kind,
                "volume_ml": int(sizes[c]) * voxel_ml,
                "ggo_volume_ml": ggo_ml,
                "consolidation_volume_ml": consolidation_ml,
                "lung_side": _lung_side(lung_values[part]),
                "zone": zone,
                "centroid_lps_x_mm": float(centroid[0]),
                "centroid_lps_y_mm": float(centroid[1]),
                "centroid_lps_z_mm": float(centroid[2]),
                "bbox_lps_min_x_mm": float(low[0]),
                "bbox_lps_min_y_mm": float(low[1]),
                "bbox_lps_min_z_mm": float(low[2]),
                "bbox_lps_max_x_mm": float(high[0]),
                "bbox_lps_max_y_mm": float(high[1]),
                "bbox_lps_max_z_mm": float(high[2]),
                "mean_hu": float(np.mean(hu[part], dtype=np.float64)),
                "largest_axial_diameter_mm": _largest_axial_diameter(voxels, (spacing[0], spacing[1])),
                "slices": int(voxels[:, 2].max() - voxels[:, 2].min() + 1),
                "peripheral_share": float(np.count_nonzero(peripheral[part])) / int(sizes[c]),
                "band_like": None if deep is None else not bool(deep[c + 1]),
            }
        )
    return rows


def lesion_summary(rows: Sequence[dict]) -> list[dict]:
    """A short form of lesion rows for ``stats.json`` (``nodule_like_lesions``): per row ``lesion_id``,
    ``volume_ml``, ``centroid_lps_mm`` ``[x, y, z]``, ``largest_axial_diameter_mm`` and ``lung_side``, rounded as
    in ``lesions.csv``."""

    def rounded(key: str, value: float) -> float:
        return round(float(value), _CSV_DECIMALS[key]) + 0.0  # + 0.0: no -0.0

    return [
        {
            "lesion_id": int(row["lesion_id"]),
            "volume_ml": rounded("volume_ml", row["volume_ml"]),
            "centroid_lps_mm": [rounded(f"centroid_lps_{axis}_mm", row[f"centroid_lps_{axis}_mm"]) for axis in "xyz"],
            "largest_axial_diameter_mm": rounded("largest_axial_diameter_mm", row["largest_axial_diameter_mm"]),
            "lung_side": row["lung_side"],
        }
        for row in rows
    ]


def _csv_cell(key: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "nan"
        text = f"{value:.{_CSV_DECIMALS.get(key, 6)}f}"
        return text.lstrip("-") if float(text) == 0 else text  # no "-0.00"
    return str(value)


def write_lesion_csv(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write a :func:`lesion_table` as CSV, atomically (a reader never sees a half-written file).

    The header (:data:`LESION_COLUMNS`) is always written, also without lesions. Floats are rounded in the file only:
    volumes to 4 decimals (mL), mm to 2, HU to 1, the peripheral share to 3; ``None`` is an empty cell.

    Args:
        rows: the rows (missing keys are empty cells).
        path: destination file, conventionally ``<case output folder>/``:data:`LESIONS_FILE`.

    Returns:
        ``path``.
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(LESION_COLUMNS)
            for row in rows:
                writer.writerow([_csv_cell(key, row.get(key)) for key in LESION_COLUMNS])

    return atomic_write(path, write)
