"""Inf-Net with a GGO / consolidation head: the paper's multi-class task on top of the binary infection map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from infnet_monai.utils.validation import check_spatial_size

__all__ = ["CLASS_NAMES", "HEAD_OUTPUTS", "InfNetClasses", "class_maps"]

CLASS_NAMES: tuple[str, ...] = ("background", "ggo", "consolidation")
"""Label values of a class map: 0 background, 1 ground-glass opacity (GGO), 2 consolidation."""

HEAD_OUTPUTS: tuple[str, ...] = ("consolidation_share", "class_softmax")
"""What a class head predicts: the consolidation share of the infection (1 logit, the shipped design) or the paper's
3 class logits (background, GGO, consolidation)."""


def class_maps(infection: torch.Tensor, consolidation_share: torch.Tensor) -> torch.Tensor:
    """GGO and consolidation probabilities ``p * (1 - q)`` and ``p * q`` from the infection probability ``p`` and the
    share ``q = P(consolidation | infection)``; the two always add up to ``p``.

    Args:
        infection: ``(B, 1, H, W)`` probabilities.
        consolidation_share: ``(B, 1, H, W)`` probabilities.

    Returns:
        ``(B, 2, H, W)``: GGO, consolidation.
    """
    return torch.cat([infection * (1.0 - consolidation_share), infection * consolidation_share], dim=1)


class InfNetClasses(nn.Module):
    """A binary Inf-Net whose infection map conditions a small head that splits it into GGO and consolidation.

    The paper feeds the slice and the binary infection map to a 3-class U-Net. Here the head (a MONAI ``UNet``) sees
    the same two inputs but predicts only ``q``, the share of the infection that is consolidation, so the class maps
    ``p * (1 - q)`` and ``p * q`` add up to the binary map by construction: the class mask of a volume is the binary
    mask with each voxel labelled, never a second, disagreeing segmentation.

    Args:
        segmenter: the binary Inf-Net; its output (eval mode) is the infection logit ``(B, 1, H, W)``.
        head: maps ``(B, 2, h, w)`` (standardised slice, infection probability) to the consolidation logit.
        temperature: logit temperature of ``segmenter`` (probability ``sigmoid(logit / temperature)``).
        head_size: in-plane size the head runs at (its training size); ``None`` keeps the input size.
        output: ``"consolidation_share"`` (above) or ``"class_softmax"``: the head predicts the paper's 3 class
            logits, the class maps are its softmax, and ``q`` is their consolidation / (GGO + consolidation) ratio.
        head_temperature: logit temperature of ``head`` (recorded in its checkpoint's ``calibration``). Below 1 it
            makes ``q`` more decisive; the ``q = 0.5`` boundary, hence the 3D class mask, does not move.

    Returns (``forward``):
        ``(B, 3, H, W)`` probabilities: infection, GGO, consolidation.
    """

    def __init__(
        self,
        segmenter: nn.Module,
        head: nn.Module,
        temperature: float = 1.0,
        head_size: Sequence[int] | int | None = 256,
        output: str = "consolidation_share",
        head_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if output not in HEAD_OUTPUTS:
            raise ValueError(f"output must be one of {HEAD_OUTPUTS}, got {output!r}.")
        self.output = output
        self.segmenter = segmenter
        self.head = head
        self.temperature = float(temperature)
        self.head_temperature = float(head_temperature)
        self.head_size = check_spatial_size(head_size) if head_size is not None else None

    def _head(self, image: torch.Tensor, infection: torch.Tensor) -> torch.Tensor:
        """The head's output at the input's size: consolidation share, or the 3 class probabilities."""
        size = tuple(image.shape[-2:])
        inputs = torch.cat([image[:, :1].float(), infection.float()], dim=1)
        if self.head_size is not None and self.head_size != size:
            inputs = F.interpolate(inputs, size=self.head_size, mode="bilinear", align_corners=False)
        logits = self.head(inputs).float() / self.head_temperature
        out = torch.softmax(logits, dim=1) if self.output == "class_softmax" else torch.sigmoid(logits)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def consolidation_share(self, image: torch.Tensor, infection: torch.Tensor) -> torch.Tensor:
        """``q = P(consolidation | infection)`` at the input's size, from the standardised slice and ``p``."""
        out = self._head(image, infection)
        if self.output == "class_softmax":
            return out[:, 2:3] / (out[:, 1:3].sum(1, keepdim=True) + 1e-6)
        return out

    def infection_and_share(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 2, H, W)``: the infection probability ``p`` and the consolidation share ``q`` (what the 3D pipeline
        keeps: a voxel of the infection mask is consolidation where ``q >= 0.5``, i.e. where ``p * q >= p * (1 - q)``)."""
        infection = torch.sigmoid(self.segmenter(image).float() / self.temperature)
        return torch.cat([infection, self.consolidation_share(image, infection)], dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        infection = torch.sigmoid(self.segmenter(image).float() / self.temperature)
        out = self._head(image, infection)
        classes = out[:, 1:3] if self.output == "class_softmax" else class_maps(infection, out)
        return torch.cat([infection, classes], dim=1)
