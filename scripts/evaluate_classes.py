"""Score GGO / consolidation heads on the labeled slices with the paper's multi-class protocol.

Each head predicts the slices through ``predict-slices --classes`` (the interface the held-out set is scored
through), then each class is scored as a binary map with :func:`infnet_monai.metrics.evaluate_folders`: the GGO map
against class 1, the consolidation map against class 2 (a slice without that class scores 0, as in the protocol).
``--references`` adds two rows that bracket what a head contributes (a constant consolidation share and the
true one, on the same infection map). Also prints a pixel confusion table of the classes (a pixel is infection where its infection map is >= 128 of 255,
then GGO or consolidation by the larger class map). JSON per head; ``--markdown`` adds the tables for the docs.

    python scripts/evaluate_classes.py --class-model shipped=bundles/infnet_covid/models/classes.pt --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from infnet_monai.apps import predict_slice_folder
from infnet_monai.data import labeled_splits, shared_data_dir
from infnet_monai.metrics import evaluate_folders

COLUMNS = ("dice", "sensitivity", "specificity", "s_measure", "e_measure", "mae", "dice_at_0.5")
CLASSES = ((1, "ggo"), (2, "consolidation"))


def confusion(pred_dir: Path, class_files: dict[str, str]) -> np.ndarray:
    """3 x 3 pixel counts, rows the true class (background, GGO, consolidation), columns the predicted one."""
    table = np.zeros((3, 3), dtype=np.int64)
    for stem, path in class_files.items():
        truth = np.asarray(Image.open(path))
        infection = np.asarray(Image.open(pred_dir / f"{stem}.png")).astype(int)
        ggo = np.asarray(Image.open(pred_dir / "ggo" / f"{stem}.png")).astype(int)
        consolidation = np.asarray(Image.open(pred_dir / "consolidation" / f"{stem}.png")).astype(int)
        pred = np.where(infection >= 128, np.where(consolidation > ggo, 2, 1), 0)
        table += np.bincount(3 * truth.astype(int).ravel() + pred.ravel(), minlength=9).reshape(3, 3)
    return table


def _setup(tmp: Path, entries: list[dict]) -> tuple[Path, dict[str, str]]:
    images = tmp / "images"
    images.mkdir()
    for _, name in CLASSES:
        (tmp / "gt" / name).mkdir(parents=True)
    class_files = {}
    for d in entries:
        os.symlink(os.path.abspath(d["image"]), images / f"{d['id']}{Path(d['image']).suffix}")
        truth = np.asarray(Image.open(d["classes"]))
        for value, name in CLASSES:
            Image.fromarray(np.where(truth == value, 255, 0).astype(np.uint8)).save(tmp / "gt" / name / f"{d['id']}.png")
        class_files[d["id"]] = d["classes"]
    return images, class_files


def evaluate(args, label: str, class_model: str, images: Path, class_files: dict, tmp: Path) -> dict:
    start = time.time()
    pred = tmp / f"pred_{label}"
    report = predict_slice_folder(
        images, pred, model_path=args.model, device="cpu", flip_tta=args.tta, classes=True, class_model_path=class_model
    )
    if report.failed:
        raise RuntimeError(f"{label}: {report.failed}")
    seconds = round(time.time() - start, 1)
    return {**_score(label, pred, class_files, tmp), "class_model": class_model, "seconds": seconds}


def _score(label: str, pred: Path, class_files: dict, tmp: Path) -> dict:
    row: dict = {"label": label}
    for _, name in CLASSES:
        metrics = evaluate_folders(pred / name, tmp / "gt" / name)
        row[name] = {k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float))}
    row["confusion"] = confusion(pred, class_files).tolist()
    return row


def reference_rows(pred: Path, class_files: dict[str, str], tmp: Path) -> list[dict]:
    """What a head adds, bracketed: the same infection map ``p`` split by a constant share ``q = 0.5`` (no class
    knowledge; both class maps are ``p / 2``), and by the true share (``q`` = 1 on true consolidation, 0 on true GGO,
    0.5 elsewhere: the best any head on this infection map can do)."""
    rows = []
    for label, truth_share in (("constant share 0.5", None), ("true share (ceiling)", True)):
        out = tmp / f"ref_{len(rows)}"
        for _, name in CLASSES:
            (out / name).mkdir(parents=True)
        for stem, path in class_files.items():
            infection = np.asarray(Image.open(pred / f"{stem}.png")).astype(np.float64)
            truth = np.asarray(Image.open(path))
            q = np.full(infection.shape, 0.5)
            if truth_share:
                q[truth == 1], q[truth == 2] = 0.0, 1.0
            Image.fromarray(infection.astype(np.uint8)).save(out / f"{stem}.png")
            for share, (_, name) in zip((1.0 - q, q), CLASSES):
                Image.fromarray(np.round(infection * share).astype(np.uint8)).save(out / name / f"{stem}.png")
        rows.append(_score(label, out, class_files, tmp))
    return rows


def markdown(results: list[dict]) -> str:
    lines = ["| head | class | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 2) + "|"]
    for r in results:
        for _, name in CLASSES:
            lines.append(f"| {r['label']} | {name} | " + " | ".join(f"{r[name].get(c, float('nan')):.3f}" for c in COLUMNS) + " |")
    for r in results:
        lines += ["", f"Pixel confusion, {r['label']} (rows: truth, columns: prediction):", ""]
        lines += ["| | background | GGO | consolidation |", "| --- | --- | --- | --- |"]
        for name, counts in zip(("background", "GGO", "consolidation"), r["confusion"]):
            lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class-model", action="append", required=True, metavar="LABEL=PATH", help="head to score")
    parser.add_argument("--model", default=None, help="binary model (default: the shipped one)")
    parser.add_argument("--dataset_dir", default=str(shared_data_dir()))
    parser.add_argument("--split", choices=("validation", "train", "all"), default="validation")
    parser.add_argument("--num_val", type=int, default=10)
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--references", action="store_true", help="add the constant-share and true-share rows on the first head's map"
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = labeled_splits(args.dataset_dir, num_val=args.num_val, seed=args.split_seed)
    entries = splits["train"] + splits["validation"] if args.split == "all" else splits[args.split]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, class_files = _setup(tmp, entries)
        for spec in args.class_model:
            label, _, path = spec.partition("=")
            if not path:
                parser.error(f"--class-model needs LABEL=PATH, got '{spec}'.")
            results.append(evaluate(args, label, path, images, class_files, tmp))
            print(json.dumps(results[-1]), flush=True)
        if args.references:
            first = tmp / f"pred_{results[0]['label']}"
            for row in reference_rows(first, class_files, tmp):
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.markdown:
        print(markdown(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
