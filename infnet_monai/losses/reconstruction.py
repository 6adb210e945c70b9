"""Loss of masked-image-modelling pretraining."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

__all__ = ["MaskedReconstructionLoss"]


class MaskedReconstructionLoss(_Loss):
    """Mean absolute error between reconstruction and original, over the hidden pixels only (SimMIM's loss).

    Visible pixels are excluded: copying them is trivial and would dilute the signal that teaches the encoder
    anatomy and texture.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the batch.

    Shapes: ``input (B, C, *spatial)``; ``target (B, C + 1, *spatial)`` holding the original image in its first C
    channels and the hidden-pixel mask (1 = hidden) in the last, as written by
    :class:`~infnet_monai.transforms.RandPatchMaskd`.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = input.shape[1]
        if target.shape[1] != channels + 1 or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"target must hold the image ({channels} channel(s)) plus a mask channel at the input's size; "
                f"got input {tuple(input.shape)} and target {tuple(target.shape)}."
            )
        original, mask = target[:, :channels], target[:, channels:]
        error = (input - original).abs() * mask
        dims = tuple(range(1, input.ndim))
        per_item = error.sum(dim=dims) / (mask.sum(dim=dims) * channels).clamp_min(1.0)
        if self.reduction == LossReduction.MEAN.value:
            return per_item.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_item.sum()
        return per_item
