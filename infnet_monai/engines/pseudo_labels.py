"""Pseudo-labels of the Semi-Inf-Net propagation on disk: the soft label and its edge map as 8-bit PNGs, and how
decisive each label is.

Every pseudo-label is written (atomically) as ``<stem>.png`` with its edge map ``<stem>_edge.png`` in the run's
``propagation/pseudo_labels`` folder, where the training pools read them back like the labeled slices' masks and
edges; a run interrupted at any moment finds the labels of the groups it finished there.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from infnet_monai.io.slices import write_png_atomic

__all__ = ["pseudo_label_confidence", "pseudo_label_files", "soft_edge_map", "write_pseudo_label"]

# the 4-connected cross: the structuring element of COVID-SemiSeg's labeled edge maps
_EDGE_CROSS = ndimage.generate_binary_structure(2, 1)


def soft_edge_map(prob: torch.Tensor | np.ndarray, width: int = 1) -> np.ndarray:
    """Edge map of a soft segmentation: grey dilation minus grey erosion (a morphological gradient).

    The structuring element is the 4-connected cross, applied ``width`` times (a diamond of radius ``width``). On a
    binary mask this reproduces the labeled edge maps of COVID-SemiSeg (the dilated minus the eroded mask, a 2-pixel
    band on the boundary, which scipy's default cross matches to within 0.5% of pixels); on a soft map it is a soft
    band of the same width. Outside the image counts as 0 (the border of ``binary_dilation`` / ``binary_erosion``),
    so a lesion touching the image border has an edge along it; scipy's default ``mode="reflect"`` would not.

    Args:
        prob: ``(..., H, W)`` probabilities in [0, 1]; leading axes are independent maps.
        width: number of dilations and erosions (>= 1).

    Returns:
        ``(..., H, W)`` float32 edge strength in [0, 1].
    """
    if int(width) != width or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}.")
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim < 2:
        raise ValueError(f"prob must have at least 2 dimensions (..., H, W), got shape {p.shape}.")
    footprint = ndimage.iterate_structure(_EDGE_CROSS, int(width))
    footprint = footprint.reshape((1,) * (p.ndim - 2) + footprint.shape)
    edge = ndimage.morphological_gradient(p, footprint=footprint, mode="constant", cval=0.0)
    return np.clip(edge, 0.0, 1.0).astype(np.float32, copy=False)


def pseudo_label_confidence(prob: torch.Tensor | np.ndarray) -> float:
    """How decisive a soft pseudo-label is: the mean of ``|2p - 1|`` over the slice (0 all unsure, 1 all certain)."""
    p = np.asarray(prob, dtype=np.float64)
    return float(np.abs(2.0 * p - 1.0).mean()) if p.size else 0.0


def pseudo_label_files(folder: Path, item_id: str) -> tuple[Path, Path]:
    """The label and edge PNGs of the slice ``item_id`` in ``folder``: ``(<stem>.png, <stem>_edge.png)``, the stem
    being the id with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_`` (``"slice"`` when
    nothing is left)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(item_id)).strip("._") or "slice"
    return folder / f"{stem}.png", folder / f"{stem}_edge.png"


def write_pseudo_label(prob: np.ndarray, label_path: Path, edge_path: Path) -> float:
    """Write a soft pseudo-label ``prob`` (``(H, W)`` in [0, 1]) and its :func:`soft_edge_map` as 8-bit PNGs.

    Returns:
        the label's :func:`pseudo_label_confidence`.
    """
    write_png_atomic(np.round(prob * 255).astype(np.uint8), label_path)
    write_png_atomic(np.round(soft_edge_map(prob) * 255).astype(np.uint8), edge_path)
    return pseudo_label_confidence(prob)
