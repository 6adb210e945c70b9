#!/usr/bin/env python
"""Calibrate the Hounsfield window that maps CT volumes into the training slices' intensity distribution.

Method: on each image, Otsu's threshold (inside the body) separates the dark class (aerated lung) from the bright
class (soft tissue, vessels, bone); the medians of the two classes are the "lung parenchyma" and "soft tissue"
intensities. On the labeled training slices they are measured in 8-bit grey values; on real CT chest slices in
Hounsfield units. A linear window ``grey = 255 * (HU - lower) / (upper - lower)`` maps one onto the other, giving
two equations for (lower, upper). The script also prints the 5/25/50/75/95th percentiles of the windowed CT next to
the training slices' for a check. Prints JSON.

    python scripts/calibrate_window.py
"""

from __future__ import annotations

import json

import numpy as np
import pydicom
from PIL import Image
from skimage.filters import threshold_otsu

from infnet_monai.data import shared_data_dir

DATA = shared_data_dir()
PERCENTILES = (5, 25, 50, 75, 95)
BODY_HU = -500.0


def class_medians(values: np.ndarray) -> tuple[float, float]:
    t = threshold_otsu(values)
    return float(np.median(values[values < t])), float(np.median(values[values >= t]))


def body_crop(hu: np.ndarray) -> np.ndarray:
    """In-plane bounding box of the body (> -500 HU), as the training slices are cropped to the body."""
    rows, cols = np.where(hu > BODY_HU)
    return hu[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def main() -> None:
    train = sorted((DATA / "covid-semiseg" / "train" / "images").glob("*.jpg"))
    grey_lung, grey_tissue, grey_pct = [], [], []
    for p in train:
        g = np.asarray(Image.open(p).convert("L"), dtype=np.float32)
        lung, tissue = class_medians(g.ravel())
        grey_lung.append(lung)
        grey_tissue.append(tissue)
        grey_pct.append(np.percentile(g, PERCENTILES))
    hu_slices = []
    for f in sorted((DATA / "ct" / "chest_2slice_dicom").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0
        )
        hu = np.maximum(hu, -1024.0)  # scanner padding outside the field of view is air
        hu_slices.append(body_crop(hu))
    hu_lung, hu_tissue = zip(*(class_medians(np.clip(h, -1024, 400).ravel()) for h in hu_slices))
    g_l, g_t = float(np.median(grey_lung)), float(np.median(grey_tissue))
    h_l, h_t = float(np.median(hu_lung)), float(np.median(hu_tissue))
    # grey = 255 (HU - lower) / (upper - lower)  for both classes
    width = 255.0 * (h_t - h_l) / (g_t - g_l)
    lower = h_l - g_l * width / 255.0
    upper = lower + width
    windowed_pct = [
        np.percentile(np.clip((h - lower) / (upper - lower), 0, 1) * 255.0, PERCENTILES) for h in hu_slices
    ]
    print(
        json.dumps(
            {
                "training_slices": len(train),
                "training_lung_grey_median": round(g_l, 1),
                "training_tissue_grey_median": round(g_t, 1),
                "ct_slices": len(hu_slices),
                "ct_lung_hu_median": round(h_l, 1),
                "ct_tissue_hu_median": round(h_t, 1),
                "window_hu": [round(lower), round(upper)],
                "training_percentiles_grey": np.round(np.median(grey_pct, axis=0), 1).tolist(),
                "windowed_ct_percentiles_grey": np.round(np.median(windowed_pct, axis=0), 1).tolist(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
