"""Score models on the fixed validation split with the paper's protocol, as the held-out set is scored.

Each model predicts the validation slices through ``predict-slices`` (8-bit probability PNGs at the slice's size),
then :func:`infnet_monai.metrics.evaluate_folders` applies the paper's metrics. Prints one JSON object per model and,
with ``--markdown``, a table for the docs.

    python scripts/evaluate_validation.py --model supervised=runs/abl_sup/model.pt --model semi=runs/semi/model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from infnet_monai.apps import predict_slice_folder
from infnet_monai.data import labeled_splits, shared_data_dir
from infnet_monai.metrics import evaluate_folders

COLUMNS = ("dice", "sensitivity", "specificity", "s_measure", "e_measure", "mae", "dice_at_0.5")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=PATH", help="model to score")
    parser.add_argument("--dataset_dir", default=str(shared_data_dir()))
    parser.add_argument("--num_val", type=int, default=10)
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--temperature", type=float, default=None, help="logit temperature (default: each model's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, gts = tmp / "images", tmp / "gt"
        images.mkdir()
        gts.mkdir()
        for d in labeled_splits(args.dataset_dir, num_val=args.num_val, seed=args.split_seed)["validation"]:
            os.symlink(os.path.abspath(d["image"]), images / f"{d['id']}{Path(d['image']).suffix}")
            os.symlink(os.path.abspath(d["label"]), gts / f"{d['id']}{Path(d['label']).suffix}")
        for spec in args.model:
            label, _, path = spec.partition("=")
            if not path:
                parser.error(f"--model needs LABEL=PATH, got '{spec}'.")
            start = time.time()
            pred = tmp / f"pred_{len(results)}"
            report = predict_slice_folder(images, pred, model_path=path, device="cpu", flip_tta=args.tta, temperature=args.temperature)
            if report.failed:
                raise RuntimeError(f"{label}: {report.failed}")
            metrics = evaluate_folders(pred, gts)
            row = {"label": label, "model": path, "seconds": round(time.time() - start, 1)}
            row.update({k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float))})
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.markdown:
        print("| model | " + " | ".join(COLUMNS) + " |")
        print("| --- " * (len(COLUMNS) + 1) + "|")
        for r in results:
            print(f"| {r['label']} | " + " | ".join(f"{r.get(c, float('nan')):.3f}" for c in COLUMNS) + " |")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
