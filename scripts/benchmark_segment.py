#!/usr/bin/env python
"""Seconds per case and peak memory of ``infnet-covid segment`` on the CPU. Prints JSON.

Cases: ``abdomen_3mm.nii.gz`` (122x101x112), the ``abdomen_dicom`` series (512x512x20), the normal chest CT
``covid_ct_md_normal001`` (512x512x154) and 512x512xN volumes resampled (trilinear) from a real scan (``--source``,
default the abdomen scan). Each case runs in a fresh subprocess with default options, so its peak resident memory
(``ru_maxrss``) is its own; the time is the wall time of the whole case (loading, inference, lung mask, writing).

    python scripts/benchmark_segment.py --threads 2
    python scripts/benchmark_segment.py --threads 2 --resampled-only --slices 300 600 1200   # growth with length
    python scripts/benchmark_segment.py --threads 2 --resampled-only --slices 1197 --source ../shared/data/ct/covid_ct_md_P001
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infnet_monai.data.paths import shared_data_dir

DATA = shared_data_dir()


def _one(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from infnet_monai.pipeline import CTSegmenter

    t0 = time.perf_counter()
    seg = CTSegmenter(args.model, device=args.device, batch_slices=args.batch_slices)  # default options
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = seg.run(args.one, args.out)
    seconds = time.perf_counter() - t1
    row = report.rows[0]
    print(
        json.dumps(
            {
                "case": row["case_id"],
                "status": row["status"],
                "error": row.get("error", ""),
                "shape": row.get("shape"),
                "seconds": round(seconds, 2),
                "model_load_seconds": round(load_s, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "lung_volume_ml": row.get("lung_volume_ml"),
                "infection_volume_ml": row.get("infection_volume_ml"),
                "slices_inferred": row.get("slices_inferred"),
            }
        )
    )


def _make_large(path: Path, shape=(512, 512, 300), source: Path | None = None) -> Path:
    """A volume of ``shape`` resampled (trilinear, slab by slab) from a real scan: same field of view, finer slices."""
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F

    from infnet_monai.io import discover_cases, load_ct

    (case,) = discover_cases(source or DATA / "ct" / "abdomen_3mm.nii.gz")
    src = load_ct(case)
    data = src[0].float()
    affine = np.asarray(src.affine, dtype=np.float64)
    zoom = np.array(data.shape, dtype=float) / np.array(shape, dtype=float)
    big = np.empty(shape, dtype=np.int16)
    step = 64
    for z0 in range(0, shape[2], step):  # each output slab from the source slices it needs
        z1 = min(shape[2], z0 + step)
        pos = (np.arange(z0, z1) + 0.5) * zoom[2] - 0.5
        lo, hi = max(int(np.floor(pos.min())) - 1, 0), min(int(np.ceil(pos.max())) + 2, data.shape[2])
        part = data[:, :, lo:hi][None, None]
        inplane = F.interpolate(part, size=(shape[0], shape[1], hi - lo), mode="trilinear", align_corners=False)[0, 0]
        w = torch.from_numpy(np.clip(pos - lo, 0, hi - lo - 1))
        i0 = w.floor().long().clamp(max=hi - lo - 1)
        i1 = (i0 + 1).clamp(max=hi - lo - 1)
        f = (w - i0).float()
        big[:, :, z0:z1] = torch.round(inplane[:, :, i0] * (1 - f) + inplane[:, :, i1] * f).numpy().astype(np.int16)
    out_affine = affine.copy()
    out_affine[:3, :3] = affine[:3, :3] * zoom
    out_affine[:3, 3] = affine[:3, :3] @ (0.5 * zoom - 0.5) + affine[:3, 3]  # voxel centres inside the source's extent
    nib.save(nib.Nifti1Image(big, out_affine), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-slices", type=int, default=16)
    parser.add_argument(
        "--slices", type=int, nargs="+", default=[300],
        help="lengths of the 512 x 512 volumes resampled from the abdomen scan (default: 300); e.g. 300 600 1200 "
        "shows how time and memory grow with the scan's length",
    )
    parser.add_argument("--resampled-only", action="store_true", help="skip the real scans")
    parser.add_argument(
        "--source", default=None,
        help="scan the long volumes are resampled from (default: ../shared/data/ct/abdomen_3mm.nii.gz, whose lungs "
        "fill a sixth of its slices); e.g. ../shared/data/ct/covid_ct_md_P001, a COVID-19 chest CT with lung in "
        "almost every slice",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [] if args.resampled_only else [
            DATA / "ct" / "abdomen_3mm.nii.gz",
            DATA / "ct" / "abdomen_dicom",
            DATA / "ct" / "covid_ct_md_normal001",
        ]
        for i, case in enumerate(cases + [None] * len(args.slices)):
            if case is None:  # generated one at a time: a 1200-slice volume is 0.6 GB on disk
                n = args.slices[i - len(cases)]
                name = Path(args.source).name.split(".")[0] if args.source else "abdomen"
                case = _make_large(Path(tmp) / f"{name}_512x512x{n}.nii.gz", (512, 512, n), args.source)
            cmd = [sys.executable, __file__, "--one", str(case), "--out", str(Path(tmp) / f"out{i}"),
                   "--device", args.device, "--threads", str(args.threads), "--batch-slices", str(args.batch_slices)]
            if args.model:
                cmd += ["--model", args.model]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results.append({"case": str(case), "status": "crashed", "error": proc.stderr[-2000:]})
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if str(case).startswith(tmp):
                Path(case).unlink()
    print(
        json.dumps(
            {
                "device": args.device,
                "threads": args.threads,
                "batch_slices": args.batch_slices,
                "cpu": platform.processor() or platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
