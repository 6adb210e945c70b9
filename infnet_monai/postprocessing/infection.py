"""Infection masks: GGO / consolidation labelling of a binary infection mask."""

from __future__ import annotations

import numpy as np

__all__ = ["GGO_LABEL", "CONSOLIDATION_LABEL", "CONSOLIDATION_SHARE_THRESHOLD", "infection_classes"]

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
        consolidation_share: ``q``, the share of the infection that is consolidation, same shape.
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
    out = (infection > 0).astype(np.uint8)
    out[(out > 0) & (consolidation_share >= threshold)] = CONSOLIDATION_LABEL
    return out
