"""Where this process stands in a ``torchrun`` job, read from the environment without importing torch: the command
line decides with it whether to take OUTPUT's lock itself before the heavy imports (a single process) or to leave it
to rank 0 once the ranks have met; :class:`~infnet_monai.pipeline.CTSegmenter` reads it once and hands it to the
runner."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["DistEnv", "dist_env"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a ``torchrun`` job."""

    rank: int
    world_size: int
    local_rank: int


def dist_env() -> DistEnv | None:
    """The job read from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); ``None`` when this is
    a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}; start the job with torchrun.")
    return DistEnv(rank, world, local)
