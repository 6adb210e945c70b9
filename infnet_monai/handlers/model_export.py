"""Ignite handler that exports the best model as a self-describing checkpoint during training."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch.nn as nn
from ignite.engine import Engine, Events

from infnet_monai.io.checkpoint import save_model

__all__ = ["BestModelExporter"]

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """Numbers and strings survive ``weights_only`` loading; anything else is stored as its string."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class BestModelExporter:
    """Attach to a validation evaluator: whenever ``metric_name`` improves, write ``path`` with :func:`save_model`.

    The checkpoint records the network configuration, the preprocessing, the validation metrics of that epoch, the
    trainer epoch and iteration, the wall time since training started and any ``metadata`` given (e.g. the command
    and seed). A JSON copy of the metrics is written next to it (``<path>.json``).

    Args:
        network: the network being trained.
        network_kwargs: keyword arguments that rebuild it.
        path: destination checkpoint file.
        metric_name: validation metric to maximise (a key of ``engine.state.metrics``).
        trainer: the trainer, for epoch / iteration bookkeeping (optional).
        preprocessing: stored in the checkpoint.
        metadata: stored in the checkpoint.
        fp16: store weights in half precision.
        load_existing: when resuming, start from the best value recorded next to an existing ``path`` (its
            ``.json``), so a resumed run never replaces a better model with a worse one.
        architecture: the network class recorded in the checkpoint (see :func:`~infnet_monai.io.save_model`).
        select: ``"best"`` (above) or ``"last"``: export at every validation, so the file holds the last validated
            epoch. For a final fit whose validation slices are also trained on, where the best epoch means nothing.
    """

    def __init__(
        self,
        network: nn.Module,
        network_kwargs: dict,
        path: str,
        metric_name: str = "dice",
        trainer: Engine | None = None,
        preprocessing: dict | None = None,
        metadata: dict | None = None,
        fp16: bool = True,
        load_existing: bool = False,
        architecture: str = "InfNet",
        select: str = "best",
    ) -> None:
        if select not in ("best", "last"):
            raise ValueError(f"select must be 'best' or 'last', got {select!r}.")
        self.select = select
        self.network = network
        self.network_kwargs = dict(network_kwargs)
        self.path = Path(path)
        self.metric_name = metric_name
        self.trainer = trainer
        self.preprocessing = dict(preprocessing or {})
        self.metadata = dict(metadata or {})
        self.fp16 = fp16
        self.architecture = architecture
        self.best: float | None = None
        self._start = time.time()
        sidecar = self.path.with_suffix(self.path.suffix + ".json")
        if load_existing and self.path.is_file() and sidecar.is_file():
            recorded = json.loads(sidecar.read_text()).get("validation", {}).get(metric_name)
            if recorded is not None:
                self.best = float(recorded)
                logger.info("resuming: best %s so far %.4f (%s)", metric_name, self.best, self.path)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = dict(engine.state.metrics)
        if self.metric_name not in metrics:
            raise KeyError(
                f"metric '{self.metric_name}' not computed by the evaluator; available: {sorted(metrics)}."
            )
        value = float(metrics[self.metric_name])
        if self.select == "best" and self.best is not None and value <= self.best:
            return
        self.best = value
        meta = dict(self.metadata)
        meta["validation"] = _plain({k: v for k, v in metrics.items() if not isinstance(v, dict)})
        meta["selected_by"] = self.metric_name if self.select == "best" else "last epoch"
        if self.trainer is not None:
            meta["epoch"] = int(self.trainer.state.epoch)
            meta["iteration"] = int(self.trainer.state.iteration)
        meta["train_seconds"] = round(time.time() - self._start, 1)
        save_model(self.path, self.network, self.network_kwargs, self.preprocessing, _plain(meta), fp16=self.fp16, architecture=self.architecture)
        self.path.with_suffix(self.path.suffix + ".json").write_text(json.dumps(_plain(meta), indent=2))
        logger.info("%s %s=%.4f: exported %s", "new best" if self.select == "best" else "epoch", self.metric_name, value, self.path)
