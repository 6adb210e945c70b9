# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""The Inf-Net paper protocol over a folder of prediction PNGs and a folder of ground-truth masks, and its command
line: ``python -m infnet_monai.metrics.folders PRED_DIR GT_DIR`` (also ``python -m infnet_monai.metrics.paper``)
prints the aggregate metrics as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from infnet_monai.metrics.accumulator import PaperMetricAccumulator

__all__ = ["evaluate_folders", "main"]

_GT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_PRED_EXTENSION = ".png"


def _read_gray(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def _image_files(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        if path.stem in files:
            raise ValueError(
                f"two images share the stem {path.stem!r} in {folder}: {files[path.stem].name}, {path.name}."
            )
        files[path.stem] = path
    return files


def evaluate_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> dict[str, float]:
    """
    Evaluate a folder of 8-bit prediction PNGs against a folder of ground-truth masks.

    Every ground-truth image ``<stem>.<ext>`` of ``gt_dir`` (``ext`` in png, jpg, jpeg, bmp, tif, tiff) is paired
    with ``pred_dir/<stem>.png``; other files are ignored, and so are predictions without ground truth. Images
    are read with PIL in mode ``"L"`` and evaluated with :func:`~infnet_monai.metrics.paper.evaluate_image`.

    Args:
        pred_dir: folder of the prediction maps.
        gt_dir: folder of the ground-truth masks.

    Returns:
        the aggregate of :meth:`~infnet_monai.metrics.accumulator.PaperMetricAccumulator.aggregate`.

    Raises:
        NotADirectoryError: when a folder does not exist.
        ValueError: when ``gt_dir`` holds no image or two images share a stem.
        FileNotFoundError: when ground-truth images have no prediction (all missing files are named).
    """
    pred_path, gt_path = Path(pred_dir), Path(gt_dir)
    for folder in (pred_path, gt_path):
        if not folder.is_dir():
            raise NotADirectoryError(f"not a directory: {folder}")
    gt_files = _image_files(gt_path, _GT_EXTENSIONS)
    if not gt_files:
        raise ValueError(f"no ground-truth image ({', '.join(_GT_EXTENSIONS)}) found in {gt_path}.")
    pairs = [(pred_path / f"{stem}{_PRED_EXTENSION}", gt_file) for stem, gt_file in gt_files.items()]
    missing = [str(pred) for pred, _ in pairs if not pred.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(pairs)} ground-truth images have no prediction in {pred_path}: "
            + ", ".join(missing)
        )
    accumulator = PaperMetricAccumulator()
    for pred_file, gt_file in pairs:
        accumulator.update(_read_gray(pred_file), _read_gray(gt_file))
    return accumulator.aggregate()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """
    Command line entry: ``python -m infnet_monai.metrics.paper PRED_DIR GT_DIR`` writes the aggregate as JSON.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        the aggregate metrics that were written.
    """
    parser = argparse.ArgumentParser(
        prog="python -m infnet_monai.metrics.paper",
        description="Evaluate 8-bit prediction PNGs against ground-truth masks with the Inf-Net paper protocol.",
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of prediction maps <stem>.png")
    parser.add_argument("gt_dir", metavar="GT_DIR", help="folder of ground-truth masks <stem>.<ext>")
    parser.add_argument("--indent", type=int, default=2, help="JSON indentation (default: 2)")
    args = parser.parse_args(argv)
    result = evaluate_folders(args.pred_dir, args.gt_dir)
    sys.stdout.write(json.dumps(result, indent=args.indent) + "\n")
    return result


if __name__ == "__main__":
    main()
