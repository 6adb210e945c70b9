"""Infection masks: the binary mask from a probability map (threshold, lung restriction, lesion filters) and its
GGO / consolidation labelling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.morphology import (
    AXIAL_8,
    check_volume,
    connected_components,
    dilate_mm,
    label_counts,
    rowwise,
)
from infnet_monai.postprocessing.nodules import nodule_like
from infnet_monai.postprocessing.thorax import below_lung, lung_floor
from infnet_monai.utils.arrays import SLAB_SLICES, bounding_box
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "GGO_LABEL",
    "CONSOLIDATION_LABEL",
    "CONSOLIDATION_SHARE_THRESHOLD",
    "BASAL_RIM_MM",
    "infection_classes",
    "through_plane_slices",
    "basal_rim_shares",
    "lesions_reaching_depth",
    "postprocess_infection",
    "infection_and_nodules",
]

GGO_LABEL = 1
"""Label of ground-glass opacity in a class map."""
CONSOLIDATION_LABEL = 2
"""Label of consolidation in a class map."""
BASAL_RIM_MM = 0.0
"""Depth (mm) of the basal rim of :func:`basal_rim_shares` beyond its minimum, one slice spacing: the partial volume
of a slice with what lies beneath the lung reaches one slice (``scripts/evaluate_3d.py`` chooses it)."""
CONSOLIDATION_SHARE_THRESHOLD = 0.5
"""An infected voxel is consolidation where ``q = P(consolidation | infection) >= 0.5``: there the consolidation
probability ``p * q`` is at least the GGO probability ``p * (1 - q)``."""


def infection_classes(
    infection: np.ndarray, consolidation_share: np.ndarray, threshold: float = CONSOLIDATION_SHARE_THRESHOLD
) -> np.ndarray:
    """Label every voxel of a binary infection mask GGO (1) or consolidation (2); the rest is 0.

    The non-zero voxels of the result are exactly those of ``infection``: the class map refines the binary mask and
    never disagrees with it.

    Args:
        infection: ``(X, Y, Z)`` mask; voxels ``> 0`` are infection.
        consolidation_share: ``q``, the share of the infection that is consolidation, same shape; float in [0, 1],
            or uint8 in 1/255 steps (``round(255 q)``, exact at ``threshold`` 0.5).
        threshold: ``q`` at or above which an infected voxel is consolidation.

    Returns:
        ``uint8`` array with values 0, 1, 2.

    Raises:
        ValueError: the shapes differ or ``threshold`` is outside (0, 1).
    """
    infection = np.asarray(infection)
    consolidation_share = np.asarray(consolidation_share)
    if infection.shape != consolidation_share.shape:
        raise ValueError(f"infection and consolidation_share must have the same shape, got {infection.shape} and {consolidation_share.shape}.")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}.")
    cut = threshold * 255.0 if consolidation_share.dtype == np.uint8 else threshold

    def label(inf: np.ndarray, share: np.ndarray) -> np.ndarray:
        out = (inf > 0).astype(np.uint8)
        out[(out > 0) & (share >= cut)] = CONSOLIDATION_LABEL
        return out

    return rowwise(label, infection, consolidation_share, dtype=np.uint8)  # no full-size temporaries


def _drop_small_pieces(mask: np.ndarray, pixel_mm2: float, min_area_mm2: float) -> np.ndarray:
    """``mask`` (changed in place) without the in-plane 8-connected pieces smaller than ``min_area_mm2`` on each axial
    slice; :data:`~infnet_monai.utils.arrays.SLAB_SLICES` slices at a time (labelled with :data:`AXIAL_8`, no link
    between slices), so the labels stay small."""
    for z0 in range(0, mask.shape[2], SLAB_SLICES):
        part = mask[:, :, z0 : z0 + SLAB_SLICES]
        if not part.any():
            continue
        labels, n = ndi.label(part, structure=AXIAL_8)
        keep = label_counts(labels, n) * pixel_mm2 >= min_area_mm2
        keep[0] = False
        mask[:, :, z0 : z0 + SLAB_SLICES] = keep[labels]
    return mask


def through_plane_slices(through_plane_mm: float, slice_mm: float) -> int:
    """The number of axial slices in the through-plane window of :func:`infection_and_nodules`: the odd number
    nearest to ``through_plane_mm / slice_mm``, at least 1 (1: no window). A 6 mm window is 3 slices at 2 or 2.5 mm,
    5 at 1.25 mm and 1 at 5 mm: on thick slices the neighbours are too far apart to say anything about each other."""
    if through_plane_mm <= 0:
        return 1
    return max(1, 2 * int(np.floor((through_plane_mm / slice_mm - 1.0) / 2.0 + 0.5)) + 1)


def _through_plane(sub: np.ndarray, probability: np.ndarray, box: tuple, threshold: float, n: int) -> np.ndarray:
    """A new mask: ``sub`` (the mask inside ``box``) where the mean probability over ``n`` axial slices centred on
    each voxel also reaches ``threshold`` (the scan's first and last slices repeat at its ends). ``SLAB_SLICES`` rows
    of the box at a time, in float32: bounded memory on long scans."""
    half = n // 2
    z0, z1 = box[2].start, box[2].stop
    lo, hi = max(z0 - half, 0), min(z1 + half, probability.shape[2])
    out = np.empty_like(sub)
    for x in range(box[0].start, box[0].stop, SLAB_SLICES):
        rows = slice(x, min(x + SLAB_SLICES, box[0].stop))
        local = slice(rows.start - box[0].start, rows.stop - box[0].start)
        p = np.asarray(probability[rows, box[1], lo:hi], dtype=np.float32)
        mean = ndi.uniform_filter1d(p, n, axis=2, mode="nearest")
        np.logical_and(sub[local], mean[:, :, z0 - lo : z1 - lo] >= threshold, out=out[local])
    return out


def _axial_extents_mm(labels: np.ndarray, n: int, slice_mm: float) -> np.ndarray:
    """Per label (index 0 unused), the axial extent in mm: the number of slices it spans times the slice spacing."""
    extents = np.zeros(n + 1)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None:
            extents[i] = (sl[2].stop - sl[2].start) * slice_mm
    return extents


def basal_rim_shares(labels: np.ndarray, n: int, lung: np.ndarray, spacing, rim_mm: float, offset: Sequence[int]) -> np.ndarray:
    """Per lesion label (index 0 unused), the share of its voxels in the basal rim: the lung within ``rim_mm`` (at
    least one slice spacing) of the tissue that lies below the lung in its column
    (:func:`~infnet_monai.postprocessing.thorax.below_lung`: the diaphragm, the liver and spleen domes, the heart).

    There a slice holds lung and the organ beneath it at once, and the partial volume looks like ground glass to a 2D
    network. ``labels`` covers the box of ``lung`` that starts at ``offset``.
    """
    reach = max(float(rim_mm), float(spacing[2]))
    floor = lung_floor(lung)
    pad = [int(np.ceil(reach / s)) + 1 for s in spacing]
    shares = np.zeros(n + 1)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        box = tuple(slice(max(o + b.start - p, 0), min(o + b.stop + p, size)) for o, b, p, size in zip(offset, sl, pad, lung.shape))
        under = below_lung(floor[box[0], box[1]], box[2].start, box[2].stop)
        if not under.any():
            continue
        near = dilate_mm(under, reach, spacing)
        local = tuple(slice(o + b.start - bb.start, o + b.stop - bb.start) for o, b, bb in zip(offset, sl, box))
        lesion = labels[sl] == i
        shares[i] = np.count_nonzero(lesion & near[local]) / max(np.count_nonzero(lesion), 1)
    return shares


def lesions_reaching_depth(labels: np.ndarray, n: int, lung: np.ndarray, spacing, depth_mm: float,
                           offset: Sequence[int], candidates: np.ndarray | None = None) -> np.ndarray:
    """Per lesion label (index 0 unused, ``False``), whether it reaches ``depth_mm`` into the lung: whether one of its
    voxels lies at least ``depth_mm`` from every voxel outside ``lung`` (exact Euclidean distance in mm, with the
    voxel spacing; the chest wall, the mediastinum, the diaphragm). The scan's edge is not outside: where a scan cuts
    the lung, the lung is taken to go on as its edge slice shows it.

    A band along the pleura or the diaphragm (dependent atelectasis, pleural thickening, partial volume with the
    chest wall) never does, however long it is; a pneumonia patch does. Each lesion's distances are computed in its
    bounding box grown by ``depth_mm`` and one voxel, whose border counts as outside: a voxel nearer than
    ``depth_mm`` to the outside has that outside voxel in the box, and the border is farther than ``depth_mm`` from
    the lesion, so the answer is exact. ``labels`` covers the box of ``lung`` that starts at ``offset``; only the
    ``candidates`` labels (default all) are measured, the others are ``False``.
    """
    import edt

    out = np.zeros(n + 1, dtype=bool)
    pad = [int(np.ceil(depth_mm / s)) + 1 for s in spacing]
    anisotropy = tuple(float(s) for s in spacing)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or (candidates is not None and not candidates[i]):
            continue
        box = tuple(slice(max(o + b.start - p, 0), min(o + b.stop + p, size))
                    for o, b, p, size in zip(offset, sl, pad, lung.shape))
        # where the box meets the scan's edge the lung goes on as the edge slice shows it: the scan's edge is no pleura
        grow = [(p if bb.start == 0 else 0, p if bb.stop == size else 0) for bb, p, size in zip(box, pad, lung.shape)]
        inside = np.ascontiguousarray(np.pad(np.asarray(lung[box]) > 0, grow, mode="edge"))
        depth = edt.edtsq(inside, anisotropy=anisotropy, black_border=True, parallel=1)
        local = tuple(slice(o + b.start - bb.start + g[0], o + b.stop - bb.start + g[0])
                      for o, b, bb, g in zip(offset, sl, box, grow))
        lesion = labels[sl] == i
        out[i] = bool((depth[local][lesion] >= depth_mm * depth_mm * (1 - 1e-6)).any())
    return out


def _lesion_gates(labels: np.ndarray, n: int, voxel_mm3: float, min_lesion_volume_mm3: float, lung: np.ndarray,
                  spacing, basal_rim_max_share: float, basal_rim_mm: float, offset: Sequence[int],
                  min_extent_mm: float, min_depth_mm: float = 0.0) -> np.ndarray:
    """Per 3D lesion label (index 0 unused, ``False``), whether it passes the volume, basal-rim, axial-extent and
    depth gates of :func:`infection_and_nodules` (step 4); ``labels`` covers the box of ``lung`` that starts at
    ``offset``."""
    keep = label_counts(labels, n) * voxel_mm3 >= min_lesion_volume_mm3
    keep[0] = False
    if basal_rim_max_share <= 1.0 and keep.any():
        keep &= basal_rim_shares(labels, n, lung, spacing, basal_rim_mm, offset) < basal_rim_max_share
    if min_extent_mm > 0:
        keep &= _axial_extents_mm(labels, n, spacing[2]) >= min_extent_mm - 1e-6
    if min_depth_mm > 0 and keep.any():  # last: the distances are only computed for lesions still kept
        keep &= lesions_reaching_depth(labels, n, lung, spacing, min_depth_mm, offset, keep)
    return keep


def postprocess_infection(probability: np.ndarray, lung: np.ndarray, spacing_mm: Sequence[float], **options) -> np.ndarray:
    """The infection mask of :func:`infection_and_nodules` (``options`` are its keyword arguments), ``uint8`` 0 / 1."""
    return infection_and_nodules(probability, lung, spacing_mm, **options)[0]


def infection_and_nodules(
    probability: np.ndarray,
    lung: np.ndarray,
    spacing_mm: Sequence[float],
    threshold: float = 0.5,
    min_lesion_volume_mm3: float = 10.0,
    min_lesion_extent_mm: float = 0.0,
    min_lesion_area_mm2: float = 0.0,
    basal_rim_max_share: float = 1.0,
    basal_rim_mm: float = BASAL_RIM_MM,
    volume_hu: np.ndarray | None = None,
    through_plane_mm: float = 0.0,
    min_lesion_depth_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary infection mask from a probability map: threshold, restrict to the lung, drop what is not a lesion; and
    the nodule-like lesions it kept out (step 2).

    In this order, so that every 3D component of the result passes every filter (the counts of
    :func:`~infnet_monai.stats.infection_burden` are those of the filtered lesions):

    1. ``probability >= threshold`` inside ``lung``;
    2. with ``volume_hu``, nodule-like 3D components (26-connected) of at least ``min_lesion_volume_mm3``
       (:func:`~infnet_monai.postprocessing.nodules.nodule_like`: solid, compact, in aerated lung) are removed: a
       nodule or small mass is not infection (returned apart, as the network draws it: before the window and the
       gates cut it);
    3. in-plane 8-connected pieces smaller than ``min_lesion_area_mm2`` on an axial slice are removed;
    4. 3D 26-connected lesions smaller than ``min_lesion_volume_mm3`` are removed, those with at least
       ``basal_rim_max_share`` of their voxels in the basal rim (:func:`basal_rim_shares`, the partial volume of the
       lung with the diaphragm and the organs beneath it), those spanning fewer axial millimetres than
       ``min_lesion_extent_mm``, and those that reach less than ``min_lesion_depth_mm`` into the lung
       (:func:`lesions_reaching_depth`: bands along the pleura or the diaphragm);
    5. with ``through_plane_mm``, a lesion of step 4 stays only if it holds a lesion that passes steps 3 and 4 as
       seen through an axial window: in the mask where the mean probability over the slices within that window (:func:`through_plane_slices`) reaches
       ``threshold`` as well. A call the network makes on one slice but not on its neighbours is seen there as
       shorter and smaller, and fails the gates. A lesion that passes stays whole, as the network draws it on each
       slice: the window decides which lesions count, it does not trim their ends.

    Args:
        probability: infection probability (0-1) or any score, shape ``(X, Y, Z)`` (RAS, as
            :func:`~infnet_monai.postprocessing.lung.lung_mask`).
        lung: lung mask or label map of the same shape; voxels ``> 0`` are lung.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        threshold: a voxel is positive when ``probability >= threshold``.
        min_lesion_volume_mm3: lesions smaller than this volume (mm^3) are removed; 0 keeps all.
        min_lesion_extent_mm: lesions spanning fewer axial millimetres (number of slices times the slice spacing)
            are removed; a scan shorter than this requires its full length. 0 keeps all.
        min_lesion_area_mm2: in-plane pieces smaller than this area (mm^2) on an axial slice are removed first.
            0 keeps all.
        basal_rim_max_share: lesions with at least this share (0-1] of their voxels in the basal rim are removed;
            1 removes only lesions entirely inside it, and a value above 1 none.
        basal_rim_mm: depth of the basal rim (mm); at least one slice spacing is used.
        volume_hu: the CT in HU, for the nodule-like test; ``None`` skips it.
        through_plane_mm: length (mm) of the axial window of step 5; 0 (or a window of one slice) skips it.
        min_lesion_depth_mm: lesions none of whose voxels lies this far (mm) from the outside of ``lung`` are
            removed; 0 keeps all.

    Returns:
        ``(infection, nodules)``, ``uint8`` 0 / 1 arrays of shape ``(X, Y, Z)``; ``nodules`` is empty without
        ``volume_hu``.

    Raises:
        ValueError: on shape mismatch, non-3D input, non-positive spacing or negative volume / extent / area /
            depth.
    """
    probability = check_volume(probability, "probability")
    lung = check_volume(lung, "lung")
    if probability.shape != lung.shape:
        raise ValueError(f"probability and lung must have the same shape, got {probability.shape} and {lung.shape}.")
    if volume_hu is not None and np.shape(volume_hu) != lung.shape:
        raise ValueError(f"volume_hu must have the lung's shape {lung.shape}, got {np.shape(volume_hu)}.")
    spacing = check_spacing_mm(spacing_mm)
    sizes = (min_lesion_volume_mm3, min_lesion_extent_mm, min_lesion_area_mm2, basal_rim_mm, through_plane_mm, min_lesion_depth_mm)
    if min(sizes) < 0 or basal_rim_max_share <= 0:
        raise ValueError(
            "min_lesion_volume_mm3, min_lesion_extent_mm, min_lesion_area_mm2, basal_rim_mm, through_plane_mm and "
            f"min_lesion_depth_mm must be >= 0 and basal_rim_max_share > 0, got {', '.join(map(str, sizes))} and "
            f"{basal_rim_max_share}."
        )
    mask = rowwise(lambda p, lu: (p >= threshold) & (lu > 0), probability, lung)  # no full-size temporaries
    nodules = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return mask.view(np.uint8), nodules
    box = bounding_box(mask)  # label only around the lesions: bounded memory on long scans
    sub = np.ascontiguousarray(mask[box])
    voxel_mm3 = float(np.prod(spacing))
    if volume_hu is not None:  # nodules as the network draws them, before the clean-up cuts them into pieces
        labels, n = connected_components(sub, 26)
        candidates = label_counts(labels, n) * voxel_mm3 >= min_lesion_volume_mm3
        nodule = nodule_like(labels, n, np.asarray(volume_hu)[box], spacing, candidates)
        nodule[0] = False
        if nodule.any():
            found = nodule[labels]
            nodules[box] = found
            sub &= ~found
        del labels
    if min_lesion_area_mm2 > 0:
        sub = _drop_small_pieces(sub, spacing[0] * spacing[1], min_lesion_area_mm2)
    gates = dict(voxel_mm3=voxel_mm3, min_lesion_volume_mm3=min_lesion_volume_mm3, lung=lung, spacing=spacing,
                 basal_rim_max_share=basal_rim_max_share, basal_rim_mm=basal_rim_mm, offset=[b.start for b in box],
                 min_extent_mm=min(min_lesion_extent_mm, mask.shape[2] * spacing[2]) if min_lesion_extent_mm > 0 else 0.0,
                 min_depth_mm=float(min_lesion_depth_mm))
    window = through_plane_slices(through_plane_mm, spacing[2])
    if window > 1:  # judge the lesions on the windowed mask; keep the ones that pass whole, as the network draws them
        judged = _through_plane(sub, probability, box, threshold, window)
        if min_lesion_area_mm2 > 0:
            judged = _drop_small_pieces(judged, spacing[0] * spacing[1], min_lesion_area_mm2)
        labels, n = connected_components(judged, 26)
        passed = _lesion_gates(labels, n, **gates)[labels]
        del labels, judged
        labels, n = connected_components(sub, 26)
        keep = np.zeros(n + 1, dtype=bool)
        keep[np.unique(labels[passed])] = True
        del passed
    else:
        labels, n = connected_components(sub, 26)
        keep = np.ones(n + 1, dtype=bool)
    keep[0] = False
    if keep.any():
        keep &= _lesion_gates(labels, n, **gates)
    sub = keep[labels]
    del labels
    mask[...] = False  # the result takes the mask's memory: no second full-size array on long scans
    mask[box] = sub
    return mask.view(np.uint8), nodules
