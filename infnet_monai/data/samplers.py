"""Samplers of training datalists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["MixedEpochSampler"]


class MixedEpochSampler(Sampler[int]):
    """Every epoch, each primary item once and a fresh random draw of the extra items, shuffled together.

    The dataset holds the ``num_primary`` primary items first (the labeled slices), then the extra ones: one pool of
    ``num_extra`` items (the hard negatives), or several pools one after the other (the hard negatives, then the
    real-CT positives) when ``num_extra`` and ``extra_per_epoch`` are sequences. An epoch visits every primary item
    once, as plain shuffling does, plus ``extra_per_epoch`` items of each pool drawn without replacement, so that the
    mixing ratio is ``extra_per_epoch / num_primary`` whatever the size of the pool, and over the epochs every extra
    item is seen.

    Args:
        num_primary: primary items (indices ``0 .. num_primary - 1``).
        num_extra: extra items (the following indices), or the sizes of consecutive pools.
        extra_per_epoch: extra items per epoch (at most ``num_extra``; 0 gives plain shuffling of the primary items),
            or one count per pool.
        seed: seed of the draws; epoch ``e`` uses ``seed + e``, so a run is reproducible and a resumed run
            continues the sequence once :meth:`set_epoch` is called.
    """

    def __init__(
        self, num_primary: int, num_extra: int | Sequence[int], extra_per_epoch: int | Sequence[int], seed: int = 0
    ) -> None:
        if int(num_primary) < 1:
            raise ValueError(f"num_primary must be >= 1, got {num_primary}.")
        pools = [int(n) for n in (num_extra if isinstance(num_extra, Sequence) else [num_extra])]
        draws = [int(k) for k in (extra_per_epoch if isinstance(extra_per_epoch, Sequence) else [extra_per_epoch])]
        if len(pools) != len(draws):
            raise ValueError(f"num_extra and extra_per_epoch must have the same length, got {num_extra} and {extra_per_epoch}.")
        for n, k in zip(pools, draws):
            if n < 0:
                raise ValueError(f"num_extra must be >= 0, got {num_extra}.")
            if not 0 <= k <= n:
                raise ValueError(f"extra_per_epoch must be in [0, num_extra={n}], got {k}.")
        self.num_primary, self.pools, self.draws = int(num_primary), pools, draws
        self.num_extra, self.extra_per_epoch, self.seed = sum(pools), sum(draws), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draw of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_primary + self.extra_per_epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        parts, start = [torch.arange(self.num_primary)], self.num_primary
        for n, k in zip(self.pools, self.draws):
            if k:  # a pool drawn from: an empty one leaves the generator, and so the order, as a single pool gives it
                parts.append(start + torch.randperm(n, generator=g)[:k])
            start += n
        order = torch.cat(parts)
        return iter(order[torch.randperm(len(order), generator=g)].tolist())
