"""The settings of the Semi-Inf-Net propagation (:class:`~infnet_monai.engines.RandomSelectionPropagation`) and the
named random streams its schedule draws from.

:class:`PropagationConfig` holds the schedule of stages 1 and 2 (groups, steps, learning rates, the safeguards),
checked when made; :class:`FinetuneStage` stage 3. :func:`stream_seed` derives every random draw from the run's one
user seed (:data:`SEED_STREAMS`), so that a resumed run draws what an uninterrupted one draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.engines import SupervisedTrainer

from infnet_monai.utils.validation import check_flag, check_temperature

__all__ = ["SEED_STREAMS", "FinetuneStage", "PropagationConfig", "stream_seed"]

SEED_STREAMS: dict[str, tuple[int, int]] = {
    "grouping": (1, 0),
    "propagate_batches": (100003, 0),
    "pseudo_order": (7919, 0),
    "pseudo_labeled_mix": (7919, 104729),
    "pseudo_batches": (100003, 50021),
}
"""The named random streams of a run, each ``name: (multiplier, offset)``; see :func:`stream_seed`.

- ``grouping``: the one shuffle of the unlabeled slices into groups.
- ``propagate_batches``: per stage-1 group, which pool slices make its batches and their augmentation.
- ``pseudo_order``: per pass over the pseudo-labels in stage 2, their order (cut into consecutive steps).
- ``pseudo_labeled_mix``: per stage-2 step, which labeled slices join it (``pseudo_labeled_fraction`` > 0).
- ``pseudo_batches``: per stage-2 step, the batches and their augmentation.

Why separate streams, each drawn from a fresh generator seeded by ``(user seed, stream, step)``: a run resumed from
``state.pt`` draws exactly what an uninterrupted run draws without saving any generator state, and a setting that
only one stream reads (e.g. ``pseudo_labeled_fraction``) leaves every other draw unchanged. In the two ``*_batches``
streams the one integer seeds two different generators, Python's ``random.Random`` (batch selection) and the MONAI
transforms' numpy generators (augmentation, via ``set_random_state``).

The multipliers are primes that spread the user seeds apart; the offsets keep the streams that share a multiplier
apart (stage 1 below 50021 groups, stage 2 below 49982 steps and 104729 passes). The numbers are those of the
first release, so a given seed keeps giving the same groups, batches and pseudo-labels. One wrinkle kept for that
reason: with user seed 0 the first draw of ``grouping``, ``propagate_batches`` and ``pseudo_order`` all start from 0
(they shuffle different lists, so the draws do not repeat one another); any other seed keeps every stream apart.
"""


def stream_seed(stream: str, seed: int, index: int = 0) -> int:
    """The integer seed of draw ``index`` of the named random stream, derived from the run's one user ``seed``.

    Args:
        stream: a key of :data:`SEED_STREAMS`.
        seed: the user seed (:attr:`PropagationConfig.seed`).
        index: the step the draw belongs to (group, stage-2 step or pass; 0 for ``grouping``).

    Returns:
        ``seed * multiplier + offset + index``.
    """
    if stream not in SEED_STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}; expected one of {sorted(SEED_STREAMS)}.")
    multiplier, offset = SEED_STREAMS[stream]
    return int(seed) * multiplier + offset + int(index)


def _number(
    name: str, value: Any, kind: type, low: float | None = None, high: float | None = None, *,
    low_open: bool = False, high_open: bool = False,
) -> Any:
    """``value`` as ``kind`` (int or float) within the bounds, else a ``ValueError`` naming the config field."""
    limits = []
    if low is not None:
        limits.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        limits.append(f"{'<' if high_open else '<='} {high}")
    what = f"PropagationConfig.{name} must be {'an integer' if kind is int else 'a finite number'}"
    what += f" {' and '.join(limits)}" if limits else ""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}, got {value!r}.")
    if not math.isfinite(value) or (kind is int and int(value) != value):
        raise ValueError(f"{what}, got {value!r}.")
    number = kind(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        raise ValueError(f"{what}, got {value!r}.")
    return number


@dataclass(frozen=True)
class PropagationConfig:
    """Settings of :class:`~infnet_monai.engines.RandomSelectionPropagation`, checked when made (``ValueError`` naming the field).

    The defaults are the paper's schedule with the safeguards off. Numbers are converted to ``int`` / ``float``,
    sequences to tuples and mappings copied, so a config written in a bundle JSON compares equal to one made in
    Python.
    """

    output_dir: str | os.PathLike
    """Where the state (``propagation/state.pt``), the pseudo-labels and the exported checkpoints go."""
    network_kwargs: Mapping[str, Any]
    """Keyword arguments that rebuild the network (stored in exported checkpoints; ``in_channels`` is read)."""
    initial_model: str | os.PathLike | None = None
    """Checkpoint of the supervised Inf-Net the propagation starts from; required for a fresh run, not to resume."""
    group_size: int = 5
    """K, the number of unlabeled slices added per propagation step (5 in the paper)."""
    num_groups: int | None = None
    """Propagate over the first ``num_groups`` shuffled groups only (``None`` or 0: all of them). Slices outside those
    groups are never used."""
    seed: int = 0
    """The one user seed every random stream derives from (:data:`SEED_STREAMS`)."""
    steps_per_group: int = 1
    """Optimizer iterations of fine-tuning after each group (each over ``train_rates``); 0 only predicts."""
    batch_size: int = 8
    """Slices per iteration in stages 1 and 2."""
    learning_rate: float = 3e-4
    """AdamW learning rate of stage 1 (constant, 3e-4 in the reference code) and the peak of stage 2."""
    min_learning_rate: float = 1e-5
    """End of stage 2's cosine schedule, in [0, ``learning_rate``]."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    spatial_size: int = 352
    """Training size (pixels) of stages 1 and 2."""
    predict_size: int | None = None
    """Size (pixels) at which pseudo-labels are predicted (``None``: ``preprocessing["spatial_size"]``, else
    ``spatial_size``); predictions are resized back to each slice's own size."""
    train_rates: Sequence[float] = (1.0,)
    """Multi-scale rates of stages 1 and 2 (see :class:`~infnet_monai.engines.MultiScaleIteration`)."""
    clip_value: float | None = 0.5
    """Gradient clipping by value (``None`` or 0 disables)."""
    pseudo_epochs: int = 1
    """Passes over all kept pseudo-labeled slices in stage 2 (0 skips the stage)."""
    pseudo_chunk: int = 25
    """Stage 2 iterations per step (a step is the unit of checkpointing)."""
    pseudo_label_temperature: float = 1.0
    """Logit temperature of the pseudo-labels (1: the model's sigmoid, as in the paper; below 1 sharper).
    Confidences are measured on the sharpened maps."""
    min_confidence: float = 0.0
    """Pseudo-labeled slices whose :func:`~infnet_monai.engines.pseudo_labels.pseudo_label_confidence` is below this, in [0, 1], stay out of the training
    pools of stages 1 and 2 (0 keeps all, as in the paper). Their PNGs are still written."""
    pseudo_labeled_fraction: float = 0.0
    """Share of each stage-2 batch filled with labeled slices, in [0, 1) (0: pseudo-labeled slices only, as in the
    paper). Stage 2 still makes ``pseudo_epochs`` passes over the kept pseudo-labels."""
    amp: bool = False
    """Mixed precision (used on CUDA only)."""
    num_workers: int = 0
    """Data-loader workers."""
    transform_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of :func:`~infnet_monai.transforms.train_slice_transforms`."""
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    """How inputs are prepared, stored in exported checkpoints (as in :func:`~infnet_monai.io.save_model`)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Provenance stored in exported checkpoints; numbers and strings only."""

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not self.output_dir or not isinstance(self.output_dir, (str, os.PathLike)):
            raise ValueError(f"PropagationConfig.output_dir must be a folder path, got {self.output_dir!r}.")
        put("output_dir", Path(self.output_dir))
        put("initial_model", str(self.initial_model) if self.initial_model else None)
        for name in ("network_kwargs", "transform_kwargs", "preprocessing", "metadata"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ValueError(f"PropagationConfig.{name} must be a mapping, got {type(value).__name__}.")
            put(name, dict(value))
        for name, low in (("group_size", 1), ("steps_per_group", 0), ("batch_size", 1), ("spatial_size", 1),
                          ("pseudo_epochs", 0), ("pseudo_chunk", 1), ("num_workers", 0)):
            put(name, _number(name, getattr(self, name), int, low))
        put("seed", _number("seed", self.seed, int))
        put("num_groups", None if self.num_groups in (None, 0) else _number("num_groups", self.num_groups, int, 0))
        if self.predict_size is not None:
            put("predict_size", _number("predict_size", self.predict_size, int, 1))
        put("learning_rate", _number("learning_rate", self.learning_rate, float, 0, low_open=True))
        put("min_learning_rate", _number("min_learning_rate", self.min_learning_rate, float, 0, self.learning_rate))
        put("weight_decay", _number("weight_decay", self.weight_decay, float, 0))
        if self.clip_value is not None:
            put("clip_value", _number("clip_value", self.clip_value, float, 0))
        rates = self.train_rates
        if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or not rates:
            raise ValueError(f"PropagationConfig.train_rates must be a non-empty list of rates > 0, got {rates!r}.")
        put("train_rates", tuple(_number("train_rates", r, float, 0, low_open=True) for r in self.train_rates))
        try:
            put("pseudo_label_temperature", check_temperature(self.pseudo_label_temperature))
        except ValueError as e:
            raise ValueError(f"PropagationConfig.pseudo_label_{e}") from e
        put("min_confidence", _number("min_confidence", self.min_confidence, float, 0, 1))
        put("pseudo_labeled_fraction",
            _number("pseudo_labeled_fraction", self.pseudo_labeled_fraction, float, 0, 1, high_open=True))
        put("amp", check_flag(self.amp, "PropagationConfig.amp"))


@dataclass(frozen=True)
class FinetuneStage:
    """Stage 3 of :class:`~infnet_monai.engines.RandomSelectionPropagation`: fine-tuning on the labeled slices, resumable by epoch.

    Attributes:
        trainer: the stage-3 trainer (a MONAI ``SupervisedTrainer`` built by the bundle config).
        resume: the objects its ``CheckpointSaver`` saves (network, optimizer, lr_scheduler, trainer); when a
            ``<prefix>_checkpoint_epoch=N.pt`` exists in ``checkpoint_dir`` they are restored from the latest.
        checkpoint_dir: folder of those checkpoints (``None``: the config's ``output_dir``).
        prefix: their file prefix.
    """

    trainer: SupervisedTrainer
    resume: Mapping[str, Any] | None = None
    checkpoint_dir: str | os.PathLike | None = None
    prefix: str = "resume"
