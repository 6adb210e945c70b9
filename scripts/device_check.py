#!/usr/bin/env python
"""GPU check: throughput, peak memory and agreement with the CPU, in one run that prints JSON.

- ``predict-slices`` on the 50 labeled COVID-SemiSeg slices: slices/s with AMP on the device, and the Dice of the
  device's masks (probability >= 0.5) against the CPU's;
- ``segment`` on the real chest CTs in ``shared/data/ct`` (the COVID-19 CT P001 and the normal chest CT): seconds and
  inferred slices/s on the device with AMP, peak GPU memory, and the Dice of the device's infection and lung masks
  against the CPU's (the gate is >= 0.99);
- 20 training iterations (batch 8 at 352 x 352, forward, deep-supervision loss, backward, AdamW step, AMP) of the
  light and of the paper configuration: images/s and peak GPU memory.

    bash scripts/device_check.sh            # on a GPU machine; about 3 minutes on an H100
    python scripts/device_check.py --device cpu --quick   # the same code path on a CPU (for testing the script)
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
import torch.nn.functional as F

from infnet_monai.apps import predict_slice_folder
from infnet_monai.data import shared_data_dir
from infnet_monai.io import discover_cases, load_ct
from infnet_monai.metrics.paper import mask_dice
from infnet_monai.networks import INFNET_LIGHT, InfNet
from infnet_monai.pipeline import CTSegmenter
from infnet_monai.utils.device import autocast_context

CT_CASES = ("covid_ct_md_P001", "covid_ct_md_normal001")


def _peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def check_slices(device: torch.device, data: Path, limit: int | None) -> dict:
    images = sorted((data / "covid-semiseg" / "train" / "images").iterdir())[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for p in images:
            os.symlink(p.resolve(), src / p.name)
        out = {}
        for name, dev in (("device", str(device)), ("cpu", "cpu")):
            predict_slice_folder(src, Path(tmp) / f"warm_{name}", device=dev, batch_size=8) if name == "device" else None
            _reset(device)
            start = time.perf_counter()
            predict_slice_folder(src, Path(tmp) / name, device=dev, batch_size=8)
            out[f"{name}_seconds"] = time.perf_counter() - start
        from PIL import Image

        dices = [
            mask_dice(np.asarray(Image.open(Path(tmp) / "device" / f"{p.stem}.png")) >= 128,
                      np.asarray(Image.open(Path(tmp) / "cpu" / f"{p.stem}.png")) >= 128)
            for p in images
        ]
    return {
        "slices": len(images),
        "slices_per_second": round(len(images) / out["device_seconds"], 1),
        "cpu_slices_per_second": round(len(images) / out["cpu_seconds"], 1),
        "mask_dice_vs_cpu_min": round(min(dices), 4),
        "peak_gpu_mb": _peak_mb(device),
    }


def check_segment(device: torch.device, data: Path) -> list[dict]:
    gpu, cpu = CTSegmenter(device=str(device), amp=True), CTSegmenter(device="cpu")
    results = []
    for name in CT_CASES:
        (case,) = discover_cases(data / "ct" / name)
        image = load_ct(case)
        gpu.segment_image(image) if device.type == "cuda" else None  # warm-up (cuDNN autotuning)
        _reset(device)
        start = time.perf_counter()
        on_device = gpu.segment_image(image)
        seconds = time.perf_counter() - start
        inferred = int(on_device.row["slices_inferred"])
        reference = cpu.segment_image(image)
        results.append({
            "case": name,
            "shape": list(image.shape[1:]),
            "seconds": round(seconds, 2),
            "inferred_slices_per_second": round(inferred / seconds, 1),
            "infection_dice_vs_cpu": round(mask_dice(on_device.infection, reference.infection), 4),
            "lung_dice_vs_cpu": round(mask_dice(on_device.lung, reference.lung), 4),
            "infection_ml": [round(float(on_device.row["infection_volume_ml"]), 2), round(float(reference.row["infection_volume_ml"]), 2)],
            "peak_gpu_mb": _peak_mb(device),
        })
    return results


def check_training(device: torch.device, iterations: int, size: int) -> dict:
    out = {}
    for name, kwargs in (("light", INFNET_LIGHT), ("paper", {})):
        torch.manual_seed(0)
        net = InfNet(in_channels=1, **kwargs).to(device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
        x = torch.rand(8, 1, size, size, device=device)
        y = (torch.rand(8, 1, size, size, device=device) > 0.7).float()
        _reset(device)
        for i in range(iterations + 2):  # the first 2 are warm-up
            if i == 2:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
            with autocast_context(device, True):
                loss = sum(F.binary_cross_entropy_with_logits(o.float(), y) for o in net(x))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        out[name] = {"iterations": iterations, "batch": 8, "size": size,
                     "images_per_second": round(8 * iterations / seconds, 1), "peak_gpu_mb": _peak_mb(device)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=str(shared_data_dir()))
    parser.add_argument("--quick", action="store_true", help="8 slices, 2 training iterations at 128, no CT (tests)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result: dict = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    start = time.perf_counter()
    data = Path(args.data)
    result["predict_slices"] = check_slices(device, data, 8 if args.quick else None)
    result["segment"] = [] if args.quick else check_segment(device, data)
    result["training"] = check_training(device, 2 if args.quick else 20, 128 if args.quick else 352)
    gates = [result["predict_slices"]["mask_dice_vs_cpu_min"]] + [
        d for r in result["segment"] for d in (r["infection_dice_vs_cpu"], r["lung_dice_vs_cpu"])
    ]
    result["masks_agree_with_cpu"] = bool(min(gates) >= 0.99)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["masks_agree_with_cpu"] else 1)
