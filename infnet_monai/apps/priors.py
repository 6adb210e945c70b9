"""Infection priors for training the GGO / consolidation head: the binary model's maps of the labeled slices."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from infnet_monai.apps.slices import predict_slice_folder
from infnet_monai.utils.model_path import default_model_path

__all__ = ["with_infection_priors"]

logger = logging.getLogger(__name__)

_STAMP = "priors.json"


def with_infection_priors(
    splits: dict[str, list[dict]],
    prior_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    device: str = "auto",
) -> dict[str, list[dict]]:
    """Add ``"prior"`` to every datalist entry: the binary model's probability map of its slice.

    The maps are written once by ``predict-slices`` (:func:`~infnet_monai.apps.predict_slice_folder`) into
    ``prior_dir``, exactly as they are produced at inference, so the head trains on the inputs it will see. They are
    recomputed when ``prior_dir`` was made with another model (``priors.json`` records its path, size and time).

    Args:
        splits: ``{"train": [...], "validation": [...]}`` entries with ``"image"`` and ``"id"``.
        prior_dir: folder of the maps (created).
        model_path: the binary checkpoint (default: the shipped model).
        device: where the binary model runs.

    Returns:
        the same splits, entries copied with ``"prior"`` added.
    """
    model = Path(model_path) if model_path else default_model_path()
    prior_dir = Path(prior_dir)
    stamp = {"model": str(model.resolve()), "size": model.stat().st_size, "mtime": model.stat().st_mtime}
    entries = [d for part in splits.values() for d in part]
    stamp_file = prior_dir / _STAMP
    current = stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp
    if not current or any(not (prior_dir / f"{Path(d['image']).stem}.png").is_file() for d in entries):
        folders = sorted({str(Path(d["image"]).parent) for d in entries})
        for folder in folders:
            logger.info("infection priors of %s with %s -> %s", folder, model, prior_dir)
            report = predict_slice_folder(folder, prior_dir, model_path=model, device=device)
            if report.failed:
                raise RuntimeError(f"infection priors failed for {report.failed}")
        stamp_file.write_text(json.dumps(stamp))
    return {
        name: [{**d, "prior": str(prior_dir / f"{Path(d['image']).stem}.png")} for d in part] for name, part in splits.items()
    }
