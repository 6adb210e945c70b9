"""One CT volume in, its masks and burden statistics out, in memory: :class:`VolumePredictor` writes no files.

The predictor runs the four parts of the pipeline (:mod:`infnet_monai.pipeline.components`) on one volume:

1. the whole-volume part of ``preprocessing`` (load, RAS, lung mask from Hounsfield units);
2. the slice-wise part of ``preprocessing``, the ``inferer`` (with ``network_fn``) and the inversion of that part,
   streamed in slabs of axial slices, so that memory beyond the volume, its lung mask and the probabilities does not
   grow with the scan's length; the crop boxes come from the whole lung, so slabs give what the whole volume gives;
3. ``postprocessing`` on the RAS grid, ending on the input's voxel grid.

Files are the business of :class:`~infnet_monai.pipeline.writer.CaseWriter`, cohorts that of
:class:`~infnet_monai.pipeline.runner.CohortRunner`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, apply_transform

from infnet_monai.inferers.lung_crop import LUNG_CROP_MARGINS, slice_boxes, strided_slices
from infnet_monai.pipeline.components import split_slicewise
from infnet_monai.utils.arrays import fortran_order
from infnet_monai.utils.device import autocast_context
from infnet_monai.utils.memory import release_memory

__all__ = ["CaseResult", "VolumePredictor", "apply_steps"]

SliceProgress = Callable[[int, int], None]
"""``progress(slices done, slices with lung)``: called after every batch of slices of the first crop pass; the total
is known before the first batch (reruns with larger crops do not move it)."""


@dataclass
class CaseResult:
    """What :class:`VolumePredictor` finds in one volume, on the input's voxel grid.

    Attributes:
        row: burden statistics and the volume's facts (``shape``, ``spacing_mm``, ``lung_hu_volume_ml``,
            ``slices_inferred``, ...).
        infection: ``(X, Y, Z)`` uint8 0/1.
        nodules: ``(X, Y, Z)`` uint8 0/1, the nodule-like lesions kept out of the infection (``None`` when the
            post-processing has none).
        lung: ``(X, Y, Z)`` uint8, 0 background, 1 right, 2 left.
        classes: ``(X, Y, Z)`` uint8, 0 background, 1 GGO, 2 consolidation (with the class head), else ``None``.
        probability: ``(X, Y, Z)`` float32 infection probability when asked for, else ``None``.
        image: ``(X, Y, Z)`` the CT in Hounsfield units (for the overview picture).
        affine: ``(4, 4)`` voxel-to-world (RAS) matrix of the input's grid.
        boxes: ``(Z', 4)`` crop boxes of the last crop pass on the slices' grid, ``-1`` rows for slices not run.
        lesions: one row per 3D lesion (:func:`~infnet_monai.stats.lesions.lesion_table`), the infection's largest
            first, then the nodule-like ones.
    """

    row: dict
    infection: np.ndarray
    lung: np.ndarray
    classes: np.ndarray | None = None
    probability: np.ndarray | None = None
    image: np.ndarray | None = None
    affine: np.ndarray | None = None
    boxes: np.ndarray | None = None
    lesions: list[dict] | None = None
    nodules: np.ndarray | None = None


def apply_steps(chain: Compose, data: dict, seconds: dict[str, float] | None = None) -> dict:
    """``chain(data)`` one step at a time, updating ``data`` itself: what a step replaces or drops (the loaded volume
    once oriented, the probabilities once deleted) is freed at once, not when the chain returns. With ``seconds``,
    each step's wall time is added to ``seconds[<its class name>]``."""
    for step in chain.flatten().transforms:
        start = time.perf_counter()
        out = apply_transform(step, data)
        if out is not data:
            data.clear()
            data.update(out)
        del out
        if seconds is not None:
            name = type(step).__name__
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    return data


class _Timed:
    """``fn`` that adds the wall time of its calls to ``seconds``."""

    def __init__(self, fn: Callable, seconds: list[float]) -> None:
        self.fn, self.seconds = fn, seconds

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds[0] += time.perf_counter() - start

    @property
    def stages(self) -> tuple | None:
        """The stages of a staged network function (:class:`~infnet_monai.inferers.backends.StagedMaps`), timed."""
        stages = getattr(self.fn, "stages", None)
        return None if stages is None else tuple(_Timed(s, self.seconds) for s in stages)


class VolumePredictor:
    """Masks and burden statistics of one CT volume, in memory.

    Args:
        network_fn: maps ``(B, C, H, W)`` prepared slices to ``(B, K, H, W)`` probabilities, channel 0 the infection
            and, with the class head, channel 1 the consolidation share
            (:class:`~infnet_monai.inferers.ProbabilityMaps`).
        preprocessing: the chain from ``{"image": case, path or volume}`` to ``"image"`` (prepared) and ``"lung"``
            (:func:`~infnet_monai.pipeline.components.ct_preprocessing`); its slice-wise tail streams in slabs.
        inferer: a :class:`~infnet_monai.inferers.LungCropSliceInferer` (or anything with its ``infer`` method).
        postprocessing: the chain from ``{"image", "lung", "pred", "share"}`` on the RAS grid to ``"infection"``,
            ``"nodules"`` (optional), ``"lung"``, ``"classes"``, ``"burden"`` and ``"image"`` on the input's grid
            (:func:`~infnet_monai.pipeline.components.ct_postprocessing`).
        device: where the network runs (for mixed precision).
        amp: mixed precision on CUDA.
        slab_slices: axial slices that stream together through the slice-wise preprocessing, the network and the
            inversion (bounds the memory of those steps; the results do not depend on it, except with
            ``max_slice_gap_mm``, where each slab's first and last slices with lung are run).
        max_slice_gap_mm: opt-in z-subsampling for thin slices: the network runs on slices at most this far apart
            (every ``floor(max_slice_gap_mm / slice spacing)``-th slice with lung, and the ends of each run of them)
            and the slices between are interpolated linearly; ``None`` (the default) runs every slice. The
            agreement with the full run on real scans is in docs/performance.md.
    """

    def __init__(
        self,
        network_fn: Callable[[torch.Tensor], torch.Tensor],
        preprocessing: Compose,
        inferer: Any,
        postprocessing: Compose,
        device: torch.device | str = "cpu",
        amp: bool = True,
        slab_slices: int = 32,
        max_slice_gap_mm: float | None = None,
    ) -> None:
        if int(slab_slices) < 1:
            raise ValueError(f"slab_slices must be >= 1, got {slab_slices}.")
        if max_slice_gap_mm is not None and not float(max_slice_gap_mm) > 0:
            raise ValueError(f"max_slice_gap_mm must be > 0 (or None), got {max_slice_gap_mm}.")
        self.max_slice_gap_mm = None if max_slice_gap_mm is None else float(max_slice_gap_mm)
        self.network_fn = network_fn
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.slab_slices = int(slab_slices)
        self.volume_preprocessing, self.slice_preprocessing = split_slicewise(preprocessing)
        self._slab_invert = Invertd("pred", transform=self.slice_preprocessing, orig_keys="image", nearest_interp=False)
        self._to_input_grid = Invertd(
            "probability", transform=self.volume_preprocessing, orig_keys="image", nearest_interp=False
        )

    # ------------------------------------------------------------------ the network's maps
    @torch.no_grad()
    def _maps_ras(
        self, hu_ras: MetaTensor, lung_ras: np.ndarray, progress: SliceProgress | None, network_seconds: list[float] | None = None
    ):
        """``(probability, share, boxes, run)`` on the RAS grid of ``hu_ras``: the infection probability
        ``(1, X, Y, Z)`` (float16), with the class head the consolidation share ``(1, X, Y, Z)`` as uint8 in 1/255
        steps (else ``None``), the crop boxes of the last pass on the slices' grid, and the slices with lung the
        network ran in its first pass (all of them unless ``max_slice_gap_mm``). The network's wall time is added to
        ``network_seconds[0]``."""
        n_slices = int(hu_ras.shape[3])
        lung_t = MetaTensor(torch.from_numpy(np.ascontiguousarray(lung_ras[None] > 0)), meta=dict(hu_ras.meta))
        for step in self.slice_preprocessing.transforms:  # the lung in the slices' orientation, for the whole lung's boxes
            if isinstance(step, Orientationd):
                lung_t = step.ornt_transform(lung_t)
        boxes = slice_boxes(lung_t[0].numpy(), getattr(self.inferer, "margins", LUNG_CROP_MARGINS))
        del lung_t
        stride = self.z_stride(hu_ras)
        total = sum(
            strided_slices(np.flatnonzero(boxes[z0 : z0 + self.slab_slices, 0] >= 0), stride, z0).size
            for z0 in range(0, n_slices, self.slab_slices)
        )
        done = 0
        if progress is not None:
            progress(0, total)  # the total is known before the first batch
        out: np.ndarray | None = None
        share: np.ndarray | None = None
        last_boxes = np.full((n_slices, 4), -1, dtype=np.int64)
        network = _Timed(self.network_fn, network_seconds if network_seconds is not None else [0.0])
        for z0 in range(0, n_slices, self.slab_slices):
            z1 = min(n_slices, z0 + self.slab_slices)
            if not (boxes[z0:z1, 0] >= 0).any():
                continue  # no lung in this slab: nothing to run, probability 0
            slab_progress = (lambda d, _t, o=done: progress(o + d, total)) if progress is not None else None
            pred, report = self._slab(hu_ras, lung_ras, z0, z1, boxes[z0:z1], slab_progress, network, stride)
            done += report.first_pass
            last_boxes[z0:z1] = report.boxes
            if out is None:
                out = np.zeros((1, *hu_ras.shape[1:]), dtype=np.float16)
                share = np.zeros((1, *hu_ras.shape[1:]), dtype=np.uint8) if pred.shape[0] > 1 else None
            # the casts in torch's vectorised kernels: numpy's float32 -> float16 and rounding took 3 s on 300 slices
            torch.from_numpy(out)[..., z0:z1].copy_(torch.from_numpy(pred[:1]))
            if share is not None:  # the share in 1/255 steps (exact at the 0.5 class threshold), a byte a voxel
                torch.from_numpy(share)[..., z0:z1].copy_(torch.from_numpy(pred[1:2]).mul(255.0).round_())
            del pred
            release_memory()  # the slab's blocks go back to the system, not into a growing heap
        if out is None:  # no slice holds lung: the network is never run
            out, share = np.zeros((1, *hu_ras.shape[1:]), dtype=np.float16), None
        return out, share, last_boxes, total

    def z_stride(self, hu_ras: MetaTensor) -> int:
        """Every how many slices the network runs on ``hu_ras`` (RAS, slices along its last axis): 1, or with
        ``max_slice_gap_mm`` the most slices that span at most that gap."""
        if self.max_slice_gap_mm is None:
            return 1
        spacing = float(np.linalg.norm(np.asarray(hu_ras.affine.cpu().numpy(), dtype=np.float64)[:3, 2]))
        return max(1, int(np.floor(self.max_slice_gap_mm / spacing + 1e-6)))

    def _slab(self, hu_ras: MetaTensor, lung_ras: np.ndarray, z0: int, z1: int, boxes, progress, network=None, stride=1):
        """Slices ``z0:z1`` through the slice-wise preprocessing, the inferer and the preprocessing's inversion:
        ``(probabilities (K, X, Y, n) on the RAS grid, the inferer's crop report)``."""
        meta = dict(hu_ras.meta)
        affine = np.array(hu_ras.affine.cpu().numpy(), dtype=np.float64)
        affine[:3, 3] += affine[:3, 2] * z0  # the slab's own origin
        meta["affine"] = torch.as_tensor(affine)
        image = MetaTensor(hu_ras.as_tensor()[..., z0:z1], meta=meta)  # a fresh history: only this chain is inverted
        lung = MetaTensor(torch.from_numpy(np.ascontiguousarray(lung_ras[None, :, :, z0:z1] > 0)), meta=dict(meta))
        data = self.slice_preprocessing({"image": image, "lung": lung})
        x = data["image"].as_tensor().unsqueeze(0)  # (1, C, X', Y', n)
        with autocast_context(self.device, self.amp):
            options = {"z_stride": stride, "z_offset": z0} if stride > 1 else {}  # any inferer without the option
            report = self.inferer.infer(
                x, network or self.network_fn, data["lung"][0].as_tensor(), boxes=boxes, progress=progress, **options
            )
        prob = report.probability
        pred = MetaTensor(prob[0].float().cpu(), meta=data["image"].meta, applied_operations=data["image"].applied_operations)
        report.probability = None  # the report's boxes and counts stay; its tensor is freed
        del x, prob, image, lung
        back = self._slab_invert({"image": data["image"], "pred": pred})["pred"]
        return back.clamp_(0.0, 1.0).numpy(), report

    # ------------------------------------------------------------------ one volume
    def prepare(self, image: Any, progress: SliceProgress | None = None) -> dict:
        """The whole-volume preprocessing of ``image`` and the network's maps on the RAS grid: ``"image"`` (HU),
        ``"lung"``, ``"pred"`` (the infection probability), with the class head ``"share"`` (the consolidation
        share, uint8 in 1/255 steps) and ``"boxes"`` (the crop boxes). :meth:`finish` completes it; a copy can be
        finished with other post-processing (``scripts/evaluate_3d.py`` compares settings without running the
        network again)."""
        seconds: dict[str, float] = {}
        data = apply_steps(self.volume_preprocessing, {"image": image}, seconds)
        start, network_seconds = time.perf_counter(), [0.0]
        prob, share, boxes, run = self._maps_ras(data["image"], np.asarray(data["lung"][0]), progress, network_seconds)
        seconds["network"] = network_seconds[0]
        seconds["slices (preparation, crops, inversion)"] = time.perf_counter() - start - seconds["network"]
        if self._with_share() and share is None:  # nothing inferred: an all-background class map
            share = np.zeros(prob.shape, dtype=np.uint8)
        data["pred"] = MetaTensor(torch.from_numpy(prob), meta=dict(data["image"].meta))
        if share is not None:
            data["share"] = MetaTensor(torch.from_numpy(share), meta=dict(data["image"].meta))
        data["boxes"] = boxes
        data["slices_inferred"] = run
        data["stage_seconds"] = seconds
        return data

    def _with_share(self) -> bool:
        """Whether the network function has the GGO / consolidation head (two output channels)."""
        return getattr(self.network_fn, "classes", None) is not None

    def finish(self, data: dict, keep_probability: bool = False, postprocessing: Compose | None = None) -> CaseResult:
        """Post-processing (``postprocessing``, default this predictor's), statistics and masks on the input's grid
        from what :meth:`prepare` returned (which it consumes)."""
        spacing = tuple(float(s) for s in data["image"].pixdim[:3])
        lung_hu_ml = round(float(np.count_nonzero(data["lung"].numpy())) * float(np.prod(spacing)) / 1000.0, 3)
        probability = self._input_grid_probability(data) if keep_probability else None
        boxes = data.pop("boxes", None)
        with_lung = int((boxes[:, 0] >= 0).sum()) if boxes is not None else 0
        run = int(data.pop("slices_inferred", with_lung))
        seconds = data.pop("stage_seconds", {})
        data = apply_steps(postprocessing or self.postprocessing, data, seconds)
        release_memory()
        volume = data["image"]
        row = dict(data["burden"])
        row["shape"] = [int(s) for s in volume.shape[1:]]
        row["spacing_mm"] = [round(float(s), 6) for s in volume.pixdim[:3]]
        row["lung_hu_volume_ml"] = lung_hu_ml
        row["slices_inferred"] = run
        row["slices_interpolated"] = with_lung - run  # 0 unless max_slice_gap_mm
        # in NIfTI's voxel order (first axis fastest), the order the NIfTI files and the DICOM-SEG's frames read them;
        # each mask leaves ``data`` as it is copied, so at most one mask is held twice
        masks = {
            k: fortran_order(data.pop(k)[0].numpy(), np.uint8)
            for k in ("infection", "nodules", "lung", "classes")
            if k in data
        }
        affine = np.asarray(volume.affine.cpu().numpy(), dtype=np.float64)
        image = volume[0].numpy()
        lesions = data.get("lesions")  # the chain's read-out (CaseReadoutd), on the RAS grid
        row["stage_seconds"] = {name: round(value, 3) for name, value in seconds.items()}
        return CaseResult(
            row=row, infection=masks["infection"], lung=masks["lung"], classes=masks.get("classes"),
            probability=probability, image=image, boxes=boxes, affine=affine, lesions=lesions,
            nodules=masks.get("nodules"),
        )

    def __call__(self, image: Any, keep_probability: bool = False, progress: SliceProgress | None = None) -> CaseResult:
        """Masks and statistics of one volume (``image``: a ``(1, X, Y, Z)`` CT in Hounsfield units with its affine,
        or what ``preprocessing`` loads, a case or a path); see :class:`CaseResult`."""
        return self.finish(self.prepare(image, progress), keep_probability)

    def _input_grid_probability(self, data: dict) -> np.ndarray:
        """The infection probability (channel 0 of ``"pred"``) on the input's voxel grid, float32."""
        prob = MetaTensor(torch.from_numpy(data["pred"].numpy()[0:1].astype(np.float32)), meta=dict(data["image"].meta))
        out = self._to_input_grid({"image": data["image"], "probability": prob})["probability"]
        return fortran_order(out[0].numpy())

    def probability(self, image: Any) -> MetaTensor:
        """Infection probability on the voxel grid of ``image`` (``(1, X, Y, Z)`` CT in HU with its affine): float32
        in [0, 1] (computed in float32, kept in float16 on the way), 0 on slices without lung, same affine."""
        data = self.prepare(image)
        return MetaTensor(torch.from_numpy(self._input_grid_probability(data)[None]), meta=image.meta)
