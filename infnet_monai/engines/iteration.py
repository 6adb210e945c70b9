"""Training iteration for Inf-Net with deep supervision and multi-scale training, for MONAI's ``SupervisedTrainer``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

__all__ = ["MultiScaleIteration", "scaled_size"]


def scaled_size(size: Sequence[int], rate: float, multiple: int = 32) -> tuple[int, ...]:
    """``size * rate`` rounded to the nearest multiple of ``multiple`` (at least ``multiple``).

    ``scaled_size((352, 352), 0.75) == (256, 256)``, ``scaled_size((352, 352), 1.25) == (448, 448)``.
    """
    return tuple(max(multiple, int(round(s * rate / multiple)) * multiple) for s in size)


class MultiScaleIteration:
    """``iteration_update`` for :class:`monai.engines.SupervisedTrainer`: one optimizer step per training scale.

    For each rate (0.75, 1, 1.25 in the paper) the batch is resized (bilinear; sizes rounded to multiples of 32), the
    network runs in training mode and returns all its supervised outputs, the loss function is called as
    ``loss_function(outputs, label, edge)`` (see :class:`~infnet_monai.losses.DeepSupervisionLoss`), or
    ``loss_function(outputs, label, edge, mask=loss_mask)`` when the batch holds a per-pixel loss mask (``mask_key``,
    made by :class:`~infnet_monai.transforms.LossMaskd`; resized with the batch), gradients are clipped by value, and
    the optimizer steps. AMP on CUDA follows the trainer's ``amp`` flag.

    Args:
        rates: training scales relative to the loaded size.
        clip_value: gradient values are clamped to ``[-clip_value, clip_value]`` (0.5 in the paper; ``None`` or 0 to
            disable).
        edge_key: batch key of the edge maps (absent keys are passed as ``None``).
        mask_key: batch key of the loss masks (1 counts, 0 ignored); absent: the loss is called without one.
        multiple: sizes are rounded to multiples of this (the network's total stride).

    The engine output holds ``image``, ``label``, ``pred`` (the finest map's logits at the last scale) and ``loss``
    (the mean of the per-scale losses, as a float tensor).
    """

    def __init__(
        self,
        rates: Sequence[float] = (0.75, 1.0, 1.25),
        clip_value: float | None = 0.5,
        edge_key: str = "edge",
        multiple: int = 32,
        mask_key: str = "loss_mask",
    ) -> None:
        if not rates:
            raise ValueError("rates must not be empty.")
        self.rates = tuple(float(r) for r in rates)
        self.clip_value = clip_value
        self.edge_key = edge_key
        self.mask_key = mask_key
        self.multiple = multiple

    def __call__(self, engine, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        device = engine.state.device
        image = batchdata[Keys.IMAGE].to(device, non_blocking=engine.non_blocking)
        label = batchdata[Keys.LABEL].to(device, non_blocking=engine.non_blocking)
        edge = batchdata.get(self.edge_key)
        if edge is not None:
            edge = edge.to(device, non_blocking=engine.non_blocking)
        mask = batchdata.get(self.mask_key)
        if mask is not None:
            mask = torch.as_tensor(mask.to(device, non_blocking=engine.non_blocking))
        image, label = torch.as_tensor(image), torch.as_tensor(label)
        edge = torch.as_tensor(edge) if edge is not None else None
        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: label}
        engine.network.train()
        size = image.shape[2:]
        losses = []
        for rate in self.rates:
            new_size = scaled_size(size, rate, self.multiple)
            x, y, e, m = image, label, edge, mask
            if tuple(new_size) != tuple(size):
                x, y, e, m = (
                    F.interpolate(t, size=new_size, mode="bilinear", align_corners=True) if t is not None else None
                    for t in (image, label, edge, mask)
                )
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            use_amp = bool(engine.amp and engine.scaler is not None)
            with torch.autocast("cuda", enabled=use_amp, **(engine.amp_kwargs if use_amp else {})):
                outputs = engine.network(x)
                engine.state.output[Keys.PRED] = outputs.stage2_map
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                extra = {} if m is None else {"mask": m}  # loss functions without a mask keep working
                loss = engine.loss_function(outputs, y, e, **extra).mean()
                engine.state.output[Keys.LOSS] = loss
                engine.fire_event(IterationEvents.LOSS_COMPLETED)
            if use_amp:
                engine.scaler.scale(loss).backward()
                engine.scaler.unscale_(engine.optimizer)
            else:
                loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.clip_value:
                torch.nn.utils.clip_grad_value_(engine.network.parameters(), self.clip_value)
            if use_amp:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
            else:
                engine.optimizer.step()
            losses.append(loss.detach())
        engine.state.output[Keys.LOSS] = torch.stack(losses).mean()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
