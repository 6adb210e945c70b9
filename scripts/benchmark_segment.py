#!/usr/bin/env python
"""Seconds per case and peak memory of ``infnet-covid segment`` on the CPU. Prints JSON.

Cases: ``abdomen_3mm.nii.gz`` (122x101x112), the ``abdomen_dicom`` series (512x512x20), the normal chest CT
``covid_ct_md_normal001`` (512x512x154) and 512x512xN volumes resampled (trilinear) from a real scan (``--source``,
default the abdomen scan). Each case runs in a fresh subprocess with default options, so its peak resident memory
(``ru_maxrss``) is its own; the time is the wall time of the whole case (loading, inference, lung mask, writing).

    python scripts/benchmark_segment.py --threads 2
    python scripts/benchmark_segment.py --threads 2 --resampled-only --slices 300 600 1200   # growth with length
    python scripts/benchmark_segment.py --threads 2 --resampled-only --slices 1197 --source ../shared/data/ct/covid_ct_md_P001

Side by side (``--compare``): the whole ``infnet-covid segment`` command of several source trees or backends on the
same cases, run alternately (A, B, A, B, ...) in one sitting, each in a fresh process; per run the wall time and
peak memory, per variant the median, the speed-up against the first variant, the agreement of its masks with the
first variant's (Dice of the infection, each lung and each class; infection mL; lesion count) and the stage table
of its last run (``stage_seconds`` of ``stats.json``, where the version writes one). A variant is
``NAME=TREE[,ARG...]``: ``TREE`` is put first on ``PYTHONPATH`` (a checkout of another version), the ``ARG`` are
added to the command:

    python scripts/benchmark_segment.py --threads 2 --repeats 2 --compare 0.9.0=/tmp/v090 head=. \
        --cases ../shared/data/ct/ricord_1a_001012
    python scripts/benchmark_segment.py --threads 2 --compare 0.9.0=/tmp/v090 head=. torch=.,--backend,torch \
        --slices 300 --source ../shared/data/ct/covid_ct_md_P001

With ``--fresh-cache`` every run gets an empty cache of converted networks (``INFNET_CACHE_DIR``): the first run on a
new machine, the OpenVINO conversion included.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _variant(spec: str) -> tuple[str, Path, list[str]]:
    name, _, rest = spec.partition("=")
    if not name or not rest:
        raise SystemExit(f"--compare takes NAME=TREE[,ARG...], got {spec!r}")
    tree, *args = rest.split(",")
    return name, Path(tree).resolve(), args


def _timed_command(cmd: list[str], env: dict, cwd: str) -> tuple[float, float, int, str]:
    """``(wall seconds, peak resident MB, exit code, stderr tail)`` of one command in a fresh process."""
    import os

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode, err[-2000:]


def _dice(a, b) -> float:
    import numpy as np

    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else round(2.0 * int(np.count_nonzero(a & b)) / total, 6)


def _agreement(ref_dir: Path, dir_: Path) -> dict:
    """Dice of each mask label and the burden figures of a case's outputs against the reference variant's."""
    import nibabel as nib
    import numpy as np

    out: dict = {}
    for name, labels in (("infection", (1,)), ("lung", (1, 2)), ("infection_classes", (1, 2))):
        a_path, b_path = ref_dir / f"{name}.nii.gz", dir_ / f"{name}.nii.gz"
        if not (a_path.is_file() and b_path.is_file()):
            continue
        a, b = np.asarray(nib.load(str(a_path)).dataobj), np.asarray(nib.load(str(b_path)).dataobj)
        for label in labels:
            out[f"{name}_{label}_dice"] = _dice(a == label, b == label)
        out[f"{name}_voxels_differing"] = int(np.count_nonzero(a != b))
    ref, row = json.loads((ref_dir / "stats.json").read_text()), json.loads((dir_ / "stats.json").read_text())
    for key in ("infection_volume_ml", "lung_volume_ml", "lesion_count"):
        out[key] = [ref.get(key), row.get(key)]
    return out


def compare(args: argparse.Namespace, cases: list[Path], tmp: str) -> dict:
    """Alternating runs of every variant on every case (see the module docstring)."""
    import os
    import statistics

    variants = [_variant(v) for v in args.compare]
    report = []
    for case in cases:
        runs, dirs = [], {}
        for repeat in range(args.repeats):
            for name, tree, extra in variants:
                out = Path(tmp) / f"{name}_{repeat}"
                cmd = [sys.executable, "-m", "infnet_monai.cli", "segment", str(case), "-o", str(out), "-q",
                       "--device", args.device, *extra]
                env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
                if args.fresh_cache:
                    env["INFNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="cache-", dir=tmp)
                seconds, peak, code, err = _timed_command(cmd, env, tmp)
                runs.append({"variant": name, "repeat": repeat, "seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1), "exit_code": code})
                if code != 0:
                    runs[-1]["stderr"] = err
                dirs[name] = next((p.parent for p in out.glob("*/stats.json")), None)
        medians = {n: statistics.median(r["seconds"] for r in runs if r["variant"] == n) for n, _, _ in variants}
        first = variants[0][0]
        entry = {
            "case": str(case),
            "runs": runs,
            "median_seconds": medians,
            "speedup_vs_" + first: {n: round(medians[first] / m, 2) for n, m in medians.items()},
            "peak_rss_mb": {n: max(r["peak_rss_mb"] for r in runs if r["variant"] == n) for n, _, _ in variants},
            "agreement_with_" + first: {},
            "stage_seconds": {},
        }
        for name, _, _ in variants:
            if dirs.get(name) is None:
                continue
            stats = json.loads((dirs[name] / "stats.json").read_text())
            entry["stage_seconds"][name] = stats.get("stage_seconds")
            if name != first and dirs.get(first) is not None:
                entry["agreement_with_" + first][name] = _agreement(dirs[first], dirs[name])
        report.append(entry)
        for name, _, _ in variants:  # the next case starts on an empty disk
            for repeat in range(args.repeats):
                shutil.rmtree(Path(tmp) / f"{name}_{repeat}", ignore_errors=True)
    return {"threads": args.threads, "cpu": _cpu_name(), "variants": args.compare, "cases": report}


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
    parser.add_argument(
        "--compare", nargs="+", metavar="NAME=TREE[,ARG...]",
        help="side by side: run these variants alternately on the cases (see the module docstring)",
    )
    parser.add_argument("--cases", nargs="*", default=[], help="with --compare: the cases (files or folders)")
    parser.add_argument("--repeats", type=int, default=2, help="with --compare: runs of each variant per case")
    parser.add_argument(
        "--fresh-cache", action="store_true", help="with --compare: an empty cache of converted networks for every run"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args)
        return
    results = []
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            cases = [Path(c).resolve() for c in args.cases]
            for n in args.slices if args.source else []:
                name = Path(args.source).name.split(".")[0]
                cases.append(_make_large(Path(tmp) / f"{name}_512x512x{n}.nii.gz", (512, 512, n), Path(args.source)))
            print(json.dumps(compare(args, cases, tmp), indent=2))
        return
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
                "cpu": _cpu_name(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
