# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Zonal distribution of the infection: upper / middle / lower thirds of each lung, ventral / dorsal halves, peripheral /
central parts, and a declared zone score.

The zone score is a score on **thirds of each lung's own cranio-caudal height**: six zones (right and left lung, upper,
middle and lower third), each scored 0-5 from its infected percentage with :data:`ZONE_SCORE_BINS`, summed to 0-30.
It is **not** the lobe-based CT severity score (CT-SS) of Pan et al. (Radiology 2020) or Chung et al. (Radiology
2020), which score the five anatomical lobes: this pipeline segments no lobes, and thirds of a lung's height do not
follow the fissures. Report it as "zone score", never as CT-SS. Thirds of a lung's height need the whole height: on a
scan that cuts the lungs the zones are withheld (``by_height=False``, :data:`ZONES_WITHHELD_LUNGS_CUT`).

Conventions (the pipeline's, see :mod:`infnet_monai.stats.burden`): arrays are RAS-oriented ``(X, Y, Z)``, i.e. voxel
axis 0 increases toward the patient's Right, axis 1 toward Anterior and axis 2 toward Superior (MONAI
``Orientation(axcodes="RAS")``); axis 2 is the axial axis. ``lung`` is a label map with 0 background,
:data:`~infnet_monai.postprocessing.lung.RIGHT_LUNG_LABEL` (1) right lung and
:data:`~infnet_monai.postprocessing.lung.LEFT_LUNG_LABEL` (2) left lung. Infection is counted only where ``lung > 0``
(infection outside the lung belongs to no zone).

Zones, all on each lung's own extent (the index range of the voxels carrying its label):

- **Thirds** (axis 2): for the lung's slices ``kmin..kmax`` (``n = kmax - kmin + 1``), slice ``k`` at ``d = kmax - k``
  slices below the top belongs to third ``min(2, floor(3 * (d + 0.5) / n))``, 0 = upper (superior), 1 = middle,
  2 = lower. Every slice index in the extent is in exactly one third, so the six zones partition the two lungs. With
  ``n`` a multiple of 3 the thirds hold ``n / 3`` slices each; the split is symmetric (10 slices: 3 / 4 / 3; 1 slice:
  middle only; 2 slices: upper and lower only).
- **Ventral / dorsal halves** (axis 1): the same rule with 2 parts on the rows ``jmin..jmax`` of the lung,
  ``d = jmax - j`` rows behind the most anterior row: ``floor(2 * (d + 0.5) / n) == 0`` is ventral (anterior), else
  dorsal. With an odd number of rows the middle row is dorsal.
- **Peripheral / central**: on each axial slice and for each lung, the in-plane Euclidean distance (mm) from each
  lung voxel centre to the nearest voxel centre outside that lung (background, the other lung, or beyond the edge of
  the array); a voxel is peripheral when this distance is at most :data:`PERIPHERAL_DEPTH_FRACTION` (1/3) of the
  largest such distance in that lung on that slice (the outer third of the depth below the pleura), else central.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.infection import CONSOLIDATION_LABEL, GGO_LABEL
from infnet_monai.postprocessing.lung import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from infnet_monai.postprocessing.morphology import connected_components, row_slabs
from infnet_monai.stats.burden import MM3_PER_ML
from infnet_monai.utils.arrays import SLAB_SLICES, bounding_box
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "ZONE_KEYS",
    "ZONE_COLUMNS",
    "DISTRIBUTION_KEYS",
    "ZONE_SCORE_BINS",
    "ZoneScoreBin",
    "PERIPHERAL_DEPTH_FRACTION",
    "ZONES_WITHHELD_LUNGS_CUT",
    "zone_distribution",
    "zone_columns",
    "percent_to_zone_score",
    "slice_thirds",
    "voxel_zones",
    "majority_zone",
    "peripheral_mask",
    "infection_components",
    "check_zone_masks",
]

_SIDES: tuple[tuple[int, str], ...] = ((RIGHT_LUNG_LABEL, "right"), (LEFT_LUNG_LABEL, "left"))
_THIRDS = ("upper", "middle", "lower")

ZONE_KEYS: tuple[str, ...] = tuple(f"{side}_{third}" for _, side in _SIDES for third in _THIRDS)
"""The six cranio-caudal zones, in order: ``right_upper, right_middle, right_lower, left_upper, left_middle,
left_lower``. A zone index (as :func:`voxel_zones` returns it) is a position in this tuple."""

DISTRIBUTION_KEYS: tuple[str, ...] = tuple(
    f"{side}_{part}" for _, side in _SIDES for part in ("ventral", "dorsal", "peripheral", "central")
)
"""Keys of ``zone_distribution(...)["distribution"]``: ventral / dorsal and peripheral / central parts per lung."""

ZONE_COLUMNS: tuple[str, ...] = ("zone_score", *(f"{zone}_infection_percent" for zone in ZONE_KEYS))
"""Flat (CSV) columns returned by :func:`zone_columns`, in order."""

PERIPHERAL_DEPTH_FRACTION = 1.0 / 3.0
"""A lung voxel is peripheral when its in-plane distance to the outside of its lung is at most this fraction of the
largest such distance in that lung on that slice."""

ZONES_WITHHELD_LUNGS_CUT = (
    "the scan does not cover the whole lung (lungs_cut_by_scan): zones by lung height are not defined"
)
"""Why the zones are withheld (``zones_withheld``) on a scan that cuts the lungs
(:func:`~infnet_monai.stats.anatomy.lungs_cut_by_scan`): thirds of a lung's height need the whole height, and a
two-slice scan would put every lesion in an "upper" or "lower" zone."""

_DEPTH_RTOL = 1e-9  # a voxel at exactly a third of the depth is peripheral despite float rounding of the distances

# A lesion whose largest voxel share is tied between zones goes to the upper-most of them, right before left.
_TIE_ORDER = np.array([ZONE_KEYS.index(f"{side}_{third}") for third in _THIRDS for _, side in _SIDES])


class ZoneScoreBin(NamedTuple):
    """One row of a zone score table: a zone scores ``score`` when its infected percentage is above
    ``lower_percent`` (or equal to it, when ``includes_lower``) and no later row applies."""

    score: int
    lower_percent: float
    includes_lower: bool


ZONE_SCORE_BINS: tuple[ZoneScoreBin, ...] = (
    ZoneScoreBin(1, 0.0, False),
    ZoneScoreBin(2, 5.0, True),
    ZoneScoreBin(3, 25.0, False),
    ZoneScoreBin(4, 50.0, False),
    ZoneScoreBin(5, 75.0, False),
)
"""Score of a zone from its infected percentage ``p`` (of that zone's lung volume), rows in ascending order:

===== =========================
score zone infected percentage
===== =========================
0     ``p == 0`` (or undefined)
1     ``0 < p < 5``
2     ``5 <= p <= 25``
3     ``25 < p <= 50``
4     ``50 < p <= 75``
5     ``p > 75``
===== =========================

The six zone scores sum to the 0-30 zone score. These are thirds of each lung's height, not lobes: this is not the
lobe-based CT severity score (CT-SS) of Pan et al. / Chung et al."""


def _check_bins(bins: Sequence[Sequence]) -> tuple[ZoneScoreBin, ...]:
    try:
        rows = tuple(ZoneScoreBin(*row) for row in bins)
    except TypeError as err:
        raise ValueError(f"bins must be rows of (score, lower_percent, includes_lower), got {bins!r}.") from err
    if not rows:
        raise ValueError("bins must hold at least one (score, lower_percent, includes_lower) row.")
    for row in rows:
        if isinstance(row.score, bool) or not isinstance(row.score, (int, np.integer)) or row.score < 0:
            raise ValueError(f"bins: every score must be an int >= 0, got {row!r}.")
        if not isinstance(row.lower_percent, (int, float, np.number)) or not math.isfinite(row.lower_percent):
            raise ValueError(f"bins: every lower_percent must be a finite number, got {row!r}.")
    lowers = [float(row.lower_percent) for row in rows]
    if any(b <= a for a, b in zip(lowers, lowers[1:])):
        raise ValueError(f"bins: lower_percent must increase strictly from row to row, got {lowers}.")
    return rows


def percent_to_zone_score(percent: float, bins: Sequence[Sequence] = ZONE_SCORE_BINS) -> int:
    """Score (0-5 with the default table) of one zone from its infected percentage.

    Args:
        percent: infected percentage of the zone's lung volume (0-100); ``NaN`` (a zone without lung) scores 0.
        bins: score table, rows ``(score, lower_percent, includes_lower)`` with ``lower_percent`` increasing; the
            default is :data:`ZONE_SCORE_BINS`.

    Returns:
        the score of the last row whose lower bound ``percent`` passes, 0 when none does.

    Raises:
        ValueError: when ``bins`` is not such a table.
    """
    score = 0
    percent = float(percent)
    for row in _check_bins(bins):
        if percent > row.lower_percent or (row.includes_lower and percent == row.lower_percent):
            score = int(row.score)
    return score


def check_zone_masks(
    infection: np.ndarray, lung: np.ndarray, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The masks the zone and lesion statistics take, as numpy arrays, after checking that they fit together.

    Args:
        infection: ``(X, Y, Z)`` infection mask (``> 0`` infected).
        lung: lung label map of the same shape: 0 background, :data:`~infnet_monai.postprocessing.lung.RIGHT_LUNG_LABEL`
            right lung, :data:`~infnet_monai.postprocessing.lung.LEFT_LUNG_LABEL` left lung.
        classes: optional class map of the same shape.

    Returns:
        ``(infection, lung, classes)`` as numpy arrays (``classes`` ``None`` when not given).

    Raises:
        ValueError: the arrays are not 3D of one shape, or ``lung`` holds labels other than 0, 1 and 2.
    """
    infection, lung = np.asarray(infection), np.asarray(lung)
    classes = None if classes is None else np.asarray(classes)
    shapes = [a.shape for a in (infection, lung, classes) if a is not None]
    if any(len(s) != 3 for s in shapes) or len(set(shapes)) != 1:
        raise ValueError(f"infection, lung (and classes) must be 3D arrays of the same shape, got shapes {shapes}.")
    if lung.size and (lung.min() < 0 or lung.max() > max(RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)):
        raise ValueError(
            f"lung must be a label map of 0 background, {RIGHT_LUNG_LABEL} right lung, {LEFT_LUNG_LABEL} left lung; "
            f"got values from {lung.min()} to {lung.max()}. Split the lung mask into sides first "
            "(infnet_monai.postprocessing.lung)."
        )
    return infection, lung, classes


def _parts(present: np.ndarray, parts: int) -> np.ndarray:
    """Part of each index of the extent of ``present`` (1D bool) split into ``parts``, counted from the largest index
    (part 0 holds the largest indices); -1 outside the extent."""
    out = np.full(present.shape, -1, dtype=np.int8)
    idx = np.flatnonzero(present)
    if idx.size:
        lo, hi = int(idx[0]), int(idx[-1])
        n = hi - lo + 1
        d = hi - np.arange(lo, hi + 1)
        # floor(parts * (d + 0.5) / n) in integers
        out[lo : hi + 1] = np.minimum(parts - 1, (2 * parts * d + parts) // (2 * n))
    return out


def slice_thirds(lung: np.ndarray) -> dict[int, np.ndarray]:
    """Third of each axial slice for each lung: 0 upper, 1 middle, 2 lower, -1 outside that lung's extent.

    Args:
        lung: ``(X, Y, Z)`` RAS lung label map (0 background, 1 right, 2 left).

    Returns:
        ``{RIGHT_LUNG_LABEL: thirds, LEFT_LUNG_LABEL: thirds}``, each an int8 array of length ``Z`` (see the module
        docstring for the rule).
    """
    lung = np.asarray(lung)
    present = {label: np.zeros(lung.shape[2], dtype=bool) for label, _ in _SIDES}
    for rows in row_slabs(lung.shape):
        slab = lung[rows]
        for label, _ in _SIDES:
            present[label] |= (slab == label).any(axis=(0, 1))
    return {label: _parts(p, 3) for label, p in present.items()}


def voxel_zones(lung_values: np.ndarray, k: np.ndarray, thirds: dict[int, np.ndarray]) -> np.ndarray:
    """Zone index (position in :data:`ZONE_KEYS`) of lung voxels.

    Args:
        lung_values: lung labels of the voxels (1 or 2), shape ``(N,)``.
        k: their slice indices along axis 2, shape ``(N,)``.
        thirds: :func:`slice_thirds` of the lung map.

    Returns:
        int64 array ``(N,)``: 0-2 right upper / middle / lower, 3-5 left upper / middle / lower, -1 for a voxel
        outside both lungs.
    """
    lung_values, k = np.asarray(lung_values), np.asarray(k)
    right = lung_values == RIGHT_LUNG_LABEL
    left = lung_values == LEFT_LUNG_LABEL
    out = np.full(lung_values.shape, -1, dtype=np.int64)
    out[right] = thirds[RIGHT_LUNG_LABEL][k[right]]
    out[left] = len(_THIRDS) + thirds[LEFT_LUNG_LABEL][k[left]]
    return out


def majority_zone(zone_counts: np.ndarray) -> np.ndarray | int:
    """Zone holding the most voxels; a tie goes to the upper-most zone (upper before middle before lower), then to
    the right lung.

    Args:
        zone_counts: voxels per zone in :data:`ZONE_KEYS` order, shape ``(6,)`` or ``(N, 6)`` for ``N`` lesions.

    Returns:
        the zone index (an int for one lesion, an int64 array ``(N,)`` for several).
    """
    counts = np.asarray(zone_counts)
    best = _TIE_ORDER[np.argmax(counts[..., _TIE_ORDER], axis=-1)]
    return int(best) if counts.ndim == 1 else best


def infection_components(infection: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, int, tuple[slice, ...]] | None:
    """3D 26-connected components of the infection inside the lung (``infection > 0`` and ``lung > 0``), as
    :func:`~infnet_monai.stats.infection_burden` counts lesions.

    Returns:
        ``(labels, n, box)``: the component labels (1..n, 0 elsewhere) of the infection's bounding box ``box`` (a
        tuple of slices into the full array), or ``None`` when there is no infected lung voxel.
    """
    infection, lung = np.asarray(infection), np.asarray(lung)
    if not infection.any():
        return None
    box = bounding_box(infection)  # labelled within the lesions' box only: bounded memory on long scans
    inside = (infection[box] > 0) & (lung[box] > 0)
    if not inside.any():
        return None
    labels, n = connected_components(inside, 26)
    return labels, int(n), box


def _zone_lesion_counts(infection: np.ndarray, lung: np.ndarray, thirds: dict[int, np.ndarray]) -> np.ndarray:
    """Lesions per zone: each lesion counted once, in the zone holding most of its voxels."""
    found = infection_components(infection, lung)
    if found is None:
        return np.zeros(len(ZONE_KEYS), dtype=np.int64)
    labels, n, box = found
    idx = np.nonzero(labels)
    zones = voxel_zones(lung[box][idx], idx[2] + box[2].start, thirds)
    per_lesion = np.bincount(labels[idx].astype(np.int64) * len(ZONE_KEYS) + zones, minlength=(n + 1) * len(ZONE_KEYS))
    return np.bincount(majority_zone(per_lesion.reshape(n + 1, len(ZONE_KEYS))[1:]), minlength=len(ZONE_KEYS))


def _peripheral_slices(
    lung: np.ndarray, spacing_xy: tuple[float, float], z_start: int = 0, z_stop: int | None = None
) -> Iterator[tuple[int, int, slice, slice, np.ndarray, np.ndarray]]:
    """Per lung and axial slice in ``[z_start, z_stop)``: ``(label, k, sx, sy, inside, peripheral)`` with ``inside`` and
    ``peripheral`` boolean maps of the crop ``lung[sx, sy, k]`` (the lung's in-plane bounding box on that slice)."""
    z_stop = lung.shape[2] if z_stop is None else z_stop
    for z0 in range(z_start, z_stop, SLAB_SLICES):
        z1 = min(z0 + SLAB_SLICES, z_stop)
        slab = lung[..., z0:z1]
        for label, _ in _SIDES:
            in_lung = slab == label
            rows_x, rows_y = in_lung.any(axis=1), in_lung.any(axis=0)  # (X, s), (Y, s)
            for s in np.flatnonzero(rows_x.any(axis=0)):
                xs, ys = np.flatnonzero(rows_x[:, s]), np.flatnonzero(rows_y[:, s])
                sx, sy = slice(int(xs[0]), int(xs[-1]) + 1), slice(int(ys[0]), int(ys[-1]) + 1)
                inside = in_lung[sx, sy, s]
                # one voxel of padding: outside the lung's box (or the array) counts as outside the lung, and the
                # nearest outside voxel is always within the padded box, so cropping changes no distance
                depth = ndi.distance_transform_edt(np.pad(inside, 1), sampling=spacing_xy)[1:-1, 1:-1]
                limit = depth.max() * PERIPHERAL_DEPTH_FRACTION * (1.0 + _DEPTH_RTOL)
                yield label, z0 + int(s), sx, sy, inside, inside & (depth <= limit)


def peripheral_mask(lung: np.ndarray, spacing_mm: Sequence[float], box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Peripheral lung voxels: in-plane distance to the outside of their lung at most a third of the largest one in
    that lung on that slice (see the module docstring).

    Args:
        lung: ``(X, Y, Z)`` RAS lung label map (0 background, 1 right, 2 left).
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)`` (only the in-plane sizes are used).
        box: optional sub-volume (3 slices with steps of 1) to return; the distances still use the whole slices.

    Returns:
        bool array of ``box``'s shape (the whole ``lung`` shape by default): ``True`` on peripheral lung voxels,
        ``False`` on central lung voxels and outside the lung.
    """
    lung = np.asarray(lung)
    spacing = check_spacing_mm(spacing_mm)
    box = tuple(slice(0, n) for n in lung.shape) if box is None else tuple(box)
    box = tuple(slice(*b.indices(n)[:2]) for b, n in zip(box, lung.shape))
    out = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
    for _, k, sx, sy, _, peripheral in _peripheral_slices(lung, spacing[:2], box[2].start, box[2].stop):
        # the part of the slice's crop that lies in the box
        x0, x1 = max(sx.start, box[0].start), min(sx.stop, box[0].stop)
        y0, y1 = max(sy.start, box[1].start), min(sy.stop, box[1].stop)
        if x0 < x1 and y0 < y1:
            out[x0 - box[0].start : x1 - box[0].start, y0 - box[1].start : y1 - box[1].start, k - box[2].start] |= (
                peripheral[x0 - sx.start : x1 - sx.start, y0 - sy.start : y1 - sy.start]
            )
    return out


def _region(n_lung: int, n_infected: int, voxel_ml: float) -> dict[str, float]:
    return {
        "lung_volume_ml": n_lung * voxel_ml,
        "infection_volume_ml": n_infected * voxel_ml,
        "infection_percent": 100.0 * n_infected / n_lung if n_lung else float("nan"),
    }


def zone_distribution(
    infection: np.ndarray,
    lung: np.ndarray,
    spacing_mm: Sequence[float],
    classes: np.ndarray | None = None,
    bins: Sequence[Sequence] = ZONE_SCORE_BINS,
    peripheral: np.ndarray | None = None,
    by_height: bool = True,
) -> dict:
    """Infection per zone (thirds of each lung's own height), the zone score, and the ventral / dorsal and peripheral /
    central distribution.

    The zone score sums six 0-5 scores of the thirds of each lung's own cranio-caudal extent (see the module
    docstring); it is **not** the lobe-based CT severity score (CT-SS) of Pan et al. / Chung et al. Infection is
    counted only where ``lung > 0``, so the zones' infected volumes sum to the infection inside the lung and their
    lung volumes sum to the lung volume. Percentages of a zone without lung are ``float("nan")`` (score 0, nothing
    logged: a one- or two-slice lung leaves a third empty). Values are not rounded.

    Args:
        infection: ``(X, Y, Z)`` RAS infection mask; voxels ``> 0`` inside the lung are infected.
        lung: lung label map of the same shape: 0 background, 1 right lung, 2 left lung.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        classes: optional class map of the same shape (0, 1 GGO, 2 consolidation), counted as given inside the lung;
            adds ``ggo_volume_ml`` and ``consolidation_volume_ml`` to each zone.
        bins: zone score table (default :data:`ZONE_SCORE_BINS`).
        peripheral: :func:`peripheral_mask` of ``lung`` (the whole volume) when already at hand (the lesion table
            needs it too, :func:`~infnet_monai.stats.readout.case_readout`); else computed here.
        by_height: ``False`` skips the zones by lung height (the thirds, their scores and lesion counts): on a scan
            that cuts the lungs they are not defined (:data:`ZONES_WITHHELD_LUNGS_CUT`); ``"zones"`` and
            ``"zone_score"`` are then ``None`` and only the distribution is computed.

    Returns:
        dict with

        - ``"zones"``: ``{zone: {...}}`` for the six :data:`ZONE_KEYS` in order, each with ``lung_volume_ml``,
          ``infection_volume_ml`` (mL), ``infection_percent`` (% of the zone's lung volume), ``score`` (int) and
          ``lesion_count`` (int: the 3D 26-connected infection components whose largest voxel share lies in the zone,
          a tie going to the upper-most zone, then to the right lung; they sum to the lesions inside the lung);
          ``None`` with ``by_height=False``.
        - ``"zone_score"``: int, the sum of the six scores (0-30 with the default table); ``None`` with
          ``by_height=False``.
        - ``"distribution"``: ``{part: {"lung_volume_ml", "infection_volume_ml", "infection_percent"}}`` for the
          :data:`DISTRIBUTION_KEYS` (``right_ventral``, ``right_dorsal``, ``right_peripheral``, ``right_central``,
          then ``left_...``).

    Raises:
        ValueError: when the arrays are not 3D of the same shape, ``lung`` holds labels other than 0, 1, 2,
            ``spacing_mm`` is not 3 positive sizes or ``bins`` is not a score table.
    """
    infection, lung, classes = check_zone_masks(infection, lung, classes)
    spacing = check_spacing_mm(spacing_mm)
    bins = _check_bins(bins)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / MM3_PER_ML
    shape = lung.shape

    # (Y, Z) profiles per lung, counted slab by slab: no full-size temporaries
    lung_yz = {label: np.zeros(shape[1:], dtype=np.int64) for label, _ in _SIDES}
    infected_yz = {label: np.zeros(shape[1:], dtype=np.int64) for label, _ in _SIDES}
    class_z = {
        (label, c): np.zeros(shape[2], dtype=np.int64) for label, _ in _SIDES for c in (GGO_LABEL, CONSOLIDATION_LABEL)
    }
    for rows in row_slabs(shape):  # slabs of whole rows (contiguous), summed over axis 0
        lu, infected = lung[rows], infection[rows] > 0
        for label, _ in _SIDES:
            in_lung = lu == label
            lung_yz[label] += np.count_nonzero(in_lung, axis=0)
            infected_yz[label] += np.count_nonzero(in_lung & infected, axis=0)
            if classes is not None and by_height:  # the class volumes are per zone
                for c in (GGO_LABEL, CONSOLIDATION_LABEL):
                    class_z[label, c] += np.count_nonzero(in_lung & (classes[rows] == c), axis=(0, 1))

    zones: dict[str, dict] | None = None
    if by_height:
        thirds = {label: _parts(lung_yz[label].any(axis=0), 3) for label, _ in _SIDES}
        lesions = _zone_lesion_counts(infection, lung, thirds)
        zones = {}
        for label, side in _SIDES:
            lung_z, infected_z = lung_yz[label].sum(axis=0), infected_yz[label].sum(axis=0)
            for t, third in enumerate(_THIRDS):
                name = f"{side}_{third}"
                in_third = thirds[label] == t
                zone = _region(int(lung_z[in_third].sum()), int(infected_z[in_third].sum()), voxel_ml)
                zone["score"] = percent_to_zone_score(zone["infection_percent"], bins)
                zone["lesion_count"] = int(lesions[ZONE_KEYS.index(name)])
                if classes is not None:
                    ggo, consolidation = class_z[label, GGO_LABEL], class_z[label, CONSOLIDATION_LABEL]
                    zone["ggo_volume_ml"] = int(ggo[in_third].sum()) * voxel_ml
                    zone["consolidation_volume_ml"] = int(consolidation[in_third].sum()) * voxel_ml
                zones[name] = zone

    n_peripheral = {label: [0, 0] for label, _ in _SIDES}  # lung, infected voxels
    if peripheral is not None:
        peripheral = np.asarray(peripheral)
        if peripheral.shape != shape:
            raise ValueError(f"peripheral must have the lung's shape {shape}, got {peripheral.shape}.")
        for rows in row_slabs(shape):
            periph, lu, infected = peripheral[rows], lung[rows], infection[rows] > 0
            for label, _ in _SIDES:
                in_lung = periph & (lu == label)
                n_peripheral[label][0] += int(np.count_nonzero(in_lung))
                n_peripheral[label][1] += int(np.count_nonzero(in_lung & infected))
    else:
        for label, k, sx, sy, _, periph in _peripheral_slices(lung, spacing[:2]):
            n_peripheral[label][0] += int(np.count_nonzero(periph))
            if infected_yz[label][sy, k].any():
                n_peripheral[label][1] += int(np.count_nonzero(periph & (infection[sx, sy, k] > 0)))

    distribution: dict[str, dict] = {}
    for label, side in _SIDES:
        lung_y, infected_y = lung_yz[label].sum(axis=1), infected_yz[label].sum(axis=1)
        halves = _parts(lung_y > 0, 2)
        n_lung, n_infected = int(lung_y.sum()), int(infected_y.sum())
        n_ventral, n_ventral_infected = int(lung_y[halves == 0].sum()), int(infected_y[halves == 0].sum())
        n_periph, n_periph_infected = n_peripheral[label]
        distribution[f"{side}_ventral"] = _region(n_ventral, n_ventral_infected, voxel_ml)
        distribution[f"{side}_dorsal"] = _region(n_lung - n_ventral, n_infected - n_ventral_infected, voxel_ml)
        distribution[f"{side}_peripheral"] = _region(n_periph, n_periph_infected, voxel_ml)
        distribution[f"{side}_central"] = _region(n_lung - n_periph, n_infected - n_periph_infected, voxel_ml)

    return {
        "zones": zones,
        "zone_score": None if zones is None else int(sum(zone["score"] for zone in zones.values())),
        "distribution": {key: distribution[key] for key in DISTRIBUTION_KEYS},
    }


def zone_columns(result: dict) -> dict[str, float | int | None]:
    """Flat CSV columns of a :func:`zone_distribution` result, keys :data:`ZONE_COLUMNS`: ``zone_score`` and
    ``<zone>_infection_percent`` for the six zones (NaN for a zone without lung); all ``None`` (empty cells) when the
    zones were withheld (``by_height=False``)."""
    zones = result["zones"]
    columns: dict[str, float | int | None] = {"zone_score": result["zone_score"]}
    for zone in ZONE_KEYS:
        columns[f"{zone}_infection_percent"] = None if zones is None else zones[zone]["infection_percent"]
    return columns
