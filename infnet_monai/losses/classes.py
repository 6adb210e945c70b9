"""Loss of the GGO / consolidation head: which part of the infection is consolidation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["ConsolidationLoss"]


class ConsolidationLoss(_Loss):
    """Binary cross-entropy plus soft Dice of ``q = P(consolidation | infection)``, over the true infection only.

    The head is conditioned on the infection map, so only infected pixels carry a class: outside them ``q`` is never
    used (the class maps are ``p * (1 - q)`` and ``p * q``, see :class:`~infnet_monai.networks.nets.InfNetClasses`).
    Consolidation is about a third of the infected pixels of COVID-SemiSeg and absent from a fifth of its slices; the
    Dice term, computed over the whole batch, keeps the rarer class from being ignored.

    Args:
        dice_weight: weight of the Dice term.
        smooth: added to the Dice numerator and denominator.
    """

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: ``(B, 1, H, W)`` consolidation logits of the head.
            target: ``(B, 3, H, W)`` one-hot classes (background, GGO, consolidation), soft values allowed after
                interpolation; a pixel counts as a class where its channel is above 0.5.
        """
        if logits.shape[1] != 1 or target.shape[1] != 3 or logits.shape[2:] != target.shape[2:]:
            raise ValueError(f"expected logits (B, 1, H, W) and target (B, 3, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}.")
        logits = logits.float()
        infected = (target[:, 0:1] < 0.5).float()
        consolidation = (target[:, 2:3] > 0.5).float() * infected
        bce = F.binary_cross_entropy_with_logits(logits, consolidation, reduction="none")
        bce = (bce * infected).sum() / infected.sum().clamp_min(1.0)
        q = torch.sigmoid(logits) * infected
        dice = 1.0 - (2.0 * (q * consolidation).sum() + self.smooth) / (q.sum() + consolidation.sum() + self.smooth)
        return bce + self.dice_weight * dice
