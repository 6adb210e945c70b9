"""Datalists for the COVID-SemiSeg slices used by the Inf-Net paper.

Layout expected under ``<data_dir>/covid-semiseg``::

    train/images/<id>.jpg   train/masks/<id>.png   train/edges/<id>.png   train/classes/<id>.png
    unlabeled/images/<name>.jpg

``data_dir`` defaults to :func:`~infnet_monai.data.paths.shared_data_dir` (``$INFNET_SHARED_DATA`` or
``../shared/data``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from infnet_monai.data.paths import DATA_ENV_VAR, shared_data_dir
from infnet_monai.utils.deprecation import moved_names

__all__ = [
    "DATA_ENV_VAR",
    "IMAGE_SUFFIXES",
    "labeled_datalist",
    "unlabeled_datalist",
    "split_datalist",
    "labeled_splits",
    "pretraining_datalist",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

__getattr__ = moved_names(__name__, {"default_data_dir": "infnet_monai.data.paths.shared_data_dir"})


def _semiseg_root(data_dir: str | os.PathLike | None) -> Path:
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    if (root / "covid-semiseg").is_dir():
        root = root / "covid-semiseg"
    if not (root / "train").is_dir() and not (root / "unlabeled").is_dir():
        raise FileNotFoundError(
            f"COVID-SemiSeg data not found under '{root}': expected 'train/' and/or 'unlabeled/' folders. "
            f"Pass the data folder explicitly or set {DATA_ENV_VAR}."
        )
    return root


def _sort_key(path: Path) -> tuple:
    stem = path.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_sort_key)


def labeled_datalist(data_dir: str | os.PathLike | None = None, require_edges: bool = True) -> list[dict]:
    """Labeled slices as MONAI datalist entries ``{"image", "label", "edge", "id"}`` (``"classes"`` when present).

    Args:
        data_dir: the shared data folder or the ``covid-semiseg`` folder itself.
        require_edges: raise if an edge map is missing (set False to allow mask-only data; the edge key is omitted).

    Raises:
        FileNotFoundError: missing folders, or an image without its mask (the message names the file).
    """
    root = _semiseg_root(data_dir) / "train"
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"no labeled images folder '{images_dir}'.")
    items = []
    for image in _images(images_dir):
        mask = root / "masks" / f"{image.stem}.png"
        if not mask.is_file():
            raise FileNotFoundError(f"labeled image '{image}' has no mask '{mask}'.")
        item = {"image": str(image), "label": str(mask), "id": image.stem}
        edge = root / "edges" / f"{image.stem}.png"
        if edge.is_file():
            item["edge"] = str(edge)
        elif require_edges:
            raise FileNotFoundError(f"labeled image '{image}' has no edge map '{edge}'.")
        classes = root / "classes" / f"{image.stem}.png"
        if classes.is_file():
            item["classes"] = str(classes)
        items.append(item)
    if not items:
        raise FileNotFoundError(f"no images (.jpg/.jpeg/.png) in '{images_dir}'.")
    return items


def unlabeled_datalist(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Unlabeled slices as datalist entries ``{"image", "id"}``, sorted by name."""
    folder = _semiseg_root(data_dir) / "unlabeled" / "images"
    if not folder.is_dir():
        raise FileNotFoundError(f"no unlabeled images folder '{folder}'.")
    return [{"image": str(p), "id": p.stem} for p in _images(folder)]


def split_datalist(datalist: list[dict], num_val: int = 10, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Fixed, seeded split into (train, validation); the same seed always gives the same split.

    Args:
        datalist: entries to split.
        num_val: number of validation entries.
        seed: seed of the shuffle.
    """
    if not 0 <= num_val < len(datalist):
        raise ValueError(f"num_val must be in [0, {len(datalist) - 1}], got {num_val}.")
    order = sorted(range(len(datalist)), key=lambda i: str(datalist[i].get("id", i)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:num_val])
    train = [d for i, d in enumerate(datalist) if i not in val_idx]
    val = [d for i, d in enumerate(datalist) if i in val_idx]
    return train, val


def labeled_splits(
    data_dir: str | os.PathLike | None = None, num_val: int = 10, seed: int = 0
) -> dict[str, list[dict]]:
    """The labeled slices split as ``{"train": [...], "validation": [...]}`` (see :func:`split_datalist`)."""
    train, val = split_datalist(labeled_datalist(data_dir), num_val=num_val, seed=seed)
    return {"train": train, "validation": val}


def pretraining_datalist(
    data_dir: str | os.PathLike | None = None, exclude_ids: list[str] | tuple[str, ...] = ()
) -> list[dict]:
    """Images of every slice, labeled and unlabeled, as ``{"image", "id"}`` entries for self-supervised pretraining.

    Args:
        data_dir: the shared data folder or the ``covid-semiseg`` folder itself.
        exclude_ids: labeled ids to leave out; pass the validation ids so that validation images are never seen,
            not even without their labels, and the validation estimate stays clean.
    """
    excluded = {str(i) for i in exclude_ids}
    labeled = [{"image": d["image"], "id": d["id"]} for d in labeled_datalist(data_dir, require_edges=False)]
    labeled = [d for d in labeled if d["id"] not in excluded]
    unlabeled = [{"image": d["image"], "id": f"unlabeled/{d['id']}"} for d in unlabeled_datalist(data_dir)]
    return labeled + unlabeled
