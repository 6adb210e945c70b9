#!/usr/bin/env python
"""3D accuracy of ``infnet-covid segment`` on the development data. Prints JSON, then (``--markdown``) a table.

What it measures, each through the real cohort pipeline (:class:`infnet_monai.pipeline.CTSegmenter` on files):

- **rebuilt**: the labeled validation slices (seeded split) rebuilt as CT volumes
  (:func:`infnet_monai.data.rebuild.slice_to_volume`: inverted lung window, 20 px soft-tissue wall, 30 px air,
  3 x 5 mm slices, 0.75 mm pixels). Infection Dice of the 3D mask against the radiologist's mask (mean over slices),
  Dice of the raw probability at 0.5 (before lung restriction), the share of the true infection inside the lung mask
  (mean and worst slice) and the median burden error.
- **P001**: the real COVID-19 CT ``covid_ct_md_P001``: slice-level agreement, sensitivity and specificity against
  the radiologists' slice labels, a slice counting as infected when it holds any infection voxel.
- **normal001** and **lung cancer**: the infection found on scans without COVID-19 (% of lung, mL, lesions).
- **abdomen**: lung Dice of ``abdomen_3mm`` against its reference lung mask.

    python scripts/evaluate_3d.py --markdown
    python scripts/evaluate_3d.py --split all --only rebuilt
    python scripts/evaluate_3d.py --min-lesion-extent-mm 10 --min-lesion-area-mm2 0   # the filters' effect
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("INFNET_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PARTS = ("rebuilt", "p001", "normal", "cancer", "abdomen")


def _dice(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    den = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / den) if den else 1.0


def _load(path: Path):
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def evaluate_rebuilt(seg, data_dir: Path, work: Path, split: str) -> dict:
    """Rebuild the chosen labeled slices as CT, segment them, compare with the radiologists' masks."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    from infnet_monai.data import labeled_splits
    from infnet_monai.data.rebuild import slice_to_volume

    splits = labeled_splits(data_dir)
    items = splits["validation"] if split == "validation" else splits["train"] if split == "train" else splits["train"] + splits["validation"]
    src, out = work / "rebuilt_in", work / "rebuilt_out"
    src.mkdir(parents=True, exist_ok=True)
    truths = {}
    for item in items:
        stem = Path(item["image"]).stem
        grey = np.array(Image.open(item["image"]).convert("L"))
        mask = np.array(Image.open(item["label"]).convert("L")) > 127
        vol = slice_to_volume(grey, mask)
        nib.save(nib.Nifti1Image(vol.volume_hu, vol.affine), str(src / f"slice_{stem}.nii.gz"))
        truths[f"slice_{stem}"] = vol.mask
    t0 = time.perf_counter()
    report = seg.run(src, out)
    seconds = time.perf_counter() - t0
    per = []
    for row in report.rows:
        case = row["case_id"]
        truth = truths[case]
        if row["status"] != "ok":
            per.append({"case": case, "error": row["error"]})
            continue
        inf, _ = _load(out / case / "infection.nii.gz")
        lung, _ = _load(out / case / "lung.nii.gz")
        prob = nib.load(str(out / case / "probability.nii.gz")).get_fdata()
        n_true = int(truth.sum())
        per.append(
            {
                "case": case,
                "dice": _dice(inf, truth),
                "raw_dice": _dice(prob >= 0.5, truth),
                "inside_lung": float((truth & (lung > 0)).sum() / n_true) if n_true else 1.0,
                "burden_error": float((inf > 0).sum() / n_true - 1.0) if n_true else float("nan"),
            }
        )
    ok = [p for p in per if "dice" in p]
    return {
        "split": split,
        "cases": len(per),
        "failed": len(per) - len(ok),
        "dice": float(np.mean([p["dice"] for p in ok])),
        "raw_dice": float(np.mean([p["raw_dice"] for p in ok])),
        "inside_lung_mean": float(np.mean([p["inside_lung"] for p in ok])),
        "inside_lung_min": float(np.min([p["inside_lung"] for p in ok])),
        "burden_error_median": float(np.nanmedian([p["burden_error"] for p in ok])),
        "seconds": round(seconds, 1),
        "per_case": per,
    }


def evaluate_p001(seg, data_dir: Path, work: Path) -> dict:
    """Slice-level agreement with the radiologists' labels of the real COVID-19 CT (any infection voxel = infected)."""
    import numpy as np

    labels_csv = data_dir / "ct" / "covid_ct_md_P001_slice_labels.csv"
    with open(labels_csv, newline="") as f:
        labels = list(csv.DictReader(f))
    t0 = time.perf_counter()
    report = seg.run(data_dir / "ct" / "covid_ct_md_P001", work / "p001_out")
    seconds = time.perf_counter() - t0
    row = report.rows[0]
    if row["status"] != "ok":
        return {"error": row["error"]}
    inf, affine = _load(Path(row["infection_mask_path"]))
    # world z (superior, mm) of every slice index along the array's axial axis
    axial = int(np.argmax(np.abs(affine[2, :3])))
    other = tuple(a for a in range(3) if a != axial)
    per_index = np.asarray(inf).any(axis=other)
    z_of_index = affine[2, 3] + affine[2, axial] * np.arange(inf.shape[axial])
    pred, truth = [], []
    for lab in labels:
        z = float(lab["image_position_z_mm"])
        k = int(np.argmin(np.abs(z_of_index - z)))
        if abs(z_of_index[k] - z) > 0.5 * abs(affine[2, axial]):
            raise RuntimeError(f"{labels_csv}: no slice of the mask at z = {z} mm")
        pred.append(bool(per_index[k]))
        truth.append(lab["infected"] == "1")
    pred_a, truth_a = np.array(pred), np.array(truth)
    tp, tn = int((pred_a & truth_a).sum()), int((~pred_a & ~truth_a).sum())
    return {
        "slices": len(labels),
        "agreement": float((pred_a == truth_a).mean()),
        "sensitivity": tp / max(int(truth_a.sum()), 1),
        "specificity": tn / max(int((~truth_a).sum()), 1),
        "infection_percent": row["infection_percent"],
        "infection_volume_ml": row["infection_volume_ml"],
        "lesion_count": row["lesion_count"],
        "seconds": round(seconds, 1),
    }


def evaluate_no_covid(seg, path: Path, out: Path) -> dict:
    """False infection on a scan without COVID-19."""
    t0 = time.perf_counter()
    row = seg.run(path, out).rows[0]
    if row["status"] != "ok":
        return {"error": row["error"]}
    return {
        "infection_percent": row["infection_percent"],
        "infection_volume_ml": row["infection_volume_ml"],
        "lesion_count": row["lesion_count"],
        "lung_volume_ml": row["lung_volume_ml"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def evaluate_abdomen(seg, data_dir: Path, work: Path) -> dict:
    """Lung Dice against the reference lung mask of ``abdomen_3mm``, plus its false infection."""
    res = evaluate_no_covid(seg, data_dir / "ct" / "abdomen_3mm.nii.gz", work / "abdomen_out")
    if "error" in res:
        return res
    lung, _ = _load(work / "abdomen_out" / "abdomen_3mm" / "lung.nii.gz")
    ref, _ = _load(data_dir / "ct" / "abdomen_3mm_lung.nii.gz")
    res["lung_dice"] = _dice(lung, ref)
    return res


def markdown(result: dict) -> str:
    def f(v, digits=3):
        return "-" if v is None else f"{v:.{digits}f}"

    r, p, n, c, a = (result.get(k, {}) for k in PARTS)
    head = (
        "| rebuilt infection Dice | raw-probability Dice | true infection inside lung (mean / worst) | median burden error "
        "| P001 slice agreement (sens / spec) | normal001 infection % (mL) | lung-cancer infection % (mL) | abdomen lung Dice |"
    )
    sep = "| " + " | ".join(["---"] * 8) + " |"
    cells = [
        f(r.get("dice")),
        f(r.get("raw_dice")),
        f"{f(r.get('inside_lung_mean'))} / {f(r.get('inside_lung_min'))}" if r else "-",
        f"{100 * r['burden_error_median']:+.0f}%" if r else "-",
        f"{f(p.get('agreement'))} ({f(p.get('sensitivity'), 2)} / {f(p.get('specificity'), 2)})" if p else "-",
        f"{f(n.get('infection_percent'), 2)} ({f(n.get('infection_volume_ml'), 1)})" if n else "-",
        f"{f(c.get('infection_percent'), 2)} ({f(c.get('infection_volume_ml'), 1)})" if c else "-",
        f(a.get("lung_dice")),
    ]
    return "\n".join([head, sep, "| " + " | ".join(cells) + " |"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default ../shared/data)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--split", choices=("validation", "train", "all"), default="validation")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--work", type=Path, default=None, help="keep the outputs here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--field-of-view", choices=("lung", "body"), default="lung", help="crop of the slices (see CTSegmenter)")
    ap.add_argument("--min-lesion-extent-mm", type=float, default=None, help="override the segmenter's default")
    ap.add_argument("--min-lesion-area-mm2", type=float, default=None, help="override the segmenter's default")
    ap.add_argument("--extension-threshold", type=float, default=None, help="override the segmenter's default")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--per-case", action="store_true", help="keep the per-slice rows of the rebuilt part")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from infnet_monai.pipeline import CTSegmenter

    overrides = {
        k: v
        for k, v in (
            ("min_lesion_extent_mm", args.min_lesion_extent_mm),
            ("min_lesion_area_mm2", args.min_lesion_area_mm2),
            ("extension_threshold", args.extension_threshold),
        )
        if v is not None
    }
    # probability.nii.gz is written for every case: the raw-probability Dice of the rebuilt volumes reads it
    seg = CTSegmenter(
        args.model, device=args.device, field_of_view=args.field_of_view, save_probability=True, **overrides
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result: dict = {"model": str(seg.model_path), "field_of_view": args.field_of_view, **overrides}
        ct = args.data / "ct"
        if "rebuilt" in args.only:
            result["rebuilt"] = evaluate_rebuilt(seg, args.data, work, args.split)
            if not args.per_case:
                result["rebuilt"].pop("per_case")
        if "p001" in args.only:
            result["p001"] = evaluate_p001(seg, args.data, work)
        if "normal" in args.only:
            result["normal"] = evaluate_no_covid(seg, ct / "covid_ct_md_normal001", work / "normal_out")
        if "cancer" in args.only:
            result["cancer"] = evaluate_no_covid(seg, ct / "lung_pet_ct_dx_A0001_chest_5mm", work / "cancer_out")
        if "abdomen" in args.only:
            result["abdomen"] = evaluate_abdomen(seg, args.data, work)
    print(json.dumps(result, indent=2))
    if args.markdown:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
