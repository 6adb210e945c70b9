"""Semi-Inf-Net: random-selection propagation of pseudo-labels over unlabeled slices, resumable at every step.

The paper's schedule (Fan et al., IEEE TMI 2020, section III-D), in three stages:

1. ``propagate``: the unlabeled slices are shuffled into groups of K. For each group the current model predicts soft
   (not thresholded) pseudo-labels and their edge maps, the group joins the training pool (labeled + pseudo-labeled
   slices so far), and the model is fine-tuned on the pool.
2. ``pseudo``: the model trains on all pseudo-labeled slices (optionally mixed with a fraction of labeled slices).
3. ``finetune``: the model is fine-tuned on the labeled slices (a MONAI ``SupervisedTrainer`` built by the bundle
   config, with validation and best-model export).

Stages 1 and 2 are ignite ``Engine`` runs whose iterations are *steps* (one group, or one chunk of pseudo-labeled
slices). After every step the network, the optimizer and the progress are written atomically to one file
(``<output_dir>/propagation/state.pt``, mirrored as readable JSON in ``state.json``), and every pseudo-label is a PNG
on disk, so a run interrupted at any moment resumes at the next step, in the same process or in a later session.

Three safeguards beyond the paper, all off by default (the paper's schedule): ``pseudo_label_temperature`` below 1
sharpens the soft pseudo-labels (``sigmoid(logit / T)``, entropy minimisation) so the student is not taught the
teacher's hesitation; ``min_confidence`` leaves out of the training pools the pseudo-labels the model was unsure about
(mean ``|2p - 1|`` over the slice below the threshold); ``pseudo_labeled_fraction`` keeps labeled slices in every
stage-2 batch so the model does not drift towards its own errors on unlabeled slices from other scanners.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer

from infnet_monai.engines.iteration import MultiScaleIteration
from infnet_monai.inferers.slices import SlicePredictor, read_slice, write_png_atomic
from infnet_monai.io.checkpoint import atomic_torch_save, load_checkpoint, network_state_dict, save_model
from infnet_monai.losses import DeepSupervisionLoss
from infnet_monai.transforms.slices import train_slice_transforms
from infnet_monai.utils.files import atomic_write
from infnet_monai.utils.validation import check_temperature

__all__ = ["PROPAGATION_FORMAT", "STAGES", "RandomSelectionPropagation", "pseudo_label_confidence", "soft_edge_map"]

logger = logging.getLogger(__name__)

PROPAGATION_FORMAT = "infnet-monai-propagation/1"
STAGES = ("propagate", "pseudo", "finetune", "done")


def _cross_max(p: torch.Tensor) -> torch.Tensor:
    # max over the pixel and its 4 neighbours (outside the image counts as 0, as scipy's default border)
    padded = F.pad(p, (1, 1, 1, 1))
    shifts = [padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2],
              padded[..., 1:-1, 2:]]
    return torch.stack(shifts).amax(0)


def soft_edge_map(prob: torch.Tensor | np.ndarray, width: int = 1) -> np.ndarray:
    """Edge map of a soft segmentation: grey dilation minus grey erosion (a morphological gradient).

    The structuring element is the 4-connected cross, applied ``width`` times. On a binary mask this reproduces the
    labeled edge maps of COVID-SemiSeg (the dilated minus the eroded mask, a 2-pixel band on the boundary, which
    scipy's default cross matches to within 0.5% of pixels); on a soft map it is a soft band of the same width.

    Args:
        prob: ``(H, W)`` probabilities in [0, 1].
        width: number of dilations and erosions.

    Returns:
        ``(H, W)`` float32 edge strength in [0, 1].
    """
    p = torch.as_tensor(np.asarray(prob, dtype=np.float32))
    dilated, eroded = p, p
    for _ in range(width):
        dilated = _cross_max(dilated)
        eroded = -_cross_max(-eroded)
    return (dilated - eroded).clamp(0, 1).numpy()


def pseudo_label_confidence(prob: torch.Tensor | np.ndarray) -> float:
    """How decisive a soft pseudo-label is: the mean of ``|2p - 1|`` over the slice (0 all unsure, 1 all certain)."""
    p = np.asarray(prob, dtype=np.float64)
    return float(np.abs(2.0 * p - 1.0).mean()) if p.size else 0.0


def _file_stem(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(item_id)).strip("._") or "slice"


def _check_propagation_options(
    group_size, steps_per_group, batch_size, pseudo_epochs, pseudo_chunk, has_labeled: bool, has_unlabeled: bool,
    pseudo_label_temperature, min_confidence, pseudo_labeled_fraction,
) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}.")
    if steps_per_group < 0 or batch_size < 1 or pseudo_epochs < 0 or pseudo_chunk < 1:
        raise ValueError("steps_per_group and pseudo_epochs must be >= 0, batch_size and pseudo_chunk >= 1.")
    if not has_unlabeled:
        raise ValueError("no unlabeled slices to propagate over.")
    try:
        check_temperature(pseudo_label_temperature)
    except ValueError as e:
        raise ValueError(f"pseudo_label_{e}") from e
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}.")
    if not 0.0 <= pseudo_labeled_fraction < 1.0:
        raise ValueError(f"pseudo_labeled_fraction must be in [0, 1), got {pseudo_labeled_fraction}.")
    if pseudo_labeled_fraction > 0 and not has_labeled:
        raise ValueError("pseudo_labeled_fraction > 0 needs labeled slices.")


class RandomSelectionPropagation:
    """Run (or resume) the Semi-Inf-Net schedule; see the module docstring.

    Args:
        network: the Inf-Net being trained (already on ``device``). Its weights at stage 1 come from
            ``initial_model``.
        network_kwargs: keyword arguments that rebuild ``network`` (stored in exported checkpoints).
        labeled: labeled training entries ``{"image", "label", "edge", "id"}`` (never the validation slices).
        unlabeled: unlabeled entries ``{"image", "id"}``.
        output_dir: where the state, the pseudo-labels and the exported checkpoints go.
        initial_model: checkpoint of the supervised Inf-Net the propagation starts from (required for a fresh run).
        group_size: K, the number of unlabeled slices added per propagation step (5 in the paper).
        num_groups: propagate over the first ``num_groups`` shuffled groups only (``None``: all of them). Slices
            outside those groups are never used.
        seed: seed of the grouping and of the sampling of each step.
        steps_per_group: optimizer iterations of fine-tuning after each group (each over ``train_rates``).
        batch_size: slices per iteration.
        learning_rate: AdamW learning rate of stage 1 (constant, 3e-4 in the reference code) and the peak of stage 2.
        min_learning_rate: end of stage 2's cosine schedule.
        weight_decay: AdamW weight decay.
        spatial_size: training size of stages 1 and 2.
        predict_size: size at which pseudo-labels are predicted (default: the network's size in ``preprocessing``,
            else ``spatial_size``); predictions are resized back to each slice's own size.
        train_rates: multi-scale rates of stages 1 and 2 (see :class:`MultiScaleIteration`).
        clip_value: gradient clipping by value.
        pseudo_epochs: passes over all pseudo-labeled slices in stage 2 (0 skips the stage).
        pseudo_chunk: stage 2 iterations per step (a step is the unit of checkpointing).
        pseudo_label_temperature: logit temperature of the pseudo-labels (1: the model's sigmoid, as in the paper;
            below 1 sharper). Confidences are measured on the sharpened maps.
        min_confidence: pseudo-labeled slices whose :func:`pseudo_label_confidence` is below this stay out of the
            training pools of stages 1 and 2 (0 keeps all, as in the paper). Their PNGs are still written.
        pseudo_labeled_fraction: share of each stage-2 batch filled with labeled slices, in [0, 1) (0: pseudo-labeled
            slices only, as in the paper). Stage 2 still makes ``pseudo_epochs`` passes over the kept pseudo-labels.
        finetune_trainer: the stage-3 trainer (``None`` stops after stage 2).
        finetune_resume: objects the stage-3 trainer's ``CheckpointSaver`` saves (network, optimizer, lr_scheduler,
            trainer); when a ``<prefix>_checkpoint_epoch=N.pt`` exists in ``finetune_dir``, they are restored from it.
        finetune_dir: folder of the stage-3 resume checkpoints (default ``output_dir``).
        finetune_prefix: their file prefix.
        device: torch device.
        amp: mixed precision (CUDA only).
        preprocessing: stored in exported checkpoints (as in :func:`~infnet_monai.io.save_model`).
        metadata: provenance stored in exported checkpoints.
        transform_kwargs: extra keyword arguments of :func:`~infnet_monai.transforms.train_slice_transforms`.
        num_workers: data-loader workers.
    """

    def __init__(
        self,
        network: nn.Module,
        network_kwargs: dict,
        labeled: Sequence[dict],
        unlabeled: Sequence[dict],
        output_dir: str | os.PathLike,
        initial_model: str | os.PathLike | None = None,
        group_size: int = 5,
        num_groups: int | None = None,
        seed: int = 0,
        steps_per_group: int = 1,
        batch_size: int = 8,
        learning_rate: float = 3e-4,
        min_learning_rate: float = 1e-5,
        weight_decay: float = 1e-4,
        spatial_size: int = 352,
        predict_size: int | None = None,
        train_rates: Sequence[float] = (1.0,),
        clip_value: float | None = 0.5,
        pseudo_epochs: int = 1,
        pseudo_chunk: int = 25,
        pseudo_label_temperature: float = 1.0,
        min_confidence: float = 0.0,
        pseudo_labeled_fraction: float = 0.0,
        finetune_trainer: SupervisedTrainer | None = None,
        finetune_resume: dict[str, Any] | None = None,
        finetune_dir: str | os.PathLike | None = None,
        finetune_prefix: str = "resume",
        device: str | torch.device = "cpu",
        amp: bool = False,
        preprocessing: dict | None = None,
        metadata: dict | None = None,
        transform_kwargs: dict | None = None,
        num_workers: int = 0,
    ) -> None:
        _check_propagation_options(
            group_size, steps_per_group, batch_size, pseudo_epochs, pseudo_chunk, bool(labeled), bool(unlabeled),
            pseudo_label_temperature, min_confidence, pseudo_labeled_fraction,
        )
        self.network = network
        self.network_kwargs = dict(network_kwargs)
        # only the keys pseudo-labeled entries also have, so mixed batches collate
        self.labeled = [{k: d[k] for k in ("image", "label", "edge", "id") if k in d} for d in labeled]
        self.unlabeled = {str(d["id"]): dict(d) for d in unlabeled}
        if len(self.unlabeled) != len(unlabeled):
            raise ValueError("unlabeled entries must have unique ids.")
        self.output_dir = Path(output_dir)
        self.state_dir = self.output_dir / "propagation"
        self.pseudo_dir = self.state_dir / "pseudo_labels"
        self.initial_model = str(initial_model) if initial_model else ""
        self.group_size = int(group_size)
        self.num_groups = None if num_groups in (None, 0) else int(num_groups)
        self.seed = int(seed)
        self.steps_per_group = int(steps_per_group)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.min_learning_rate = float(min_learning_rate)
        self.weight_decay = float(weight_decay)
        self.spatial_size = int(spatial_size)
        self.predict_size = int(predict_size or (preprocessing or {}).get("spatial_size", spatial_size))
        self.train_rates = tuple(float(r) for r in train_rates)
        self.clip_value = clip_value
        self.pseudo_epochs = int(pseudo_epochs)
        self.pseudo_chunk = int(pseudo_chunk)
        self.min_confidence = float(min_confidence)
        self.pseudo_label_temperature = float(pseudo_label_temperature)
        self.pseudo_labeled_fraction = float(pseudo_labeled_fraction)
        self.finetune_trainer = finetune_trainer
        self.finetune_resume = finetune_resume
        self.finetune_dir = Path(finetune_dir) if finetune_dir else self.output_dir
        self.finetune_prefix = finetune_prefix
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.preprocessing = dict(preprocessing or {})
        self.metadata = dict(metadata or {})
        self.transform_kwargs = dict(transform_kwargs or {})
        self.num_workers = int(num_workers)
        self.state: dict[str, Any] = {}
        self._build_engines()

    def _build_engines(self) -> None:
        """The optimizer and the ignite engines of stages 1 and 2 (attach handlers to them, e.g. a progress bar,
        before calling :meth:`run`); every iteration saves the state."""
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        self.propagate_engine = Engine(self._propagate_step)
        self.pseudo_engine = Engine(self._pseudo_step)
        for engine in (self.propagate_engine, self.pseudo_engine):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._save_state)

    # ------------------------------------------------------------------ state on disk
    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.pt"

    def _config(self) -> dict[str, Any]:
        # what must not change between a run and its resumption
        return {
            "group_size": self.group_size,
            "num_groups": self.num_groups,
            "seed": self.seed,
            "unlabeled": len(self.unlabeled),
            "pseudo_epochs": self.pseudo_epochs,
            "pseudo_chunk": self.pseudo_chunk,
            "batch_size": self.batch_size,
            "min_confidence": self.min_confidence,
            "pseudo_label_temperature": self.pseudo_label_temperature,
            "pseudo_labeled_fraction": self.pseudo_labeled_fraction,
        }

    def _make_groups(self) -> list[list[str]]:
        ids = sorted(self.unlabeled)
        random.Random(self.seed).shuffle(ids)
        groups = [ids[i : i + self.group_size] for i in range(0, len(ids), self.group_size)]
        return groups[: self.num_groups] if self.num_groups else groups

    def _pseudo_entries(self, ids: Sequence[str]) -> list[dict]:
        out = []
        for i in ids:
            stem = _file_stem(i)
            out.append(
                {
                    "image": self.unlabeled[i]["image"],
                    "label": str(self.pseudo_dir / f"{stem}.png"),
                    "edge": str(self.pseudo_dir / f"{stem}_edge.png"),
                    "id": i,
                }
            )
        return out

    def _kept_ids(self, ids: Sequence[str]) -> list[str]:
        # pseudo-labeled slices decisive enough to train on (all of them when min_confidence is 0)
        confidence = self.state.get("confidence", {})
        return [i for i in ids if confidence.get(i, 1.0) >= self.min_confidence]

    def _pseudo_batch_split(self) -> tuple[int, int]:
        # (pseudo-labeled, labeled) slices per stage-2 step
        per_step = self.pseudo_chunk * self.batch_size
        labeled = min(per_step - 1, round(per_step * self.pseudo_labeled_fraction))
        return per_step - labeled, labeled

    def _new_state(self) -> dict[str, Any]:
        if not self.initial_model:
            raise ValueError(
                "initial_model is required to start a propagation run: train Inf-Net on the labeled slices first "
                "(configs/train.json) and pass its model.pt."
            )
        checkpoint = load_checkpoint(self.initial_model)
        state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
        try:
            self.network.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(
                f"initial_model '{self.initial_model}' does not match the configured network: {e}"
            ) from e
        groups = self._make_groups()
        return {
            "format": PROPAGATION_FORMAT,
            "config": self._config(),
            "initial_model": self.initial_model,
            "stage": "propagate" if groups else "pseudo",
            "groups": groups,
            "groups_done": 0,
            "pseudo_steps": None,  # set when stage 2 starts, from the pseudo-labels kept
            "pseudo_steps_done": 0,
            "confidence": {},
            "seconds": {"propagate": 0.0, "pseudo": 0.0, "finetune": 0.0},
            "history": [],
        }

    def load_state(self) -> bool:
        """Restore the network, the optimizer and the progress from ``state.pt``; False when there is none."""
        if not self.state_path.is_file():
            return False
        try:
            saved = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise RuntimeError(
                f"propagation state '{self.state_path}' cannot be read ({e}); delete the '{self.state_dir}' folder "
                "to start over."
            ) from e
        if not isinstance(saved, dict) or saved.get("format") != PROPAGATION_FORMAT:
            raise RuntimeError(f"'{self.state_path}' is not a propagation state ({PROPAGATION_FORMAT}).")
        # states written before the safeguards existed ran without them
        defaults = {"min_confidence": 0.0, "pseudo_label_temperature": 1.0, "pseudo_labeled_fraction": 0.0}
        saved["config"] = {**defaults, **saved["config"]}
        if saved["config"] != self._config():
            raise ValueError(
                f"the propagation run in '{self.state_dir}' was started with {saved['config']}, which differs from "
                f"the current settings {self._config()}; use the same settings to resume, or another output_dir."
            )
        self.network.load_state_dict(saved.pop("network"))
        self.optimizer.load_state_dict(saved.pop("optimizer"))
        self.state = saved
        logger.info(
            "resuming propagation from %s: stage %s, %d/%d groups, %d/%s stage-2 steps",
            self.state_path, saved["stage"], saved["groups_done"], len(saved["groups"]),
            saved["pseudo_steps_done"], saved["pseudo_steps"],
        )
        return True

    def _save_state(self, engine: Engine | None = None) -> None:
        payload = dict(self.state)
        payload["network"] = {k: v.detach().cpu() for k, v in network_state_dict(self.network).items()}
        payload["optimizer"] = self.optimizer.state_dict()
        atomic_torch_save(payload, self.state_path)
        summary = {k: v for k, v in self.state.items() if k not in ("groups", "history", "confidence")}
        summary["num_groups"] = len(self.state["groups"])
        summary["last_steps"] = self.state["history"][-5:]
        atomic_write(self.state_dir / "state.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))

    # ------------------------------------------------------------------ training steps
    def _train_on(self, entries: Sequence[dict], iterations: int, lr: float, seed: int) -> float:
        """``iterations`` optimizer iterations on batches drawn from ``entries`` (without replacement while possible)."""
        if iterations <= 0 or not entries:
            return float("nan")
        rng = random.Random(seed)
        needed = iterations * self.batch_size
        picked: list[dict] = []
        while len(picked) < needed:
            order = list(entries)
            rng.shuffle(order)
            picked += order[: needed - len(picked)]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        transform = train_slice_transforms(
            self.spatial_size, self.network_kwargs.get("in_channels", 1), **self.transform_kwargs
        )
        transform.set_random_state(seed=seed % (2**32))
        loader = DataLoader(
            Dataset(picked, transform), batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )
        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=1,
            train_data_loader=loader,
            network=self.network,
            optimizer=self.optimizer,
            loss_function=DeepSupervisionLoss(),
            iteration_update=MultiScaleIteration(self.train_rates, self.clip_value),
            amp=self.amp and self.device.type == "cuda",
            decollate=False,
        )
        losses: list[float] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
        trainer.run()
        return float(np.mean(losses))

    def _propagate_step(self, engine: Engine, index: int) -> dict[str, Any]:
        start = time.time()
        ids = self.state["groups"][index]
        entries = self._pseudo_entries(ids)
        predictor = SlicePredictor.from_network(
            self.network,
            self.predict_size,
            self.network_kwargs.get("in_channels", 1),
            self.device,
            amp=self.amp,
            temperature=self.pseudo_label_temperature,
        )
        self.network.eval()
        images = [read_slice(Path(self.unlabeled[i]["image"])) for i in ids]
        probs = predictor.predict_unit([im.astype(np.float32) / 255.0 for im in images])
        confidence = self.state.setdefault("confidence", {})
        for entry, prob in zip(entries, probs):
            write_png_atomic(np.round(prob * 255).astype(np.uint8), Path(entry["label"]))
            write_png_atomic(np.round(soft_edge_map(prob) * 255).astype(np.uint8), Path(entry["edge"]))
            confidence[entry["id"]] = round(pseudo_label_confidence(prob), 6)
        done_ids = self._kept_ids([i for g in self.state["groups"][: index + 1] for i in g])
        pool = self.labeled + self._pseudo_entries(done_ids)
        loss = self._train_on(pool, self.steps_per_group, self.learning_rate, seed=self.seed * 100003 + index)
        self.state["groups_done"] = index + 1
        seconds = time.time() - start
        self.state["seconds"]["propagate"] += seconds
        record = {"stage": "propagate", "step": index, "pool": len(pool), "loss": loss, "seconds": round(seconds, 2)}
        self.state["history"].append(record)
        logger.info("group %d/%d: pool %d slices, loss %.4f, %.1f s", index + 1, len(self.state["groups"]),
                    len(pool), loss, seconds)
        return record

    def _pseudo_step(self, engine: Engine, index: int) -> dict[str, Any]:
        start = time.time()
        total = self.state["pseudo_steps"]
        lr = self.min_learning_rate + 0.5 * (self.learning_rate - self.min_learning_rate) * (
            1 + math.cos(math.pi * index / max(total, 1))
        )
        ids = self._kept_ids([i for g in self.state["groups"] for i in g])
        # one seeded permutation per pass, cut into consecutive chunks: every slice is seen once per pass
        per_step, num_labeled = self._pseudo_batch_split()
        first = index * per_step
        order: list[dict] = []
        entries = self._pseudo_entries(ids)
        epoch = 0
        while len(order) < first + per_step:
            perm = list(entries)
            random.Random(self.seed * 7919 + epoch).shuffle(perm)
            order += perm
            epoch += 1
        chunk = order[first : first + per_step]
        if num_labeled:
            rng = random.Random(self.seed * 7919 + 104729 + index)
            chunk += [self.labeled[rng.randrange(len(self.labeled))] for _ in range(num_labeled)]
        loss = self._train_on(chunk, self.pseudo_chunk, lr, seed=self.seed * 100003 + 50021 + index)
        self.state["pseudo_steps_done"] = index + 1
        seconds = time.time() - start
        self.state["seconds"]["pseudo"] += seconds
        record = {"stage": "pseudo", "step": index, "lr": lr, "loss": loss, "seconds": round(seconds, 2)}
        self.state["history"].append(record)
        logger.info("stage 2 step %d/%d: lr %.2e, loss %.4f, %.1f s", index + 1, total, lr, loss, seconds)
        return record

    # ------------------------------------------------------------------ orchestration
    def _set_stage(self, stage: str) -> None:
        self.state["stage"] = stage
        self._save_state()
        logger.info("propagation stage: %s", stage)

    def _latest_finetune_checkpoint(self) -> Path | None:
        pattern = re.compile(rf"^{re.escape(self.finetune_prefix)}_checkpoint_epoch=(\d+)\.pt$")
        found = []
        if self.finetune_dir.is_dir():
            for p in self.finetune_dir.iterdir():
                m = pattern.match(p.name)
                if m:
                    found.append((int(m.group(1)), p))
        return max(found)[1] if found else None

    def run(self, stop_after: str | None = None) -> dict[str, Any]:
        """Run the remaining stages; returns the progress summary.

        Args:
            stop_after: ``"propagate"`` or ``"pseudo"`` to stop once that stage is complete.
        """
        if not self.load_state():
            self.state = self._new_state()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._save_state()
        if self.state["stage"] == "propagate":
            remaining = list(range(self.state["groups_done"], len(self.state["groups"])))
            if remaining:
                self.propagate_engine.run(remaining, max_epochs=1)
            self._set_stage("pseudo")
        if stop_after == "propagate":
            return self.summary()
        if self.state["stage"] == "pseudo" and self.state["pseudo_steps"] is None:
            kept = len(self._kept_ids([i for g in self.state["groups"] for i in g]))
            per_step = self._pseudo_batch_split()[0]
            self.state["pseudo_steps"] = math.ceil(self.pseudo_epochs * kept / per_step) if self.pseudo_epochs else 0
            self.state["pseudo_labeled_slices_kept"] = kept
            logger.info("stage 2: %d pseudo-labeled slices kept of %d, %d steps", kept,
                        sum(len(g) for g in self.state["groups"]), self.state["pseudo_steps"])
            self._save_state()
        if self.state["stage"] == "pseudo":
            remaining = list(range(self.state["pseudo_steps_done"], self.state["pseudo_steps"]))
            if remaining:
                self.pseudo_engine.run(remaining, max_epochs=1)
            self.export(self.output_dir / "propagated.pt")
            self._set_stage("finetune")
        if stop_after == "pseudo" or self.finetune_trainer is None:
            return self.summary()
        if self.state["stage"] == "finetune":
            self._run_finetune()
            self._set_stage("done")
        return self.summary()

    def _run_finetune(self) -> None:
        from monai.handlers import CheckpointLoader

        start = time.time()
        latest = self._latest_finetune_checkpoint()
        if latest is not None and self.finetune_resume:
            logger.info("resuming stage 3 from %s", latest)
            CheckpointLoader(str(latest), self.finetune_resume, map_location=self.device).attach(self.finetune_trainer)
        self.finetune_trainer.run()
        self.state["seconds"]["finetune"] += time.time() - start

    def export(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the current network as a self-describing model checkpoint."""
        meta = dict(self.metadata)
        meta.update(
            {
                "stage": self.state.get("stage", ""),
                "groups_done": int(self.state.get("groups_done", 0)),
                "pseudo_labeled_slices": sum(len(g) for g in self.state.get("groups", [])[: self.state.get("groups_done", 0)]),
                "seconds": json.dumps({k: round(v, 1) for k, v in self.state.get("seconds", {}).items()}),
            }
        )
        meta.update(extra or {})
        return save_model(path, self.network, self.network_kwargs, self.preprocessing, meta)

    def summary(self) -> dict[str, Any]:
        """Progress: stage, groups and steps done, seconds per stage."""
        s = self.state
        return {
            "stage": s["stage"],
            "groups_done": s["groups_done"],
            "num_groups": len(s["groups"]),
            "pseudo_steps_done": s["pseudo_steps_done"],
            "pseudo_steps": s["pseudo_steps"],
            "pseudo_labeled_slices_kept": s.get("pseudo_labeled_slices_kept"),
            "seconds": {k: round(v, 1) for k, v in s["seconds"].items()},
        }

