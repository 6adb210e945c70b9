# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Ignite metrics wrapping the Inf-Net paper protocol (:mod:`infnet_monai.metrics.paper`) for MONAI/ignite engines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers.utils import from_engine
from monai.utils import evenly_divisible_all_gather

from infnet_monai.metrics.accumulator import PaperMetricAccumulator

__all__ = ["PaperMetrics", "PaperDice", "ClassPaperDice"]


def _to_numpy(data: Any) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        return np.asarray(data.detach().cpu().numpy(), dtype=np.float64)
    return np.asarray(data, dtype=np.float64)


def _single_map(data: Any, what: str) -> np.ndarray:
    """One image given as ``(1, H, W)`` or ``(H, W)`` -> ``(H, W)`` float64 array."""
    array = _to_numpy(data)
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 2:
        return array
    raise ValueError(f"each {what} item must have shape (1, H, W) or (H, W), got {tuple(array.shape)}.")


def _iter_maps(data: Any, what: str) -> Iterator[np.ndarray]:
    """Yield the ``(H, W)`` maps of a batch ``(B, 1, H, W)``, a single image or a sequence of single images."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if data.ndim == 4:
            if data.shape[1] != 1:
                raise ValueError(
                    f"{what} must have one channel, shape (B, 1, H, W); got {tuple(data.shape)}. "
                    "Select the infection channel first."
                )
            for item in data:
                yield _single_map(item, what)
            return
        yield _single_map(data, what)
        return
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        for item in data:
            yield _single_map(item, what)
        return
    raise TypeError(f"{what} must be a tensor, an array or a sequence of them, got {type(data).__name__}.")


class PaperMetrics(Metric):
    """
    All figures of the Inf-Net paper protocol as one ignite metric (see :class:`PaperMetricAccumulator`).

    ``update`` receives ``(y_pred, y)``: ``y_pred`` holds **probabilities** in ``[0, 1]`` (no sigmoid is applied
    here; add e.g. ``Activationsd(sigmoid=True)`` to the post transforms), as a batch tensor ``(B, 1, H, W)``, a
    single ``(1, H, W)`` / ``(H, W)`` map or a list of ``(1, H, W)`` tensors (MONAI's decollated output);
    ``y`` holds the matching binary labels, binarised as ``y > 0.5``. Each image is evaluated with
    :func:`~infnet_monai.metrics.paper.evaluate_image` (bicubic resize of the prediction if the sizes differ,
    per-image min-max normalisation, 256 thresholds).

    ``compute`` returns the dict of :meth:`PaperMetricAccumulator.aggregate` (``dice``, ``dice_max``,
    ``sensitivity``, ``specificity``, ``s_measure``, ``e_measure``, ``e_measure_max``, ``mae``, ``dice_at_0.5``,
    ``iou_at_0.5``, ``num_images``). Once attached with ``metric.attach(engine, name)``, every key is stored as
    ``engine.state.metrics[key]`` and the whole dict as ``engine.state.metrics[name]``. In distributed runs the
    per-image results of all processes are gathered before aggregating.

    Since MONAI's key metrics (``key_val_metric``, checkpoint selection) need one number, use :class:`PaperDice`
    there and this class in ``additional_metrics``.

    Args:
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``; by default MONAI's
            ``from_engine(["pred", "label"])``, which handles both batched dicts and decollated lists of dicts.
        device: device of the metric (the computation itself runs on CPU with numpy).
    """

    def __init__(
        self,
        output_transform: Callable = from_engine(["pred", "label"]),
        device: str | torch.device = torch.device("cpu"),
    ) -> None:
        self._accumulator = PaperMetricAccumulator()
        super().__init__(output_transform=output_transform, device=device)

    @property
    def accumulator(self) -> PaperMetricAccumulator:
        """The accumulator of this process (per-image results, curves)."""
        return self._accumulator

    @reinit__is_reduced
    def reset(self) -> None:
        self._accumulator.reset()

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        """
        Args:
            output: ``(y_pred, y)``, probabilities and binary labels, see the class documentation.
        """
        if not isinstance(output, Sequence) or len(output) != 2:
            raise ValueError(f"output must be a pair (y_pred, y), got {type(output).__name__}.")
        preds = list(_iter_maps(output[0], "y_pred"))
        labels = list(_iter_maps(output[1], "y"))
        if len(preds) != len(labels):
            raise ValueError(f"got {len(preds)} predictions but {len(labels)} labels.")
        for pred, label in zip(preds, labels):
            self._accumulator.update(pred, label > 0.5)

    def _gathered_accumulator(self) -> PaperMetricAccumulator:
        import ignite.distributed as idist

        if idist.get_world_size() <= 1:
            return self._accumulator
        records = torch.as_tensor(self._accumulator.records(), device=idist.device())
        gathered = evenly_divisible_all_gather(records, concat=True)
        accumulator = PaperMetricAccumulator()
        accumulator.extend_records(gathered.cpu().numpy())
        return accumulator

    def compute(self) -> Any:
        """
        Returns:
            the dict of :meth:`PaperMetricAccumulator.aggregate` over all images seen since the last reset.

        Raises:
            NotComputableError: when no image has been seen.
        """
        accumulator = self._gathered_accumulator()
        if len(accumulator) == 0:
            raise NotComputableError(f"{self.__class__.__name__} must have at least one image before compute().")
        return accumulator.aggregate()

    def completed(self, engine: Engine, name: str) -> None:
        """
        Store the result in ``engine.state.metrics``: a dict result under ``name`` and under each of its keys,
        any other result under ``name`` only.

        Args:
            engine: the engine the metric is attached to.
            name: the name given to ``attach``.
        """
        result = self.compute()
        if isinstance(result, Mapping):
            if name in result:
                raise ValueError(f"metric name {name!r} conflicts with the result keys {list(result)}.")
            for key, value in result.items():
                engine.state.metrics[key] = value
            engine.state.metrics[name] = dict(result)
        else:
            engine.state.metrics[name] = result


class PaperDice(PaperMetrics):
    """
    The paper's mean Dice (mean over the 256 thresholds of the image-averaged Dice curve) as a single float,
    for use as MONAI key metric (e.g. ``key_val_metric={"val_dice": PaperDice()}``).

    Inputs are those of :class:`PaperMetrics` (probabilities in ``[0, 1]``, binary labels).
    """

    def compute(self) -> float:
        """
        Returns:
            the paper's mean Dice.
        """
        return float(super().compute()["dice"])


class ClassPaperDice(Metric):
    """
    The paper's mean Dice of each infection class, GGO and consolidation, each scored as a binary map (the paper's
    multi-class protocol), and their mean as the single number for MONAI's key metric.

    ``update`` receives ``(y_pred, y)``: ``y_pred`` the class probabilities ``(B, 2, H, W)`` (GGO, consolidation)
    and ``y`` the one-hot classes ``(B, 3, H, W)`` (background, GGO, consolidation), batched or decollated. Once
    attached, ``engine.state.metrics`` also holds ``ggo_dice`` and ``consolidation_dice``.
    """

    CLASSES = ("ggo", "consolidation")

    def __init__(
        self,
        output_transform: Callable = from_engine(["pred", "label"]),
        device: str | torch.device = torch.device("cpu"),
    ) -> None:
        self._metrics = {name: PaperMetrics() for name in self.CLASSES}
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        for metric in self._metrics.values():
            metric.reset()

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        preds, labels = output
        if isinstance(preds, torch.Tensor) and preds.ndim == 3:
            preds, labels = [preds], [labels]
        for pred, label in zip(preds, labels):
            for c, name in enumerate(self.CLASSES):
                self._metrics[name].update((pred[c : c + 1], label[c + 1 : c + 2]))

    def per_class(self) -> dict[str, float]:
        """``{"ggo_dice": ..., "consolidation_dice": ...}`` over the images seen since the last reset."""
        return {f"{name}_dice": float(metric.compute()["dice"]) for name, metric in self._metrics.items()}

    def compute(self) -> float:
        values = self.per_class()
        return float(sum(values.values()) / len(values))

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        engine.state.metrics.update(self.per_class())
