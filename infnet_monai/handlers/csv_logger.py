"""Ignite handler writing one CSV row per training epoch: loss, learning rate, validation metrics, wall time."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["EpochCSVLogger"]


class EpochCSVLogger:
    """Append ``epoch, iteration, train_loss, lr, seconds, <validation metrics...>`` rows to ``path``.

    The training loss is the mean of the iteration losses of the epoch. Validation metrics are those the evaluator
    computed after this epoch (empty cells on epochs without validation). The file is appended to, so a resumed run
    continues the same log; the header is written when the file is new.

    Args:
        path: CSV file.
        evaluator: the validation evaluator (optional).
        optimizer: for the learning rate column (optional).
        metric_names: validation metrics to log, in this order (default: the paper metrics and plain Dice/IoU).
    """

    def __init__(
        self,
        path: str,
        evaluator: Engine | None = None,
        optimizer=None,
        metric_names: tuple[str, ...] = (
            "dice", "sensitivity", "specificity", "s_measure", "e_measure", "mae", "dice_at_0.5", "iou_at_0.5",
        ),
    ) -> None:
        self.path = Path(path)
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.metric_names = tuple(metric_names)
        self._losses: list[float] = []
        self._start = time.time()
        self._last_val_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, (list, tuple)) and output:  # MONAI engines decollate the batch by default
            output = output[0]
        loss = output.get("loss") if isinstance(output, dict) else None
        if loss is not None:
            self._losses.append(float(loss))

    def _write(self, engine: Engine) -> None:
        row = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "train_loss": (sum(self._losses) / len(self._losses)) if self._losses else math.nan,
            "lr": self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else math.nan,
            "seconds": round(time.time() - self._start, 1),
        }
        self._losses = []
        val = {}
        if self.evaluator is not None and getattr(self.evaluator.state, "metrics", None):
            # the evaluator's metrics belong to this epoch only if it ran since the last row
            if self.evaluator.state.iteration and self.evaluator.state.epoch != self._last_val_epoch:
                val = self.evaluator.state.metrics
        for name in self.metric_names:
            row[f"val_{name}"] = val.get(name, "") if val else ""
        self._last_val_epoch = self.evaluator.state.epoch if self.evaluator is not None else -1
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
