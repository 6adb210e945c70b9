"""Random patch masking for masked-image-modelling pretraining (array transform plus dictionary wrapper).

MONAI's ``RandCoarseDropout`` drops random boxes but does not report where, and its boxes overlap at random; masked
image modelling needs a regular grid of patches, a fixed masked fraction and the mask itself for the loss.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

__all__ = ["RandPatchMask", "RandPatchMaskd"]


class RandPatchMask(RandomizableTransform):
    """Hide a random fraction of the patches of a regular grid, as in SimMIM (Xie et al., CVPR 2022).

    The image (channel first, any spatial rank) is cut into ``patch_size`` patches (the last, partial patch of an
    axis counts as a patch); ``round(ratio * n_patches)`` of them, drawn without replacement, are filled with
    ``fill_value`` (0 is the mean of a standardised slice).

    Args:
        patch_size: patch edge in voxels (an int or one value per spatial axis). 32 matches Inf-Net's total stride,
            so every deepest-level feature sees either visible or hidden content.
        ratio: fraction of patches hidden, in (0, 1).
        fill_value: value written into hidden patches.
        prob: probability of masking at all (1 for pretraining).

    Returns from ``__call__``: ``(masked_image, mask)``, both shaped like the image's first channel broadcast to
    ``(1, *spatial)`` for the mask; the mask is 1 where hidden.
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = 32,
        ratio: float = 0.6,
        fill_value: float = 0.0,
        prob: float = 1.0,
    ) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {ratio}.")
        if min(ensure_tuple(patch_size)) < 1:
            raise ValueError(f"patch_size must be at least 1 voxel, got {patch_size}.")
        RandomizableTransform.__init__(self, prob)
        self.patch_size = patch_size
        self.ratio = float(ratio)
        self.fill_value = float(fill_value)
        self._grid_mask: np.ndarray | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:  # type: ignore[override]
        super().randomize(None)
        patch = ensure_tuple_rep(self.patch_size, len(spatial_shape))
        grid = tuple(-(-int(s) // int(p)) for s, p in zip(spatial_shape, patch))
        n = int(np.prod(grid))
        hidden = int(round(self.ratio * n)) if self._do_transform else 0
        flat = np.zeros(n, dtype=bool)
        flat[self.R.choice(n, size=hidden, replace=False)] = True
        self._grid_mask = flat.reshape(grid)

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.as_tensor(img)
        spatial = img.shape[1:]
        if randomize or self._grid_mask is None:
            self.randomize(spatial)
        patch = ensure_tuple_rep(self.patch_size, len(spatial))
        mask = torch.from_numpy(self._grid_mask)
        for axis, p in enumerate(patch):
            mask = mask.repeat_interleave(int(p), dim=axis)
        mask = mask[tuple(slice(0, int(s)) for s in spatial)].unsqueeze(0)
        masked = torch.where(mask, torch.as_tensor(self.fill_value, dtype=img.dtype), img)
        return masked, mask.to(img.dtype)


class RandPatchMaskd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandPatchMask` that also keeps what the loss needs.

    ``data[key]`` is replaced by the masked image and ``data[target_key]`` receives ``cat([original, mask])``
    (``C + 1`` channels), so a stock :class:`monai.engines.SupervisedTrainer` passes both to
    :class:`~infnet_monai.losses.MaskedReconstructionLoss` as its label.

    Args:
        keys: the image key (one key).
        target_key: where the original image and the mask are stored.
        patch_size, ratio, fill_value, prob: see :class:`RandPatchMask`.
    """

    backend = [torch.Tensor]

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_key: str = "label",
        patch_size: int | Sequence[int] = 32,
        ratio: float = 0.6,
        fill_value: float = 0.0,
        prob: float = 1.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, 1.0)
        if len(self.keys) != 1:
            raise ValueError(f"RandPatchMaskd masks one image key, got {self.keys}.")
        self.target_key = target_key
        self.masker = RandPatchMask(patch_size=patch_size, ratio=ratio, fill_value=fill_value, prob=prob)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPatchMaskd:
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        key = self.keys[0]
        original = torch.as_tensor(d[key])
        masked, mask = self.masker(original)
        d[key] = masked
        d[self.target_key] = torch.cat([original, mask], dim=0)
        return d
