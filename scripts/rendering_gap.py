#!/usr/bin/env python
"""The rendering gap: grey-value and texture statistics of the labeled training slices against the slices of real CT
as ``infnet-covid segment`` renders them for the network.

For every labeled COVID-SemiSeg slice (8-bit JPEG) and every slice with lung of the real scans in ``../shared/data/ct``
rendered by :func:`infnet_monai.apps.hard_negatives.render_lung_slices` (the pipeline's Hounsfield window, lung crop
and resize, before the standardisation), on the network's 0-255 scale at its input size:

- ``percentiles``: the 5/25/50/75/95th grey percentiles of the slice;
- ``air_grey`` / ``tissue_grey``: the median grey below and above the slice's Otsu threshold (aerated lung, soft
  tissue);
- ``lung_share``: the share of the slice below Otsu's threshold;
- ``noise``: the median absolute Laplacian in the aerated part (the fine texture: CT noise and small vessels;
  JPEG compression and the dataset's own resampling smooth it);

the median over slices is printed as one JSON object per source; ``--mid-lung`` keeps only the slices whose aerated
share is at least 0.3 (the slices the labeled set is made of, not the apices and bases).

    python scripts/rendering_gap.py --mid-lung
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from infnet_monai.data import labeled_datalist, shared_data_dir
from infnet_monai.data.paths import DEVELOPMENT_SCANS
from infnet_monai.defaults import DEFAULT_SPATIAL_SIZE

SCANS = {name: DEVELOPMENT_SCANS[name] for name in ("p001", "ricord", "normal", "lidc", "cancer")}


def slice_figures(grey: np.ndarray) -> dict:
    """The statistics of one slice (0-255 floats)."""
    t = threshold_otsu(grey)
    air = grey < t
    lap = np.abs(ndi.laplace(grey))
    return {
        "percentiles": np.percentile(grey, [5, 25, 50, 75, 95]),
        "air_grey": float(np.median(grey[air])) if air.any() else np.nan,
        "tissue_grey": float(np.median(grey[~air])) if (~air).any() else np.nan,
        "lung_share": float(air.mean()),
        "noise": float(np.median(lap[ndi.binary_erosion(air, iterations=3)])) if air.sum() > 100 else np.nan,
    }


def summary(figures: list[dict], mid_lung: bool) -> dict:
    if mid_lung:
        figures = [f for f in figures if f["lung_share"] >= 0.3]
    out = {"slices": len(figures)}
    if figures:
        out["percentiles"] = [round(float(v), 1) for v in np.median([f["percentiles"] for f in figures], axis=0)]
        for key in ("air_grey", "tissue_grey", "lung_share", "noise"):
            out[key] = round(float(np.nanmedian([f[key] for f in figures])), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir())
    ap.add_argument("--scans", nargs="+", choices=sorted(SCANS), default=list(SCANS))
    ap.add_argument("--mid-lung", action="store_true")
    args = ap.parse_args(argv)

    size = (DEFAULT_SPATIAL_SIZE, DEFAULT_SPATIAL_SIZE)
    labeled = []
    for item in labeled_datalist(args.data):
        grey = np.asarray(Image.open(item["image"]).convert("L").resize(size, Image.BILINEAR), dtype=np.float32)
        labeled.append(slice_figures(grey))
    print(json.dumps({"source": "labeled COVID-SemiSeg slices", **summary(labeled, args.mid_lung)}))

    from infnet_monai.apps.hard_negatives import render_lung_slices
    from infnet_monai.io.cases import discover_cases
    from infnet_monai.pipeline import CTSegmenter

    seg = CTSegmenter(device="cpu", classes=False, overview=False, dicom_seg=False, dicom_sr=False, backend="torch")
    for name in args.scans:
        rendered = render_lung_slices(seg, discover_cases(args.data / "ct" / SCANS[name])[0], run_network=False)
        figures = [slice_figures(image * 255.0) for image in rendered.images]
        print(json.dumps({"source": f"{name} rendered by segment", **summary(figures, args.mid_lung)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
