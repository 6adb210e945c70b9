"""Mining hard negatives: real CT slices without infection, as the pipeline renders them, where a model fires.

The labeled COVID-SemiSeg slices are cropped, windowed JPEGs of COVID-19 lungs; the network never saw a CT slice as
the 3D pipeline renders it, nor a lung without COVID-19. :func:`render_lung_slices` renders a scan's axial slices
exactly as :class:`~infnet_monai.pipeline.CTSegmenter` feeds them to the network: its own preprocessing (reader, RAS,
lung mask from Hounsfield units, orientation, Hounsfield window) and its own
:class:`~infnet_monai.inferers.LungCropSliceInferer` (the first pass's lung crop, resized to the network's input);
the crops are recorded on their way into the network, so they are what it sees, not a re-implementation.
:func:`mine_hard_negatives` keeps the slices that hold no infection (a scan without COVID-19, or the slices a
radiologist labelled negative) where the model calls infection, and a few random others, and writes them for
:func:`~infnet_monai.data.hard_negatives.hard_negative_datalist`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from PIL import Image
from scipy import ndimage as ndi

from infnet_monai.data.hard_negatives import MANIFEST, MANIFEST_FIELDS
from infnet_monai.defaults import THRESHOLD
from infnet_monai.engines.pseudo_labels import soft_edge_map
from infnet_monai.inferers.lung_crop import LUNG_CROP_MARGINS, LungCropSliceInferer, slice_boxes
from infnet_monai.pipeline.predictor import apply_steps
from infnet_monai.utils.files import atomic_write

__all__ = [
    "RenderedSlices", "render_lung_slices", "firing_pixels", "select_hard_negatives", "mine_hard_negatives",
    "select_positives", "mine_real_positives", "positive_ignore_mask", "POSITIVE_IGNORE_PROBABILITY",
    "POSITIVE_IGNORE_RIM_PIXELS",
]

POSITIVE_IGNORE_PROBABILITY = 0.2
"""A real-CT positive's loss ignores the pixels outside its label where the model gives at least this probability
(:func:`positive_ignore_mask`). Set before measuring, not tuned: well under the 0.5 of a call and the 0.3 of the lung
extension, so that nothing the model half-sees is taught as clear lung."""
POSITIVE_IGNORE_RIM_PIXELS = 4
"""... and a rim this wide (pixels of the network's 352-pixel crop, about 3 mm on a chest CT) around the label."""


@dataclass
class RenderedSlices:
    """A scan's slices with lung, as the network sees them, and what a model makes of them.

    Attributes:
        images: ``(N, H, W)`` float32 in [0, 1] (before the standardisation), the network's input grey values.
        lung: ``(N, H, W)`` bool, the lung mask cropped and resized alike.
        probability: ``(N, H, W)`` float32, the infection probability of the rendering model.
        slice_index: ``(N,)`` index of each slice on the network's slice grid.
        z_mm: ``(N,)`` world z (RAS, mm) of each slice's centre.
        infection: ``(N, H, W)`` bool, the pipeline's final infection mask (every lesion gate applied) cropped and
            resized alike, when asked for (:func:`render_lung_slices` ``with_infection``), else ``None``.
    """

    images: np.ndarray
    lung: np.ndarray
    probability: np.ndarray
    slice_index: np.ndarray
    z_mm: np.ndarray
    infection: np.ndarray | None = None


class _Recorder:
    """A network function that records its inputs (and returns ``fn``'s outputs, or zeros)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.fn, self.inputs, self.outputs = fn, [], []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x[:, 0].detach().float().cpu())
        y = self.fn(x) if self.fn is not None else torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype)
        self.outputs.append(y[:, 0].detach().float().cpu())
        return y


def _final_infection_ras(predictor, data: dict) -> np.ndarray:
    """The pipeline's final infection mask of the prepared ``data`` (:meth:`VolumePredictor.prepare`, consumed) on
    its RAS grid: the predictor's own post-processing without the inversion to the input's grid."""
    steps = [t for t in predictor.postprocessing.transforms if not isinstance(t, Invertd)]
    return predictor.finish(data, postprocessing=Compose(steps)).infection > 0


def render_lung_slices(segmenter, case, run_network: bool = True, with_infection: bool = False) -> RenderedSlices:
    """The slices with lung of ``case`` (a :class:`~infnet_monai.io.cases.CTCase` or a path), rendered by
    ``segmenter`` (a :class:`~infnet_monai.pipeline.CTSegmenter`) and run through its network function (with
    ``run_network=False`` the probabilities are zeros, for looking at the rendering alone).

    The first crop pass only: a slice whose infection reaches its crop's edge is run again with a larger crop by the
    pipeline; a negative slice should not have any. With ``with_infection`` the whole pipeline runs first and its
    final infection mask (crop reruns, lung extension and every lesion gate included) is rendered like the lung
    (:attr:`RenderedSlices.infection`): the pseudo-label of a real-CT positive.
    """
    predictor = segmenter.predictor
    if with_infection:
        data = predictor.prepare(case)
        kept = {k: data[k].clone() for k in ("image", "lung")}
        infection = _final_infection_ras(predictor, data)
        data = kept
        if infection.shape != tuple(data["image"].shape[1:]):
            raise RuntimeError(f"final infection {infection.shape} is not on the RAS grid {tuple(data['image'].shape[1:])}")
    else:
        data = apply_steps(predictor.volume_preprocessing, {"image": case})
    lung = MetaTensor(torch.from_numpy(np.ascontiguousarray(np.asarray(data["lung"]) > 0)).float(), meta=dict(data["image"].meta))
    prepared = predictor.slice_preprocessing({"image": data["image"], "lung": lung})
    image, lung_t = prepared["image"], prepared["lung"][0].as_tensor() > 0.5
    boxes = slice_boxes(lung_t.numpy(), getattr(predictor.inferer, "margins", LUNG_CROP_MARGINS))
    index = np.flatnonzero(boxes[:, 0] >= 0)
    size = tuple(getattr(predictor.inferer, "roi_size", (segmenter.spatial_size,) * 2))
    inferer = LungCropSliceInferer(size, sw_batch_size=segmenter.config.batch_slices, max_rounds=1)

    def crops(volume: torch.Tensor, fn=None) -> _Recorder:  # (1, 1, X, Y, Z) through the first crop pass
        recorder = _Recorder(fn)
        inferer.infer(volume, recorder, lung_t.numpy(), boxes=boxes)
        return recorder

    def mask_crops(on_slices: torch.Tensor) -> np.ndarray:  # a mask on the slices' grid (X, Y, Z), cropped alike
        if not index.size:
            return np.zeros((0, *size), bool)
        return torch.cat(crops(on_slices.float()[None, None]).inputs).numpy() >= 0.5

    with torch.no_grad():
        seen = crops(image.as_tensor()[None], predictor.network_fn if run_network else None)
        lung_crops = mask_crops(lung_t)
        infection_crops = None
        if with_infection:  # the RAS mask through the slice preparation the lung took
            t = MetaTensor(torch.from_numpy(np.ascontiguousarray(infection[None])).float(), meta=dict(data["image"].meta))
            on_slices = predictor.slice_preprocessing({"image": data["image"], "lung": t})["lung"][0].as_tensor()
            infection_crops = mask_crops(on_slices > 0.5)
    spec = segmenter.spec
    images = (torch.cat(seen.inputs).numpy() * spec.std + spec.mean) if index.size else np.zeros((0, *size), np.float32)
    if images.shape[0] != index.size:
        raise RuntimeError(f"rendered {images.shape[0]} crops for {index.size} slices with lung")
    affine = np.asarray(image.affine, dtype=np.float64)
    centre = np.array([image.shape[1] / 2.0, image.shape[2] / 2.0])
    z_mm = affine[2, 3] + affine[2, 0] * centre[0] + affine[2, 1] * centre[1] + affine[2, 2] * index
    return RenderedSlices(
        images=np.clip(images, 0.0, 1.0).astype(np.float32),
        lung=lung_crops,
        probability=torch.cat(seen.outputs).numpy() if index.size else np.zeros((0, *size), np.float32),
        slice_index=index,
        z_mm=z_mm,
        infection=infection_crops,
    )


def select_hard_negatives(
    rendered: RenderedSlices,
    negative: np.ndarray | None = None,
    max_firing: int = 30,
    num_random: int = 10,
    min_firing_pixels: int = 1,
    threshold: float = THRESHOLD,
    near_lung_pixels: int = 8,
    min_lung_share: float = 0.0,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """``[(position in rendered, reason), ...]``: the negative slices where the model fires most in and next to the
    lung, then random others.

    Firing is counted inside the lung mask grown by ``near_lung_pixels`` (on the network's input grid): the pipeline
    keeps infection inside the lung and what touches it, so firing over the liver below a basal lung crescent costs
    nothing, while a band along the pleura or the diaphragm becomes false burden.

    Args:
        rendered: from :func:`render_lung_slices`.
        negative: ``(N,)`` bool, the slices known to hold no infection (default all: a scan without COVID-19).
        max_firing: at most this many slices where the model calls infection, the most pixels first.
        num_random: further negative slices drawn at random among the others (the network must also keep quiet
            where it is already right).
        min_firing_pixels: pixels at or above ``threshold`` in or next to the lung that make a slice a firing one.
        threshold: the segmentation threshold.
        near_lung_pixels: how far from the lung firing counts.
        min_lung_share: only slices whose lung covers at least this share of the crop (0.2 leaves out the thin
            crescents of the apices and the bases over the diaphragm).
        seed: seed of the random draw.
    """
    n = len(rendered.slice_index)
    negative = np.ones(n, dtype=bool) if negative is None else np.asarray(negative, dtype=bool)
    if negative.shape != (n,):
        raise ValueError(f"negative must have {n} entries, got {negative.shape}.")
    if min_lung_share > 0 and n:
        negative = negative & (rendered.lung.reshape(n, -1).mean(axis=1) >= min_lung_share)
    firing = firing_pixels(rendered, threshold, near_lung_pixels)
    candidates = np.flatnonzero(negative & (firing >= min_firing_pixels))
    chosen = candidates[np.argsort(-firing[candidates], kind="stable")][:max_firing]
    rest = np.setdiff1d(np.flatnonzero(negative), chosen)
    drawn = np.random.default_rng(seed).permutation(rest)[:num_random]
    return [(int(i), "firing") for i in chosen] + [(int(i), "random") for i in sorted(drawn)]


def firing_pixels(rendered: RenderedSlices, threshold: float = THRESHOLD, near_lung_pixels: int = 8) -> np.ndarray:
    """``(N,)`` pixels of each slice at or above ``threshold`` inside its lung grown by ``near_lung_pixels``."""
    near = rendered.lung
    if near_lung_pixels > 0 and near.size:
        near = ndi.binary_dilation(near, structure=np.ones((1, 3, 3), bool), iterations=int(near_lung_pixels))
    return ((rendered.probability >= threshold) & near).reshape(len(near), -1).sum(axis=1)


def select_positives(rendered: RenderedSlices, max_slices: int = 30, min_infection_share: float = 0.02) -> list[tuple[int, str]]:
    """``[(position in rendered, "positive"), ...]``: up to ``max_slices`` slices whose final infection
    (:attr:`RenderedSlices.infection`) covers at least ``min_infection_share`` of the crop, evenly spaced along the
    scan (neighbouring thin slices are near copies of each other)."""
    if rendered.infection is None:
        raise ValueError("the slices were rendered without the final infection (render_lung_slices(with_infection=True)).")
    n = len(rendered.slice_index)
    share = rendered.infection.reshape(n, -1).mean(axis=1) if n else np.zeros(0)
    candidates = np.flatnonzero(share >= min_infection_share)
    if candidates.size > max_slices:
        candidates = candidates[np.round(np.linspace(0, candidates.size - 1, max_slices)).astype(int)]
    return [(int(i), "positive") for i in candidates]


def _write_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def positive_ignore_mask(
    label: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray,
    min_probability: float = POSITIVE_IGNORE_PROBABILITY,
    rim_pixels: int = POSITIVE_IGNORE_RIM_PIXELS,
) -> np.ndarray:
    """Where a real-CT positive's pseudo-label ``label`` is not known, so that its loss ignores it: everything the
    model gives at least ``min_probability`` or the pipeline keeps as infection (``infection``) outside the label
    (calls the lesion gates dropped, the dense lung only the lung extension claims, the uncertain fringe), and a rim
    of ``rim_pixels`` around the label (where the pseudo-label's border is a guess). The rest of the slice is taught
    as not infection, the label as infection. 2D arrays of one crop."""
    label = np.asarray(label, dtype=bool)
    rim = ndi.binary_dilation(label, iterations=int(rim_pixels)) if rim_pixels > 0 and label.any() else label
    return (rim | np.asarray(infection, dtype=bool) | (np.asarray(probability) >= float(min_probability))) & ~label


def _write_slices(
    root: Path, name: str, rendered: RenderedSlices, chosen: list[tuple[int, str]], threshold: float = THRESHOLD
) -> list[dict]:
    """Write the chosen slices of one scan (image, mask, edge; a positive's ignore mask too) and return their manifest
    rows. A negative's mask is empty; a positive's is where the rendered final infection and the model's own
    first-pass call (``probability >= threshold``) agree, and the loss ignores what is uncertain around it
    (:func:`positive_ignore_mask`): the label is not taught as the whole truth, so the network is neither taught to
    shrink its lesions nor to call soft tissue infection."""
    near = firing_pixels(rendered)
    rows = []
    for pos, reason in chosen:
        k = int(rendered.slice_index[pos])
        stem = f"{name}_z{k:04d}.png"
        positive = reason == "positive"
        files = {key: f"{name}/{key}s/{stem}" for key in ("image", "mask", "edge", *(("ignore",) if positive else ()))}
        if positive:  # what the network calls on this crop and the pipeline keeps as infection
            mask = rendered.infection[pos] & (rendered.probability[pos] >= threshold)
            ignore = positive_ignore_mask(mask, rendered.infection[pos], rendered.probability[pos])
            _write_png(ignore.astype(np.uint8) * 255, root / files["ignore"])
        else:
            mask = np.zeros(rendered.images.shape[1:], dtype=bool)
        _write_png(np.round(rendered.images[pos] * 255.0).astype(np.uint8), root / files["image"])
        _write_png(mask.astype(np.uint8) * 255, root / files["mask"])
        _write_png(np.round(soft_edge_map(mask) * 255.0).astype(np.uint8), root / files["edge"])
        rows.append(
            {
                "scan": name, "slice_index": k, "z_mm": round(float(rendered.z_mm[pos]), 3),
                "image": files["image"], "label": files["mask"], "edge": files["edge"],
                "firing_pixels": int(near[pos]), "max_probability": round(float(rendered.probability[pos].max()), 4),
                "reason": reason, "ignore": files.get("ignore", ""),
            }
        )
    return rows


def _write_manifest(root: Path, rows: list[dict]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(root / MANIFEST, write)


def mine_hard_negatives(
    segmenter,
    scans: Sequence[tuple[str, object, np.ndarray | Callable[[RenderedSlices], np.ndarray] | None]],
    folder: str | os.PathLike,
    max_firing: int = 30,
    num_random: int = 10,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    min_lung_share: float = 0.0,
) -> list[dict]:
    """Render, select and write the hard negatives of ``scans`` into ``folder``; returns the manifest's rows.

    Args:
        segmenter: the :class:`~infnet_monai.pipeline.CTSegmenter` whose rendering and model are used.
        scans: ``(name, case or path, negative)`` triples; ``negative`` is ``None`` for a scan without COVID-19, or a
            function of the :class:`RenderedSlices` giving the ``(N,)`` bool mask of its slices known to be negative
            (the radiologists' slice labels of a COVID-19 scan).
        folder: output folder (``manifest.csv`` is replaced; the images of the scans named are rewritten).
        max_firing, num_random, seed, min_lung_share: see :func:`select_hard_negatives`.
        log: called with one line per scan.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name, case, negative in scans:
        rendered = render_lung_slices(segmenter, case)
        mask = negative(rendered) if callable(negative) else negative
        chosen = select_hard_negatives(rendered, mask, max_firing, num_random, min_lung_share=min_lung_share, seed=seed)
        rows += _write_slices(root, name, rendered, chosen)
        if log is not None:
            firing = sum(1 for _, r in chosen if r == "firing")
            log(f"{name}: {len(rendered.slice_index)} slices with lung, {firing} firing and {len(chosen) - firing} random kept")
    _write_manifest(root, rows)
    return rows


def mine_real_positives(
    segmenter,
    scans: Sequence[tuple[str, object]],
    folder: str | os.PathLike,
    max_slices: int = 30,
    min_infection_share: float = 0.02,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Render, select and write real-CT positives of ``scans`` (COVID-19 CT without pixel labels) into ``folder``;
    returns the manifest's rows (``reason`` ``positive``).

    Each slice's mask is the pipeline's final infection (:func:`render_lung_slices` ``with_infection``) where the
    model itself calls infection on the crop: a pseudo-label that only the lesions which pass every gate of
    ``segmenter`` make. Since that label is a strict subset of the model's calls, each slice also gets an ignore
    mask (:func:`positive_ignore_mask`: the label's rim, the dropped calls, the lung extension's dense lung) that the
    loss leaves out (``train_slice_transforms(loss_mask=True)``), so the network is not taught to shrink its
    lesions. Fine-tuning with the hard negatives alone teaches the network that real CT is not infection; these
    slices were meant to keep the real-CT look of disease in the training (:func:`select_positives` for
    ``max_slices`` and ``min_infection_share``). The whole pipeline and then the first crop pass run the network
    twice per scan: mining is offline.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name, case in scans:
        rendered = render_lung_slices(segmenter, case, with_infection=True)
        chosen = select_positives(rendered, max_slices, min_infection_share)
        rows += _write_slices(root, name, rendered, chosen)
        if log is not None:
            log(f"{name}: {len(rendered.slice_index)} slices with lung, {len(chosen)} positives kept")
    _write_manifest(root, rows)
    return rows
