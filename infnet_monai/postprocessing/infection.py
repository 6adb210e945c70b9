"""Infection masks: the binary mask from a probability map (threshold, lung restriction, lesion filters) and its
GGO / consolidation labelling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.postprocessing.morphology import AXIAL_8, FULL_3D, check_volume, dilate_mm
from infnet_monai.utils.arrays import bounding_box, component_sizes, label_components, slabwise
from infnet_monai.utils.validation import check_spacing_mm

__all__ = [
    "GGO_LABEL", "CONSOLIDATION_LABEL", "CONSOLIDATION_SHARE_THRESHOLD", "infection_classes", "postprocess_infection"
]

GGO_LABEL = 1
"""Label of ground-glass opacity in a class map."""
CONSOLIDATION_LABEL = 2
"""Label of consolidation in a class map."""
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

    return slabwise(label, infection, consolidation_share, dtype=np.uint8)  # no full-size temporaries


def _drop_small_pieces(mask: np.ndarray, pixel_mm2: float, min_area_mm2: float) -> np.ndarray:
    """``mask`` (changed in place) without the in-plane 8-connected pieces smaller than ``min_area_mm2`` on each axial
    slice; one slice at a time, so the labels stay small."""
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        labels, _ = ndi.label(mask[:, :, k], structure=AXIAL_8[:, :, 1], output=np.int32)
        keep = np.bincount(labels.ravel()) * pixel_mm2 >= min_area_mm2
        keep[0] = False
        mask[:, :, k] = keep[labels]
    return mask


def postprocess_infection(
    probability: np.ndarray,
    lung: np.ndarray,
    spacing_mm: Sequence[float],
    threshold: float = 0.5,
    min_lesion_volume_mm3: float = 10.0,
    lung_margin_mm: float = 0.0,
    min_lesion_extent_mm: float = 0.0,
    min_lesion_area_mm2: float = 0.0,
) -> np.ndarray:
    """Binary infection mask from a probability map: threshold, restrict to the lung, drop small lesions.

    Args:
        probability: infection probability (0-1) or any score, shape ``(X, Y, Z)`` (RAS, as :func:`lung_mask`).
        lung: lung mask or label map of the same shape; voxels ``> 0`` are lung.
        spacing_mm: voxel size in mm along axes ``(0, 1, 2)``.
        threshold: a voxel is positive when ``probability >= threshold``.
        min_lesion_volume_mm3: 3D 26-connected components smaller than this volume (mm^3) are removed;
            0 keeps all.
        lung_margin_mm: the lung is dilated by this distance (mm, exact Euclidean, spacing-aware) before the
            restriction, to keep lesions at the pleura that the lung mask cut; 0 uses the lung as is.
        min_lesion_extent_mm: components spanning fewer axial millimetres (number of slices times the slice
            spacing) are removed; a scan shorter than this requires its full length. 0 keeps all.
        min_lesion_area_mm2: after the 3D filters, in-plane 8-connected pieces smaller than this area (mm^2) on an
            axial slice are removed. 0 keeps all.

    Returns:
        ``uint8`` array of shape ``(X, Y, Z)`` with values 0 / 1.

    Raises:
        ValueError: on shape mismatch, non-3D input, non-positive spacing or negative volume / margin / extent.
    """
    probability = check_volume(probability, "probability")
    lung = check_volume(lung, "lung")
    if probability.shape != lung.shape:
        raise ValueError(f"probability and lung must have the same shape, got {probability.shape} and {lung.shape}.")
    spacing = check_spacing_mm(spacing_mm)
    if min(min_lesion_volume_mm3, min_lesion_extent_mm, min_lesion_area_mm2) < 0:
        raise ValueError(
            "min_lesion_volume_mm3, min_lesion_extent_mm and min_lesion_area_mm2 must be >= 0, got "
            f"{min_lesion_volume_mm3}, {min_lesion_extent_mm} and {min_lesion_area_mm2}."
        )
    if lung_margin_mm < 0:
        raise ValueError(f"lung_margin_mm must be >= 0, got {lung_margin_mm}.")

    if lung_margin_mm > 0:
        region = dilate_mm(lung > 0, lung_margin_mm, spacing)
        mask = slabwise(lambda p, r: (p >= threshold) & r, probability, region)
        del region
    else:  # slab by slab: no full-size temporaries on long scans
        mask = slabwise(lambda p, lu: (p >= threshold) & (lu > 0), probability, lung)
    if not mask.any():
        return mask.astype(np.uint8)
    box = bounding_box(mask)  # label only around the lesions: bounded memory on long scans
    sub = mask[box]
    if min_lesion_volume_mm3 > 0 or min_lesion_extent_mm > 0:
        labels, n = label_components(sub, FULL_3D)
        volumes_mm3 = component_sizes(labels, n) * float(np.prod(spacing))
        keep = volumes_mm3 >= min_lesion_volume_mm3
        if min_lesion_extent_mm > 0:
            needed = min(min_lesion_extent_mm, mask.shape[2] * spacing[2])
            extents = np.zeros(keep.shape)
            for i, sl in enumerate(ndi.find_objects(labels), start=1):
                if sl is not None:
                    extents[i] = (sl[2].stop - sl[2].start) * spacing[2]
            keep &= extents >= needed - 1e-6
        keep[0] = False
        sub = keep[labels]
        del labels
    if min_lesion_area_mm2 > 0 and sub.any():
        sub = _drop_small_pieces(np.ascontiguousarray(sub), spacing[0] * spacing[1], min_lesion_area_mm2)
    if np.shares_memory(sub, mask):
        sub = np.array(sub, dtype=bool)  # the kept voxels, no longer a view of ``mask``
    mask[...] = False  # the result takes the mask's memory: no second full-size array on long scans
    mask[box] = sub
    return mask.view(np.uint8)
