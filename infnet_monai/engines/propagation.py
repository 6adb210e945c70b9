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

import dataclasses
import json
import logging
import math
import os
import random
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer

from infnet_monai.engines.iteration import MultiScaleIteration
from infnet_monai.engines.propagation_config import FinetuneStage, PropagationConfig, stream_seed
from infnet_monai.engines.pseudo_labels import pseudo_label_files, write_pseudo_label
from infnet_monai.inferers.slices import SlicePredictor
from infnet_monai.io.checkpoint import atomic_torch_save, load_weights, network_state_dict, safe_torch_load, save_model
from infnet_monai.io.slices import read_slice
from infnet_monai.losses import DeepSupervisionLoss
from infnet_monai.transforms.slices import train_slice_transforms
from infnet_monai.utils.deprecation import moved_names
from infnet_monai.utils.files import atomic_write

__all__ = ["PROPAGATION_FORMAT", "STAGES", "RandomSelectionPropagation"]

logger = logging.getLogger(__name__)

PROPAGATION_FORMAT = "infnet-monai-propagation/1"
"""The format of ``state.pt``."""
STAGES = ("propagate", "pseudo", "finetune", "done")
"""The stages of a run, in order (``state["stage"]``)."""

MOVED_NAMES = {
    "SEED_STREAMS": "infnet_monai.engines.propagation_config.SEED_STREAMS",
    "soft_edge_map": "infnet_monai.engines.pseudo_labels.soft_edge_map",
    "pseudo_label_confidence": "infnet_monai.engines.pseudo_labels.pseudo_label_confidence",
}
"""Names that this module held in 0.10.0 -> where they are now (:class:`PropagationConfig`, :class:`FinetuneStage`
and :func:`stream_seed`, which the run uses, are still found here; their home is
:mod:`~infnet_monai.engines.propagation_config`)."""

__getattr__ = moved_names(__name__, MOVED_NAMES)


_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(PropagationConfig))
_LEGACY_FINETUNE = {"finetune_trainer": "trainer", "finetune_resume": "resume", "finetune_dir": "checkpoint_dir",
                    "finetune_prefix": "prefix"}


class RandomSelectionPropagation:
    """Run (or resume) the Semi-Inf-Net schedule; see the module docstring.

    Args:
        network: the Inf-Net being trained (already on ``device``). Its weights at stage 1 come from
            ``config.initial_model``.
        labeled: labeled training entries ``{"image", "label", "edge", "id"}`` (never the validation slices).
        unlabeled: unlabeled entries ``{"image", "id"}`` with unique ids.
        config: the settings (:class:`PropagationConfig`).
        finetune: stage 3 (``None`` stops after stage 2).
        device: torch device.
        legacy_options: the keyword arguments of the first release (the fields of :class:`PropagationConfig` plus
            ``finetune_trainer``, ``finetune_resume``, ``finetune_dir``, ``finetune_prefix``), accepted in place of
            ``config`` and ``finetune`` with a ``DeprecationWarning``.

    Example::

        config = PropagationConfig(output_dir="runs/semi", network_kwargs=kwargs, initial_model="model.pt")
        RandomSelectionPropagation(network, labeled, unlabeled, config, device="cuda").run()
    """

    def __init__(
        self,
        network: nn.Module,
        labeled: Sequence[dict],
        unlabeled: Sequence[dict],
        config: PropagationConfig | None = None,
        finetune: FinetuneStage | None = None,
        device: str | torch.device = "cpu",
        **legacy_options: Any,
    ) -> None:
        if legacy_options:
            config, finetune = self._from_legacy_options(config, finetune, legacy_options)
        if not isinstance(config, PropagationConfig):
            raise TypeError(f"config must be a PropagationConfig, got {type(config).__name__}.")
        if finetune is not None and not isinstance(finetune, FinetuneStage):
            raise TypeError(f"finetune must be a FinetuneStage or None, got {type(finetune).__name__}.")
        if isinstance(labeled, Mapping) or isinstance(unlabeled, Mapping):
            raise TypeError("labeled and unlabeled must be sequences of entries (dictionaries), not one dictionary.")
        if not unlabeled:
            raise ValueError("no unlabeled slices to propagate over.")
        if config.pseudo_labeled_fraction > 0 and not labeled:
            raise ValueError("pseudo_labeled_fraction > 0 needs labeled slices.")
        self.config = config
        self.finetune = finetune
        self.network = network
        # only the keys pseudo-labeled entries also have, so mixed batches collate
        self.labeled = [{k: d[k] for k in ("image", "label", "edge", "id") if k in d} for d in labeled]
        self.unlabeled = {str(d["id"]): dict(d) for d in unlabeled}
        if len(self.unlabeled) != len(unlabeled):
            raise ValueError("unlabeled entries must have unique ids.")
        self.output_dir = config.output_dir
        self.state_dir = self.output_dir / "propagation"
        self.pseudo_dir = self.state_dir / "pseudo_labels"
        self.predict_size = config.predict_size or int(config.preprocessing.get("spatial_size", config.spatial_size))
        self.in_channels = int(config.network_kwargs.get("in_channels", 1))
        self.device = torch.device(device)
        self.state: dict[str, Any] = {}
        self._build_engines()

    @staticmethod
    def _from_legacy_options(
        config: PropagationConfig | None, finetune: FinetuneStage | None, options: dict[str, Any]
    ) -> tuple[PropagationConfig, FinetuneStage | None]:
        """The config and stage 3 from the first release's keyword arguments."""
        unknown = sorted(set(options) - _CONFIG_FIELDS - set(_LEGACY_FINETUNE))
        if unknown:
            raise TypeError(f"RandomSelectionPropagation got unexpected keyword arguments {unknown}.")
        if config is not None or finetune is not None:
            raise TypeError(
                "pass the settings either as config / finetune or as keyword arguments, not both "
                f"(got {sorted(options)})."
            )
        warnings.warn(
            "RandomSelectionPropagation(**options) is deprecated: pass config=PropagationConfig(...) and "
            "finetune=FinetuneStage(...).",
            DeprecationWarning,
            stacklevel=3,
        )
        stage = {new: options.pop(old) for old, new in _LEGACY_FINETUNE.items() if old in options}
        if stage.get("trainer") is not None:
            finetune = FinetuneStage(**stage)
        return PropagationConfig(**options), finetune

    def _build_engines(self) -> None:
        """The optimizer and the ignite engines of stages 1 and 2 (attach handlers to them, e.g. a progress bar,
        before calling :meth:`run`); every iteration saves the state."""
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
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
        c = self.config
        return {
            "group_size": c.group_size,
            "num_groups": c.num_groups,
            "seed": c.seed,
            "unlabeled": len(self.unlabeled),
            "pseudo_epochs": c.pseudo_epochs,
            "pseudo_chunk": c.pseudo_chunk,
            "batch_size": c.batch_size,
            "min_confidence": c.min_confidence,
            "pseudo_label_temperature": c.pseudo_label_temperature,
            "pseudo_labeled_fraction": c.pseudo_labeled_fraction,
        }

    def _make_groups(self) -> list[list[str]]:
        ids = sorted(self.unlabeled)
        random.Random(stream_seed("grouping", self.config.seed)).shuffle(ids)
        size, num_groups = self.config.group_size, self.config.num_groups
        groups = [ids[i : i + size] for i in range(0, len(ids), size)]
        return groups[:num_groups] if num_groups else groups

    def _pseudo_entries(self, ids: Sequence[str]) -> list[dict]:
        out = []
        for i in ids:
            label, edge = pseudo_label_files(self.pseudo_dir, i)
            out.append({"image": self.unlabeled[i]["image"], "label": str(label), "edge": str(edge), "id": i})
        return out

    def _kept_ids(self, ids: Sequence[str]) -> list[str]:
        # pseudo-labeled slices decisive enough to train on (all of them when min_confidence is 0)
        confidence = self.state.get("confidence", {})
        return [i for i in ids if confidence.get(i, 1.0) >= self.config.min_confidence]

    def _pseudo_batch_split(self) -> tuple[int, int]:
        # (pseudo-labeled, labeled) slices per stage-2 step
        per_step = self.config.pseudo_chunk * self.config.batch_size
        labeled = min(per_step - 1, round(per_step * self.config.pseudo_labeled_fraction))
        return per_step - labeled, labeled

    def _new_state(self) -> dict[str, Any]:
        initial_model = self.config.initial_model
        if not initial_model:
            raise ValueError(
                "initial_model is required to start a propagation run: train Inf-Net on the labeled slices first "
                "(configs/train.json) and pass its model.pt."
            )
        # CheckpointError when the file is not a model or its weights do not fit the network; the training steps
        # put the network back in training mode, prediction uses eval mode anyway
        load_weights(self.network, initial_model)
        groups = self._make_groups()
        return {
            "format": PROPAGATION_FORMAT,
            "config": self._config(),
            "initial_model": initial_model,
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
        saved = safe_torch_load(self.state_path, "propagation state", f"Delete the '{self.state_dir}' folder to start over.")
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
        c = self.config
        needed = iterations * c.batch_size
        picked: list[dict] = []
        while len(picked) < needed:
            order = list(entries)
            rng.shuffle(order)
            picked += order[: needed - len(picked)]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        transform = train_slice_transforms(c.spatial_size, self.in_channels, **c.transform_kwargs)
        transform.set_random_state(seed=seed % (2**32))
        loader = DataLoader(
            Dataset(picked, transform), batch_size=c.batch_size, shuffle=False, num_workers=c.num_workers
        )
        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=1,
            train_data_loader=loader,
            network=self.network,
            optimizer=self.optimizer,
            loss_function=DeepSupervisionLoss(),
            iteration_update=MultiScaleIteration(c.train_rates, c.clip_value),
            amp=c.amp and self.device.type == "cuda",
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
            self.in_channels,
            self.device,
            amp=self.config.amp,
            temperature=self.config.pseudo_label_temperature,
        )
        self.network.eval()
        images = [read_slice(Path(self.unlabeled[i]["image"])) for i in ids]
        probs = predictor.predict_unit([im.astype(np.float32) / 255.0 for im in images])
        confidence = self.state.setdefault("confidence", {})
        for entry, prob in zip(entries, probs):
            confidence[entry["id"]] = round(write_pseudo_label(prob, Path(entry["label"]), Path(entry["edge"])), 6)
        done_ids = self._kept_ids([i for g in self.state["groups"][: index + 1] for i in g])
        pool = self.labeled + self._pseudo_entries(done_ids)
        seed = stream_seed("propagate_batches", self.config.seed, index)
        loss = self._train_on(pool, self.config.steps_per_group, self.config.learning_rate, seed=seed)
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
        c = self.config
        lr = c.min_learning_rate + 0.5 * (c.learning_rate - c.min_learning_rate) * (
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
            random.Random(stream_seed("pseudo_order", c.seed, epoch)).shuffle(perm)
            order += perm
            epoch += 1
        chunk = order[first : first + per_step]
        if num_labeled:
            rng = random.Random(stream_seed("pseudo_labeled_mix", c.seed, index))
            chunk += [self.labeled[rng.randrange(len(self.labeled))] for _ in range(num_labeled)]
        loss = self._train_on(chunk, c.pseudo_chunk, lr, seed=stream_seed("pseudo_batches", c.seed, index))
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
        folder = Path(self.finetune.checkpoint_dir or self.output_dir)
        pattern = re.compile(rf"^{re.escape(self.finetune.prefix)}_checkpoint_epoch=(\d+)\.pt$")
        found = []
        if folder.is_dir():
            for p in folder.iterdir():
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
            self.state["pseudo_steps"] = math.ceil(epochs * kept / per_step) if (epochs := self.config.pseudo_epochs) else 0
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
        if stop_after == "pseudo" or self.finetune is None:
            return self.summary()
        if self.state["stage"] == "finetune":
            self._run_finetune()
            self._set_stage("done")
        return self.summary()

    def _run_finetune(self) -> None:
        from monai.handlers import CheckpointLoader

        start = time.time()
        latest = self._latest_finetune_checkpoint()
        stage = self.finetune
        if latest is not None and stage.resume:
            logger.info("resuming stage 3 from %s", latest)
            CheckpointLoader(str(latest), dict(stage.resume), map_location=self.device).attach(stage.trainer)
        stage.trainer.run()
        self.state["seconds"]["finetune"] += time.time() - start

    def export(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the current network as a self-describing model checkpoint."""
        c = self.config
        meta = dict(c.metadata)
        meta.update(
            {
                "stage": self.state.get("stage", ""),
                "groups_done": int(self.state.get("groups_done", 0)),
                "pseudo_labeled_slices": sum(len(g) for g in self.state.get("groups", [])[: self.state.get("groups_done", 0)]),
                "seconds": json.dumps({k: round(v, 1) for k, v in self.state.get("seconds", {}).items()}),
            }
        )
        meta.update(extra or {})
        return save_model(path, self.network, c.network_kwargs, c.preprocessing, meta)

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
