"""Hard negatives: slices of real CT without infection, rendered as the 3D pipeline feeds them to the network.

:func:`infnet_monai.apps.hard_negatives.mine_hard_negatives` writes them as a folder of 8-bit slices with empty
masks and edge maps, laid out like the labeled COVID-SemiSeg slices, and a ``manifest.csv`` with one row per slice::

    <folder>/manifest.csv
    <folder>/<scan>/images/<scan>_z<index>.png   <folder>/<scan>/masks/...png   <folder>/<scan>/edges/...png

This module reads such a folder back as MONAI datalist entries, which the training chain
(:func:`~infnet_monai.transforms.train_slice_transforms`) takes as it takes the labeled slices.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MANIFEST", "MANIFEST_FIELDS", "hard_negative_datalist"]

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = (
    "scan",
    "slice_index",
    "z_mm",
    "image",
    "label",
    "edge",
    "firing_pixels",
    "max_probability",
    "reason",
    "ignore",
)
"""Columns of ``manifest.csv``: the scan's name, the slice's index on the network's slice grid and its world z (mm,
RAS), the three files (relative to the folder), the pixels the mining model called infection (probability >= 0.5) in
or next to the lung and
its largest probability on the slice, why the slice was taken (``firing``, ``random`` or ``positive``), and for a
positive the mask of pixels its loss ignores (empty for negatives; manifests written before 0.18.0 lack the column)."""


def hard_negative_datalist(
    folder: str | os.PathLike, exclude_scans: Iterable[str] = (), scans: Iterable[str] | None = None
) -> list[dict]:
    """The hard negatives of ``folder`` as datalist entries ``{"image", "label", "edge", "classes", "id"}``, the keys
    of :func:`~infnet_monai.data.labeled_datalist`'s entries (``id`` is ``negative/<scan>/<slice index>``, or
    ``positive/...`` for a real-CT positive). A positive with an ignore mask also gets ``"ignore"`` (its path), which
    :func:`~infnet_monai.transforms.train_slice_transforms` with ``loss_mask=True`` turns into the loss mask.

    Args:
        folder: written by :func:`~infnet_monai.apps.hard_negatives.mine_hard_negatives`.
        exclude_scans: scans left out (the held-out scans of a leave-one-scan-out fold).
        scans: only these scans (default all).

    Raises:
        FileNotFoundError: no manifest, or a file it lists is missing (the message names it).
        ValueError: a scan named in ``exclude_scans`` or ``scans`` is not in the manifest (a typo would otherwise
            silently train on the scan it meant to hold out).
    """
    root = Path(folder)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(
            f"no hard negatives in '{root}': '{MANIFEST}' is missing; write them with scripts/mine_hard_negatives.py."
        )
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    known = {r["scan"] for r in rows}
    exclude = {str(s) for s in exclude_scans}
    only = None if scans is None else {str(s) for s in scans}
    unknown = sorted((exclude | (only or set())) - known)
    if unknown:
        raise ValueError(f"{manifest}: no scan(s) {unknown}; it holds {sorted(known)}.")
    items = []
    for r in rows:
        if r["scan"] in exclude or (only is not None and r["scan"] not in only):
            continue
        keys = ("image", "label", "edge", *(("ignore",) if r.get("ignore") else ()))
        item = {key: str(root / r[key]) for key in keys}
        for key in keys:
            if not Path(item[key]).is_file():
                raise FileNotFoundError(f"{manifest}: '{item[key]}' is missing.")
        # the keys of a labeled slice, so that both collate in one batch (the binary training does not read
        # "classes"; for a negative the empty mask is also an all-background class map)
        kind = "positive" if r.get("reason") == "positive" else "negative"
        item.update(classes=item["label"], id=f"{kind}/{r['scan']}/{int(r['slice_index'])}")
        items.append(item)
    return items
