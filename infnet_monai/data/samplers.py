"""Samplers of training datalists."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["MixedEpochSampler"]


class MixedEpochSampler(Sampler[int]):
    """Every epoch, each primary item once and a fresh random draw of the extra items, shuffled together.

    The dataset holds the ``num_primary`` primary items first (the labeled slices), then ``num_extra`` extra ones (the
    hard negatives). An epoch visits every primary item once, as plain shuffling does, plus ``extra_per_epoch`` extra
    items drawn without replacement, so that the mixing ratio is ``extra_per_epoch / num_primary`` whatever the
    number of extra items, and over the epochs every extra item is seen.

    Args:
        num_primary: primary items (indices ``0 .. num_primary - 1``).
        num_extra: extra items (the following indices).
        extra_per_epoch: extra items per epoch (at most ``num_extra``; 0 gives plain shuffling of the primary items).
        seed: seed of the draws; epoch ``e`` uses ``seed + e``, so a run is reproducible and a resumed run
            continues the sequence once :meth:`set_epoch` is called.
    """

    def __init__(self, num_primary: int, num_extra: int, extra_per_epoch: int, seed: int = 0) -> None:
        if int(num_primary) < 1:
            raise ValueError(f"num_primary must be >= 1, got {num_primary}.")
        if int(num_extra) < 0:
            raise ValueError(f"num_extra must be >= 0, got {num_extra}.")
        if not 0 <= int(extra_per_epoch) <= int(num_extra):
            raise ValueError(f"extra_per_epoch must be in [0, num_extra={num_extra}], got {extra_per_epoch}.")
        self.num_primary, self.num_extra = int(num_primary), int(num_extra)
        self.extra_per_epoch, self.seed = int(extra_per_epoch), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draw of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_primary + self.extra_per_epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        extra = self.num_primary + torch.randperm(self.num_extra, generator=g)[: self.extra_per_epoch]
        order = torch.cat([torch.arange(self.num_primary), extra])
        return iter(order[torch.randperm(len(order), generator=g)].tolist())
