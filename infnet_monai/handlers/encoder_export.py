"""Export the encoder being pretrained after every epoch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch.nn as nn
from ignite.engine import Engine, Events

from infnet_monai.io.checkpoint import save_encoder

__all__ = ["EncoderExporter"]

logger = logging.getLogger(__name__)


class EncoderExporter:
    """Attach to a pretraining trainer: at the end of every epoch (and of the run) write ``path`` with
    :func:`~infnet_monai.io.save_encoder`, recording the epoch, the last loss and the wall time.

    Self-supervised pretraining has no validation metric that predicts segmentation quality, so the latest encoder
    is kept; the supervised stage decides whether it helps.

    Args:
        encoder: the backbone being pretrained.
        network_kwargs: the ``InfNet`` keyword arguments it belongs to.
        path: destination file.
        metadata: extra provenance stored in the checkpoint.
    """

    def __init__(self, encoder: nn.Module, network_kwargs: dict, path: str, metadata: dict | None = None) -> None:
        self.encoder = encoder
        self.network_kwargs = dict(network_kwargs)
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self._start = time.time()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        meta = dict(self.metadata)
        meta["epoch"] = int(engine.state.epoch)
        meta["iteration"] = int(engine.state.iteration)
        output = engine.state.output
        if isinstance(output, dict) and "loss" in output:
            meta["last_loss"] = float(output["loss"])
        meta["train_seconds"] = round(time.time() - self._start, 1)
        meta = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in meta.items()}
        save_encoder(self.path, self.encoder, self.network_kwargs, meta)
        logger.info("epoch %d: exported encoder %s", engine.state.epoch, self.path)
