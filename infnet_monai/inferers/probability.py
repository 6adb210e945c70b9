"""The one place where a network's logits become probabilities: ``sigmoid(logit / temperature)``, optionally with the
GGO / consolidation head and left-right flip test-time augmentation.

Which tensor axis is the patient's left-right: both doors feed the network slices laid out alike, ``(B, C, X, Y)``
with ``X`` running from the patient's right to left and ``Y`` from anterior to posterior:

- CT volumes are oriented to :data:`~infnet_monai.transforms.ct.SLICE_AXCODES` (``"LPS"``) before slicing, so the
  first in-plane axis is left-right;
- 8-bit slices (COVID-SemiSeg, ``predict-slices``) are read as ``(rows, columns)``, by PIL and numpy in
  :func:`~infnet_monai.io.slices.read_slice` and by MONAI's ``PILReader(reverse_indexing=False)`` in training; their
  rows run along the patient's right-left axis and their columns from anterior to posterior (lungs at the top and
  bottom of the picture, heart on the left, spine on the right).

Hence :data:`LEFT_RIGHT_DIM` is ``-2``. (MONAI's ``PILReader`` with its default ``reverse_indexing=True`` would give
``(columns, rows)``, with left-right on ``-1``: pass ``flip_dim=-1`` for slices read that way.)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from infnet_monai.transforms.ct import SLICE_AXCODES
from infnet_monai.utils.validation import check_flag, check_temperature

__all__ = ["LEFT_RIGHT_DIM", "ProbabilityMaps", "InfectionStage", "ShareStage"]

LEFT_RIGHT_DIM: int = -2 + next(i for i, c in enumerate(SLICE_AXCODES[:2]) if c in "LR")
"""Dimension of a ``(B, C, H, W)`` batch of slices that runs along the patient's left-right axis (``-2``, see the
module docstring); the mirror image of a slice flips this dimension."""


class ProbabilityMaps(nn.Module):
    """Infection probability of a batch of prepared slices, with the consolidation share when a class head is given.

    ``forward`` maps ``(B, C, H, W)`` standardised slices to ``(B, 1, H, W)``, the infection probability
    ``sigmoid(logit / temperature)`` computed in float32 (also under mixed precision), or with ``classes`` to
    ``(B, 2, H, W)``: the infection probability ``p`` and the consolidation share ``q`` of the head, as
    :meth:`~infnet_monai.networks.nets.InfNetClasses.infection_and_share` gives them (GGO is ``p * (1 - q)``,
    consolidation ``p * q``, :func:`~infnet_monai.networks.nets.classes.class_maps`). With ``flip_tta`` the maps are
    averaged with those of the left-right mirrored slices, mirrored back.

    Args:
        network: the infection network; in eval mode its output is the infection logit ``(B, 1, H, W)``.
        temperature: logit temperature (a checkpoint's is :attr:`infnet_monai.io.ModelSpec.temperature`); it never
            moves the 0.5 boundary.
        classes: the GGO / consolidation model of :func:`~infnet_monai.io.load_class_model`; only its head is run
            here (its ``consolidation_share``), on the infection probability computed with ``temperature``.
        flip_tta: also run the mirrored slices and average (twice the time).
        flip_dim: the dimension mirrored by ``flip_tta``, the patient's left-right (default :data:`LEFT_RIGHT_DIM`).

    Raises:
        ValueError: ``temperature`` is not a finite number > 0, or ``flip_dim`` is not an in-plane dimension.
    """

    def __init__(
        self,
        network: nn.Module,
        temperature: float = 1.0,
        classes: nn.Module | None = None,
        flip_tta: bool = False,
        flip_dim: int = LEFT_RIGHT_DIM,
    ) -> None:
        super().__init__()
        if flip_dim not in (-2, -1, 2, 3):
            raise ValueError(f"flip_dim must be an in-plane dimension of (B, C, H, W) slices (-2 or -1), got {flip_dim!r}.")
        self.network = network
        self.classes = classes
        self.temperature = temperature
        self.flip_tta = check_flag(flip_tta, "flip_tta")
        self.flip_dim = int(flip_dim)

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value)

    def infection(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)``: the infection probability ``sigmoid(logit / temperature)``, in float32."""
        return torch.sigmoid(self.network(x).float() / self.temperature)

    def share(self, x: torch.Tensor, infection: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)``: the head's consolidation share of the slices ``x`` with their infection probability."""
        return self.classes.consolidation_share(x, infection).float()

    @property
    def staged(self) -> bool:
        """Whether the maps can run in two stages, the infection and then the head on the slices that need it
        (:class:`InfectionStage`, :class:`ShareStage`): with a head and without the flip augmentation, whose share
        averages the heads of two views."""
        return self.classes is not None and not self.flip_tta

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        infection = self.infection(x)
        if self.classes is None:
            return infection
        return torch.cat([infection, self.share(x, infection)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = self._maps(x)
        if self.flip_tta:
            prob = 0.5 * (prob + self._maps(x.flip(self.flip_dim)).flip(self.flip_dim))
        return prob


class InfectionStage(nn.Module):
    """The first stage of staged :class:`ProbabilityMaps`: ``(B, C, H, W)`` slices to their infection probability
    ``(B, 1, H, W)``, what channel 0 of the maps holds."""

    def __init__(self, maps: ProbabilityMaps) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.infection(x)


class ShareStage(nn.Module):
    """The second stage of staged :class:`ProbabilityMaps`: ``(B, C + 1, H, W)``, the slices with their infection
    probability as the last channel, to the consolidation share ``(B, 1, H, W)``, what channel 1 of the maps holds.
    One input tensor, so that every backend runs it as it runs the maps."""

    def __init__(self, maps: ProbabilityMaps) -> None:
        super().__init__()
        if not maps.staged:
            raise ValueError("ShareStage needs ProbabilityMaps with a class head and without flip_tta.")
        self.maps = maps

    def forward(self, xp: torch.Tensor) -> torch.Tensor:
        return self.maps.share(xp[:, :-1], xp[:, -1:])
