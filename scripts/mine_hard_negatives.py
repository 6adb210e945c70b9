#!/usr/bin/env python
"""Write the real-CT hard negatives that ``configs/train_negatives.json`` trains with.

The slices without infection of the development scans in ``../shared/data/ct``, rendered exactly as
``infnet-covid segment`` feeds them to the network (:func:`infnet_monai.apps.hard_negatives.render_lung_slices`):
every slice of the scans without COVID-19 (the normal chest CT, the LIDC-IDRI nodule scan, the lung-cancer scan, the
abdomen scan's lung bases) and the slices of the COVID-19 scan P001 that the radiologists labelled negative, with
both labelled neighbours negative too (a slice at the edge of the disease may hold some). Per scan, the slices where
the mining model calls infection, the most pixels first (``--max-firing``), and ``--random`` others are kept.

Prints one JSON line per scan and writes ``<out>/manifest.csv`` (see :mod:`infnet_monai.data.hard_negatives`).
The scan names are those of ``scripts/evaluate_3d.py``, so a leave-one-scan-out fold excludes a scan by name
(``--negatives_exclude "['p001','lidc']"`` in the bundle).

    python scripts/mine_hard_negatives.py --out runs/hard_negatives

``--positives-out`` also writes real-CT positives of the COVID-19 CT without labels (``ricord``): its slices with
the pipeline's final infection as the pseudo-label and, since 0.18.0, a mask of what the loss ignores around it
(:func:`infnet_monai.apps.hard_negatives.mine_real_positives`), which ``configs/train_negatives.json`` mixes in with
``--positives_dir``:

    python scripts/mine_hard_negatives.py --out runs/hard_negatives --positives-out runs/real_positives --max-positives 40
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from infnet_monai.data.paths import DEVELOPMENT_SCANS, shared_data_dir

SCANS = {name: DEVELOPMENT_SCANS[name] for name in ("p001", "normal", "lidc", "cancer", "abdomen")}
"""The scans mined: every development scan but the thin-slice COVID-19 CT, which has no labels."""
POSITIVE_SCANS = {"ricord": DEVELOPMENT_SCANS["ricord"]}
"""The COVID-19 CT without labels, whose final infection is the pseudo-label of the real-CT positives: it is scored by
no figure of ``scripts/evaluate_3d.py``, so training on it holds no evaluated scan in."""
P001_LABELS = "covid_ct_md_P001_slice_labels.csv"


def labelled_negatives(labels_csv: Path):
    """A function of the rendered slices: True where the nearest labelled slice (within half a slice) and both its
    labelled neighbours are negative."""
    with open(labels_csv, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["image_position_z_mm"]))
    z = np.array([float(r["image_position_z_mm"]) for r in rows])
    infected = np.array([r["infected"] == "1" for r in rows])
    clear = ~infected & ~np.r_[False, infected[:-1]] & ~np.r_[infected[1:], False]
    gap = float(np.median(np.diff(z))) if len(z) > 1 else 1.0

    def negative(rendered) -> np.ndarray:
        k = np.abs(rendered.z_mm[:, None] - z[None]).argmin(axis=1)
        return clear[k] & (np.abs(z[k] - rendered.z_mm) <= 0.5 * gap)

    return negative


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir(), help="shared data folder (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=Path("runs/hard_negatives"))
    ap.add_argument("--model", default=None, help="mining model (default: the shipped one)")
    ap.add_argument("--scans", nargs="+", choices=sorted(SCANS), default=list(SCANS))
    ap.add_argument("--max-firing", type=int, default=30)
    ap.add_argument("--random", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--min-lung-share", type=float, default=0.0,
        help="only slices whose lung covers this share of the crop (0.2 leaves out the basal and apical crescents)",
    )
    ap.add_argument("--positives-out", type=Path, default=None, help="also write the real-CT positives here")
    ap.add_argument("--positive-scans", nargs="+", choices=sorted(POSITIVE_SCANS), default=list(POSITIVE_SCANS))
    ap.add_argument("--max-positives", type=int, default=30, help="positive slices per scan, evenly spaced")
    args = ap.parse_args(argv)

    from infnet_monai.apps.hard_negatives import mine_hard_negatives, mine_real_positives
    from infnet_monai.io.cases import discover_cases
    from infnet_monai.pipeline import CTSegmenter

    seg = CTSegmenter(args.model, device="cpu", classes=False, overview=False, dicom_seg=False, dicom_sr=False)
    scans = []
    for name in args.scans:
        negative = labelled_negatives(args.data / "ct" / P001_LABELS) if name == "p001" else None
        scans.append((name, discover_cases(args.data / "ct" / SCANS[name])[0], negative))
    t0 = time.perf_counter()
    rows = mine_hard_negatives(
        seg, scans, args.out, max_firing=args.max_firing, num_random=args.random, seed=args.seed,
        min_lung_share=args.min_lung_share,
        log=lambda line: print(line, file=sys.stderr),
    )
    for name in args.scans:
        mine = [r for r in rows if r["scan"] == name]
        print(json.dumps({
            "scan": name,
            "slices": len(mine),
            "firing": sum(r["reason"] == "firing" for r in mine),
            "firing_pixels_total": sum(r["firing_pixels"] for r in mine),
        }))
    print(json.dumps({"out": str(args.out), "slices": len(rows), "seconds": round(time.perf_counter() - t0, 1)}))
    if args.positives_out is not None:
        t0 = time.perf_counter()
        positives = [(name, discover_cases(args.data / "ct" / POSITIVE_SCANS[name])[0]) for name in args.positive_scans]
        rows = mine_real_positives(
            seg, positives, args.positives_out, max_slices=args.max_positives,
            log=lambda line: print(line, file=sys.stderr),
        )
        print(json.dumps({"out": str(args.positives_out), "slices": len(rows), "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
