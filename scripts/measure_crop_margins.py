#!/usr/bin/env python
"""Margins around the lungs on the labeled training slices, as used by ``LungCropSliceInferer``. Prints JSON.

For each of the 50 labeled COVID-SemiSeg slices: the lungs are the two largest dark components that do not touch
the slice's edge (grey below the value of -320 HU in the calibrated lung window: aerated lung), plus the
radiologists' infection mask, holes filled. The distance from the lungs' bounding box to each edge of the slice is
divided by the box's extent along that axis. The medians are ``infnet_monai.inferers.LUNG_CROP_MARGINS``.

    python scripts/measure_crop_margins.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from infnet_monai.data.paths import shared_data_dir

DEFAULT_DATA = shared_data_dir()


def lung_margins(grey: np.ndarray, mask: np.ndarray, air_grey: float) -> list[float] | None:
    """(top, bottom, left, right) margins of one slice as fractions of the lungs' box; ``None`` without lungs."""
    labels, _ = ndi.label(grey < air_grey)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    counts[edge] = 0
    keep = [i for i in np.argsort(counts)[::-1][:2] if counts[i] > 0.02 * grey.size]
    lungs = ndi.binary_fill_holes(np.isin(labels, keep) | mask)
    if not lungs.any():
        return None
    rows, cols = np.flatnonzero(lungs.any(axis=1)), np.flatnonzero(lungs.any(axis=0))
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    return [rows[0] / h, (grey.shape[0] - 1 - rows[-1]) / h, cols[0] / w, (grey.shape[1] - 1 - cols[-1]) / w]


def main() -> None:
    from infnet_monai.transforms.ct import LUNG_WINDOW_HU

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--air-hu", type=float, default=-320.0, help="aerated lung is below this (HU)")
    args = ap.parse_args()
    lower, upper = LUNG_WINDOW_HU
    air_grey = (args.air_hu - lower) * 255.0 / (upper - lower)
    root = args.data / "covid-semiseg" / "train"
    margins = []
    for image in sorted((root / "images").glob("*.jpg")):
        grey = np.asarray(Image.open(image).convert("L"), dtype=np.float32)
        mask = np.asarray(Image.open(root / "masks" / f"{image.stem}.png").convert("L")) > 127
        m = lung_margins(grey, mask, air_grey)
        if m is not None:
            margins.append(m)
    arr = np.asarray(margins)
    names = ["rows_start", "rows_end", "columns_start", "columns_end"]
    print(
        json.dumps(
            {
                "slices": len(margins),
                "air_grey": round(air_grey, 1),
                "median": dict(zip(names, np.round(np.median(arr, axis=0), 3).tolist())),
                "p10": dict(zip(names, np.round(np.percentile(arr, 10, axis=0), 3).tolist())),
                "p90": dict(zip(names, np.round(np.percentile(arr, 90, axis=0), 3).tolist())),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
