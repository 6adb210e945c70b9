"""Tests of the ignite wrappers of the Inf-Net paper protocol (infnet_monai.metrics.ignite)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError

from infnet_monai.metrics import PaperDice, PaperMetricAccumulator, PaperMetrics


def _batches(num_batches: int = 2, batch_size: int = 2, size: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(num_batches):
        label = np.zeros((batch_size, 1, size, size), dtype=np.float32)
        for b in range(batch_size):
            r, c = rng.integers(0, size - 4, 2)
            label[b, 0, r : r + 4, c : c + 5] = 1.0
        prob = np.clip(0.6 * label + 0.5 * rng.random(label.shape), 0, 1).astype(np.float32)
        batches.append((prob, label))
    return batches


def _reference(batches: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    acc = PaperMetricAccumulator()
    for prob, label in batches:
        for p, g in zip(prob, label):
            acc.update(p[0].astype(np.float64), g[0] > 0.5)
    return acc.aggregate()


def test_paper_metrics_batched_output() -> None:
    batches = _batches()

    def step(engine: Engine, batch: tuple[np.ndarray, np.ndarray]) -> dict[str, torch.Tensor]:
        return {"pred": torch.from_numpy(batch[0]), "label": torch.from_numpy(batch[1])}

    engine = Engine(step)
    PaperMetrics().attach(engine, "paper")
    PaperDice().attach(engine, "val_dice")
    engine.run(batches, max_epochs=1)

    expected = _reference(batches)
    assert expected["num_images"] == 4
    metrics = engine.state.metrics
    assert metrics["paper"] == expected
    for key, value in expected.items():
        assert metrics[key] == value
    assert isinstance(metrics["val_dice"], float)
    assert metrics["val_dice"] == expected["dice"]


def test_paper_metrics_decollated_output() -> None:
    batches = _batches(num_batches=1, batch_size=3)

    def step(engine: Engine, batch: tuple[np.ndarray, np.ndarray]) -> list[dict[str, torch.Tensor]]:
        prob, label = batch
        return [{"pred": torch.from_numpy(p), "label": torch.from_numpy(g)} for p, g in zip(prob, label)]

    engine = Engine(step)
    PaperMetrics().attach(engine, "paper")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["paper"] == _reference(batches)


def test_paper_metrics_errors() -> None:
    metric = PaperMetrics()
    with pytest.raises(NotComputableError):
        metric.compute()
    with pytest.raises(ValueError, match="one channel"):
        metric.update((torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)))
    with pytest.raises(ValueError, match="labels"):
        metric.update((torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4)))

    engine = Engine(lambda e, b: {"pred": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 1, 4, 4)})
    PaperMetrics().attach(engine, "dice")
    with pytest.raises(ValueError, match="conflicts"):
        engine.run([0], max_epochs=1)
