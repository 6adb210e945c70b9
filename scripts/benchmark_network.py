#!/usr/bin/env python
"""Forward and forward+backward seconds per image for Inf-Net configurations on the CPU (or a GPU). Prints JSON.

Example (the figures quoted in the README)::

    python scripts/benchmark_network.py --threads 2 --size 352 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from infnet_monai.losses import DeepSupervisionLoss
from infnet_monai.networks import INFNET_LIGHT, InfNet

CONFIGS = {
    "paper": {"in_channels": 3},
    "light": {"in_channels": 1, **INFNET_LIGHT},
}


def _median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def benchmark(name: str, kwargs: dict, size: int, batch: int, repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    net = InfNet(**kwargs).to(device)
    x = torch.rand(batch, kwargs["in_channels"], size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.8).float()
    loss_fn = DeepSupervisionLoss()

    def forward():
        net.eval()
        with torch.no_grad():
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward_backward():
        net.train()
        net.zero_grad(set_to_none=True)
        loss_fn(net(x), y, y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    fwd = _median_seconds(forward, repeats)
    fwd_bwd = _median_seconds(forward_backward, repeats)
    return {
        "config": name,
        "parameters": sum(p.numel() for p in net.parameters()),
        "image_size": size,
        "batch": batch,
        "forward_s_per_image": round(fwd / batch, 4),
        "forward_backward_s_per_image": round(fwd_bwd / batch, 4),
        "forward_images_per_s": round(batch / fwd, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = [benchmark(c, CONFIGS[c], args.size, args.batch, args.repeats, device) for c in args.configs]
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": args.threads,
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
                "repeats": args.repeats,
                "statistic": "median",
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
