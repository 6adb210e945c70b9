#!/usr/bin/env python
"""How deep the development scans' lesions reach into the lung, and what the band-like rule would take. Prints JSON.

The figures of docs/validation.md (lesion depth), through the real pipeline (:class:`infnet_monai.pipeline.CTSegmenter`,
the network once per scan, the gates of ``scripts/evaluate_3d.py``'s ``_finish``):

- **scans** (``--scans``): every lesion each real scan keeps at the axial extents ``--extents`` (basal-rim share 0.5),
  with its volume, extent, lung and depth: the largest distance (mm) from one of its voxels to the outside of the
  final lung mask, the scan's edge not counted (as :func:`~infnet_monai.postprocessing.infection.lesions_reaching_depth`
  measures it). For P001, the share of its slices that the radiologists label infected in its lung.
- **rebuilt** (``--split``): the labeled slices rebuilt as CT at the shipped gates; per slice the band-like infection
  (:func:`~infnet_monai.stats.anatomy.band_like_infection_ml`), the Dice without and with ``--min-lesion-depth-mm``
  at :data:`~infnet_monai.stats.anatomy.BAND_DEPTH_MM`, and how many of the voxels that gate removes are true
  infection.

    python scripts/lesion_depths.py --scans p001 lidc cancer ricord --split validation
    python scripts/lesion_depths.py --scans --split train
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate_3d  # noqa: E402  (the same gates, P001 labels and data paths)

from infnet_monai.data.paths import DEVELOPMENT_SCANS  # noqa: E402


def _depths_mm(lung: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of each voxel of ``lung > 0`` to the outside of the lung, the scan's edge not counted."""
    from scipy import ndimage as ndi

    reach = 64  # voxels: the lung is taken to go on this far beyond the scan's edge (deeper than any lesion reaches)
    grown = np.pad(np.pad(lung > 0, reach, mode="edge"), 1)
    inner = tuple(slice(reach + 1, -reach - 1) for _ in range(3))
    return ndi.distance_transform_edt(grown, sampling=spacing)[inner]


def scan_lesions(seg, name: str, data_dir: Path, extents: list[float]) -> dict:
    """The lesions of one real scan at each extent, with their depths."""
    from scipy import ndimage as ndi

    from infnet_monai.io.cases import discover_cases

    case = discover_cases(data_dir / "ct" / DEVELOPMENT_SCANS[name])[0]
    data = seg.prepare(case)
    truth = None
    out = {}
    for extent in extents:
        result = evaluate_3d._finish(seg, data, {"basal_rim_max_share": 0.5, "min_lesion_extent_mm": extent}, anatomy=False)
        infection, lung, affine = np.asarray(result.infection) > 0, np.asarray(result.lung), np.asarray(result.affine)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        axial = int(np.argmax(np.abs(affine[2, :3])))
        depth = _depths_mm(lung, spacing)
        if name == "p001" and truth is None:  # the slices labelled infected in each lung
            with open(data_dir / "ct" / "covid_ct_md_P001_slice_labels.csv", newline="") as f:
                labels = list(csv.DictReader(f))
            z_of = affine[2, 3] + affine[2, axial] * np.arange(infection.shape[axial])
            truth = {"R": set(), "L": set()}
            for lab in labels:
                k = int(np.argmin(np.abs(z_of - float(lab["image_position_z_mm"]))))
                for side in truth:
                    if any(lab.get(lobe) == "1" for lobe in evaluate_3d.LOBES if lobe[0] == side):
                        truth[side].add(k)
        components, n = ndi.label(infection, np.ones((3, 3, 3)))
        rows = []
        for i, sl in enumerate(ndi.find_objects(components), start=1):
            lesion = components[sl] == i
            sides = lung[sl][lesion]
            side = "R" if np.count_nonzero(sides == 1) >= np.count_nonzero(sides == 2) else "L"
            zs = np.unique(np.nonzero(lesion)[axial] + sl[axial].start)
            row = {
                "volume_ml": round(float(lesion.sum() * np.prod(spacing) / 1000.0), 2),
                "extent_mm": round(float(len(zs) * spacing[axial]), 1),
                "lung": side,
                "depth_mm": round(float(depth[sl][lesion].max()), 1),
            }
            if truth is not None:
                row["labelled_slice_share"] = round(float(np.mean([z in truth[side] for z in zs])), 2)
            rows.append(row)
        out[f"extent_{extent:g}_mm"] = sorted(rows, key=lambda r: -r["volume_ml"])
    return out


def rebuilt_band_like(seg, data_dir: Path, split: str) -> dict:
    """The rebuilt slices' band-like infection at the shipped gates, and what the depth gate removes of it."""
    import torch
    from monai.data import MetaTensor
    from PIL import Image

    from infnet_monai.data import labeled_splits
    from infnet_monai.data.rebuild import slice_to_volume
    from infnet_monai.metrics.paper import mask_dice
    from infnet_monai.stats.anatomy import BAND_DEPTH_MM, band_like_infection_ml

    splits = labeled_splits(data_dir)
    items = splits["train"] + splits["validation"] if split == "all" else splits[split]
    shipped = {"basal_rim_max_share": seg.config.basal_rim_max_share, "min_lesion_extent_mm": seg.config.min_lesion_extent_mm}
    rows = []
    for item in items:
        grey = np.array(Image.open(item["image"]).convert("L"))
        truth = np.array(Image.open(item["label"]).convert("L")) > 127
        vol = slice_to_volume(grey, truth)
        data = seg.prepare(MetaTensor(torch.from_numpy(vol.volume_hu[None]), affine=torch.as_tensor(vol.affine)))
        plain = evaluate_3d._finish(seg, data, shipped, anatomy=False)
        gated = evaluate_3d._finish(seg, data, {**shipped, "min_lesion_depth_mm": BAND_DEPTH_MM}, anatomy=False)
        removed = (np.asarray(plain.infection) > 0) & ~(np.asarray(gated.infection) > 0)
        spacing = np.sqrt((np.asarray(plain.affine)[:3, :3] ** 2).sum(axis=0))
        rows.append({
            "slice": Path(item["image"]).name,
            "band_like_ml": round(band_like_infection_ml(plain.lung, plain.infection, spacing), 2),
            "dice": round(mask_dice(plain.infection, vol.mask), 4),
            "dice_with_depth_gate": round(mask_dice(gated.infection, vol.mask), 4),
            "removed_voxels": int(removed.sum()),
            "removed_true_voxels": int((removed & (vol.mask > 0)).sum()),
        })
    removed = sum(r["removed_voxels"] for r in rows)
    return {
        "split": split,
        "slices": len(rows),
        "flagged_slices": sum(r["band_like_ml"] > 0 for r in rows),
        "removed_voxels": removed,
        "removed_true_share": round(sum(r["removed_true_voxels"] for r in rows) / removed, 3) if removed else None,
        "mean_dice": round(float(np.mean([r["dice"] for r in rows])), 4),
        "mean_dice_with_depth_gate": round(float(np.mean([r["dice_with_depth_gate"] for r in rows])), 4),
        "per_slice": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=evaluate_3d.DEFAULT_DATA, help="shared data folder")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--scans", nargs="*", choices=sorted(DEVELOPMENT_SCANS), default=None,
                    help="real scans whose lesions to list (no name: all)")
    ap.add_argument("--extents", nargs="+", type=float, default=[10.0, 25.0], help="axial extents (mm) to list them at")
    ap.add_argument("--split", choices=("validation", "train", "all"), default=None,
                    help="also the labeled slices of this split rebuilt as CT")
    args = ap.parse_args(argv)
    from infnet_monai.pipeline import CTSegmenter

    seg = CTSegmenter(args.model, device="cpu", overview=False, dicom_seg=False)
    t0 = time.perf_counter()
    out: dict = {"model": str(seg.model_path)}
    if args.scans is not None:
        out["scans"] = {name: scan_lesions(seg, name, args.data, args.extents) for name in (args.scans or sorted(DEVELOPMENT_SCANS))}
    if args.split:
        out["rebuilt"] = rebuilt_band_like(seg, args.data, args.split)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
