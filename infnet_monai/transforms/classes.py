"""Post-processing of the GGO / consolidation head's output into class probability maps."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch

from monai.config import KeysCollection
from monai.transforms import MapTransform

from infnet_monai.networks.nets.classes import HEAD_OUTPUTS, class_maps

__all__ = ["ClassMapsd"]


class ClassMapsd(MapTransform):
    """Turn the head's consolidation logit into the GGO and consolidation maps ``p * (1 - q)`` and ``p * q``.

    ``p``, the infection probability, is read from a channel of ``prior_key`` (the head's second input channel by
    default), ``q = sigmoid(logit)``. Each ``keys`` item ``(1, H, W)`` becomes ``(2, H, W)``: GGO, consolidation.

    With ``output="class_softmax"`` the head is the paper's kind instead, 3 class logits (background, GGO,
    consolidation), and the maps are the softmax's GGO and consolidation channels (the prior is not used).

    Args:
        keys: the head's output.
        prior_key: item holding the infection probability.
        prior_channel: its channel there.
        output: ``"consolidation_share"`` or ``"class_softmax"``, what the head predicts.
    """

    def __init__(
        self, keys: KeysCollection = "pred", prior_key: str = "image", prior_channel: int = 1, output: str = "consolidation_share"
    ) -> None:
        super().__init__(keys)
        if output not in HEAD_OUTPUTS:
            raise ValueError(f"output must be one of {HEAD_OUTPUTS}, got {output!r}.")
        self.prior_key = prior_key
        self.prior_channel = int(prior_channel)
        self.output = output

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        prior = torch.as_tensor(d[self.prior_key])[self.prior_channel : self.prior_channel + 1].float()
        for key in self.key_iterator(d):
            logits = torch.as_tensor(d[key]).float()
            if self.output == "class_softmax":
                d[key] = torch.softmax(logits, dim=0)[1:3]
            else:
                d[key] = class_maps(prior[None], torch.sigmoid(logits)[None])[0]
        return d
