"""Sharding a cohort over the processes of ``torchrun`` (one node or many sharing the output folder).

Each rank takes a disjoint, deterministic share of the cases, balanced by size (the bytes of each case's files, a
stand-in for its voxel count); every case is processed by exactly one rank. After the last case the ranks meet at a
barrier (gloo on CPU, NCCL on GPU), exchange their rows, and rank 0 writes the one ``burden.csv`` and report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from infnet_monai.utils.launch import DistEnv, dist_env  # light: the command line reads it before importing torch

__all__ = ["DistEnv", "dist_env", "shard_by_size", "case_bytes", "rank_device", "start", "gather_rows"]

logger = logging.getLogger(__name__)


def case_bytes(files: Sequence[os.PathLike | str]) -> int:
    """Total size of a case's files (0 for files that cannot be read: such a case fails quickly anyway)."""
    total = 0
    for f in files:
        try:
            total += os.stat(f).st_size
        except OSError:
            pass
    return total


def shard_by_size(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """Case indices for each rank: largest first, each to the least loaded rank (ties: the lower rank). Deterministic
    and disjoint; every index appears exactly once. Each rank's share is returned in input order."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}.")
    load = [0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(sizes)), key=lambda i: (-int(sizes[i]), i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        shares[r].append(i)
        load[r] += int(sizes[i])
    return [sorted(s) for s in shares]


def rank_device(device: str, env: DistEnv | None) -> str:
    """``cuda:LOCAL_RANK`` for ``auto`` / ``cuda`` in a multi-process job on a GPU machine; else ``device``."""
    if env is not None and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{env.local_rank % torch.cuda.device_count()}"
    return device


def start(env: DistEnv, device: torch.device) -> bool:
    """Join the process group (NCCL on CUDA, gloo otherwise) unless already in one; True when this call joined."""
    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    logger.info("rank %d of %d joined the process group (%s)", env.rank, env.world_size, backend)
    return True


def gather_rows(rows: dict[int, dict], n_cases: int) -> list[dict]:
    """Every rank's ``{case index: row}`` merged into the cohort's rows in input order (on every rank; a barrier)."""
    gathered: list[dict[int, dict] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rows)
    merged: dict[int, dict] = {}
    for part in gathered:
        merged.update(part or {})
    missing = sorted(set(range(n_cases)) - set(merged))
    if missing:
        raise RuntimeError(f"cases {missing} were processed by no rank")
    return [merged[i] for i in range(n_cases)]
