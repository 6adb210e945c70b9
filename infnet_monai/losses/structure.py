"""Losses of Inf-Net (Fan et al., IEEE TMI 2020): structure loss, edge loss and deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

__all__ = ["StructureLoss", "EdgeLoss", "DeepSupervisionLoss", "boundary_weight"]


def boundary_weight(target: torch.Tensor, kernel_size: int = 31, strength: float = 5.0) -> torch.Tensor:
    """Pixel weights that emphasise the neighbourhood of object boundaries: ``1 + strength * |avgpool(G) - G|``.

    The average pool has stride 1 and zero padding ``kernel_size // 2`` that counts in the average (so pixels near
    the image border with a positive target are also up-weighted, as in the paper's code).

    Args:
        target: ``(B, C, *S)`` ground truth in [0, 1] (soft labels allowed).
        kernel_size: side of the averaging window (31 in the paper), odd.
        strength: weight factor (5 in the paper).

    Returns:
        ``(B, C, *S)`` weights >= 1.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
    spatial_dims = target.ndim - 2
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}.get(spatial_dims)
    if pool is None:
        raise ValueError(f"target must be (B, C, *spatial) with 1-3 spatial dims, got shape {tuple(target.shape)}.")
    pad = kernel_size // 2
    # explicit padding: torch's pools refuse inputs smaller than the kernel even when padding is requested
    local_mean = F.pad(target, [pad] * (2 * spatial_dims), mode="constant", value=0.0)
    # the box filter is separable: one 1D average per axis equals the k^n average, at O(n k) instead of O(k^n)
    for axis in range(spatial_dims):
        kernel = [1] * spatial_dims
        kernel[axis] = kernel_size
        local_mean = pool(local_mean, kernel_size=tuple(kernel) if spatial_dims > 1 else kernel_size, stride=1)
    return 1.0 + strength * (local_mean - target).abs()


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    if reduction == LossReduction.NONE.value:
        return values
    raise ValueError(f'Unsupported reduction: {reduction}, available options are ["mean", "sum", "none"].')


class StructureLoss(_Loss):
    """Pixel-weighted binary cross-entropy plus pixel-weighted IoU loss, per image and channel.

    With weights ``w = 1 + 5 |avgpool_31(G) - G|`` (see :func:`boundary_weight`), logits ``x``, ``p = sigmoid(x)``:

    * weighted BCE: ``sum(w * bce(x, G)) / sum(w)``
    * weighted IoU: ``1 - (sum(w p G) + 1) / (sum(w (p + G)) - sum(w p G) + 1)``

    and the loss is their sum. This is the weighting the paper intends. The Inf-Net reference code passes the legacy
    ``reduce`` argument of its BCE a string, which makes the BCE come back as a plain mean over pixels, so its pixel
    weights cancel out of the BCE term there (they still act in the IoU term). This class applies them to both.

    Args:
        kernel_size: averaging window of the boundary weights (31 in the paper).
        strength: boundary weight factor (5 in the paper).
        reduction: ``"mean"`` | ``"sum"`` over the ``(B, C)`` per-image losses, or ``"none"`` to get them as a
            ``(B, C)`` tensor.

    Shapes:
        ``input`` logits ``(B, C, *S)``, ``target`` ``(B, C, *S)`` in [0, 1], 2D or 3D.
    """

    def __init__(
        self, kernel_size: int = 31, strength: float = 5.0, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.kernel_size = kernel_size
        self.strength = strength

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            input: logits ``(B, C, *S)``.
            target: ground truth ``(B, C, *S)`` in [0, 1].
            weight: precomputed :func:`boundary_weight` of ``target`` (computed here when ``None``).
        """
        if input.shape != target.shape:
            raise ValueError(f"input and target shapes differ: {tuple(input.shape)} vs {tuple(target.shape)}.")
        target = target.to(input.dtype)
        if weight is None:
            weight = boundary_weight(target, self.kernel_size, self.strength)
        dims = tuple(range(2, input.ndim))
        bce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
        wbce = (weight * bce).sum(dims) / weight.sum(dims).clamp_min(1e-12)  # an all-ignored image gives 0
        prob = torch.sigmoid(input)
        inter = (prob * target * weight).sum(dims)
        union = ((prob + target) * weight).sum(dims)
        wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
        return _reduce(wbce + wiou, self.reduction)


class EdgeLoss(_Loss):
    """Binary cross-entropy on edge logits, averaged over pixels of each image and channel.

    Args:
        reduction: ``"mean"`` | ``"sum"`` over the ``(B, C)`` per-image losses, or ``"none"``.

    Shapes:
        ``input`` logits ``(B, C, *S)``, ``target`` edge map ``(B, C, *S)`` in [0, 1].
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (broadcastable to ``input``, 1 counts, 0 ignored): the mean is over the pixels it keeps (an image
        it keeps nothing of contributes 0)."""
        if input.shape != target.shape:
            raise ValueError(f"input and target shapes differ: {tuple(input.shape)} vs {tuple(target.shape)}.")
        bce = F.binary_cross_entropy_with_logits(input, target.to(input.dtype), reduction="none")
        dims = tuple(range(2, input.ndim))
        if mask is None:
            return _reduce(bce.mean(dims), self.reduction)
        mask = torch.broadcast_to(mask.to(bce.dtype), bce.shape)
        return _reduce((mask * bce).sum(dims) / mask.sum(dims).clamp_min(1e-12), self.reduction)


class DeepSupervisionLoss(_Loss):
    """Inf-Net's total loss: edge BCE plus the structure loss of each of the four segmentation maps.

    ``loss = edge_weight * EdgeLoss(edge, E) + sum_i map_weights[i] * StructureLoss(map_i, G)``, equal weights in the
    paper.

    Args:
        map_weights: weights of the global, stage-4, stage-3 and stage-2 maps.
        edge_weight: weight of the edge loss (0 disables it, e.g. when no edge maps exist).
        kernel_size: see :class:`StructureLoss`.
        strength: see :class:`StructureLoss`.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the per-image losses (``"none"``: ``(B, C)``).

    Call:
        ``loss(outputs, target, edge, mask=None)`` with ``outputs`` an :class:`~infnet_monai.networks.nets.InfNetOutput`
        (or any object with ``segmentation_maps()`` and ``edge_map``), ``target`` ``(B, C, *S)``, ``edge``
        ``(B, 1, *S)`` or ``None``, and ``mask`` ``(B, 1, *S)`` in [0, 1] or ``None``: pixels where it is 0 are
        ignored by every term (the boundary weights of the structure loss are multiplied by it, the edge loss
        averages over what it keeps). Used for real-CT positives, whose pseudo-label is known only where the final
        lesions are sure (:func:`infnet_monai.apps.hard_negatives.mine_real_positives`).
    """

    def __init__(
        self,
        map_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        edge_weight: float = 1.0,
        kernel_size: int = 31,
        strength: float = 5.0,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.map_weights = tuple(float(w) for w in map_weights)
        self.edge_weight = float(edge_weight)
        self.structure = StructureLoss(kernel_size, strength, reduction=LossReduction.NONE)
        self.edge = EdgeLoss(reduction=LossReduction.NONE)

    def forward(  # type: ignore[override]
        self, outputs, target: torch.Tensor, edge: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        maps = outputs.segmentation_maps()
        if len(maps) != len(self.map_weights):
            raise ValueError(f"expected {len(self.map_weights)} segmentation maps, got {len(maps)}.")
        target = target.to(maps[-1].dtype)
        weight = boundary_weight(target, self.structure.kernel_size, self.structure.strength)  # shared by all maps
        if mask is not None:
            if mask.shape[0] != target.shape[0] or mask.shape[2:] != target.shape[2:]:
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match the target's {tuple(target.shape)}.")
            weight = weight * mask.to(weight.dtype)
        total = sum(w * self.structure(m, target, weight) for w, m in zip(self.map_weights, maps))
        if self.edge_weight and edge is not None:
            # the edge map has one channel; broadcast its per-image loss over the target's channels
            total = total + self.edge_weight * self.edge(outputs.edge_map, edge, mask)
        return _reduce(total, self.reduction)
