# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Slice-wise inference on a training-like field of view: every axial slice cropped to its lungs.

The labeled COVID-SemiSeg slices the network learns from were each cropped close to the lungs (the lungs, infection
included, span a median 98% x 91% of the slice). A whole body section resized to the network's input shows the lungs
smaller and with more surrounding tissue than training ever did. :class:`LungCropSliceInferer` therefore crops each
axial slice to the bounding box of its lung mask plus the margins measured on the training slices
(:data:`LUNG_CROP_MARGINS`), resizes the crop to the network's input, runs MONAI's
:class:`~monai.inferers.SliceInferer` over the stacked crops and pastes the probabilities back onto the slice grid.
Slices without lung are not run at all (probability 0), which is also where most of the time goes on long scans.

A lung mask from Hounsfield units misses dense consolidation at the pleura, so a box drawn around it can cut the
disease off. After each pass, a slice whose infection (connected to its lung) reaches an edge of the box that is not
the image's edge gets its box grown to enclose that infection, and is run again (at most ``max_rounds`` passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SliceInferer
from scipy import ndimage as ndi

from infnet_monai.defaults import THRESHOLD

__all__ = [
    "HEAD_BATCH_SLICES", "HEAD_MARGIN", "LUNG_CROP_MARGINS", "CropReport", "LungCropSliceInferer", "slice_boxes",
    "grow_boxes", "strided_slices", "interpolate_slices",
]

HEAD_MARGIN: float = 0.01
"""How far below the infection threshold a slice's infection may stay and still get the GGO / consolidation head
(:attr:`LungCropSliceInferer.head_threshold`): more than the float16 rounding of the stored probability (2.4e-4 at
0.5), so a voxel the mask takes always has its share."""

HEAD_BATCH_SLICES: int = 4
"""Slices per call of the GGO / consolidation head when it runs apart (:meth:`LungCropSliceInferer.infer` with a
staged network): its buffers grow with the batch (OpenVINO, 2 cores: 173 MB at 16 slices, 28 MB at 4) and its speed
does not (0.18-0.19 s per 16 slices at 2, 4, 8 or 16)."""

LUNG_CROP_MARGINS: tuple[float, float, float, float] = (0.012, 0.010, 0.060, 0.018)
"""Margins around the lungs' bounding box, as fractions of the box's extent, in the order (start, end) of the first
in-plane axis then (start, end) of the second, for slices oriented as :data:`infnet_monai.transforms.ct.SLICE_AXCODES`
(patient's right to left, then anterior to posterior). Measured by ``scripts/measure_crop_margins.py``: the medians,
over the 50 labeled training slices, of the distance from the lungs' box (aerated lung below -320 HU plus the
radiologists' infection mask, holes filled) to the slice's edge."""


def slice_boxes(lung: np.ndarray, margins: Sequence[float] = LUNG_CROP_MARGINS) -> np.ndarray:
    """The in-plane bounding box of the whole ``lung`` grown by ``margins`` and clipped to the slice, for every axial
    slice that holds lung.

    One box for all slices, not each slice's own: near the apex and the bases, where the lung is a thin crescent, a
    slice's own box would magnify it beyond anything seen in training (on ``abdomen_3mm`` per-slice boxes marked the
    liver dome as infection).

    Args:
        lung: ``(X, Y, Z)`` mask; slices are ``lung[:, :, k]``.
        margins: fractions of the box's extent added before / after along X, then along Y.

    Returns:
        ``(Z, 4)`` int array of ``(x0, x1, y0, y1)`` (end exclusive); ``-1`` rows for slices without lung.
    """
    lung = np.asarray(lung) > 0
    boxes = np.full((lung.shape[2], 4), -1, dtype=np.int64)
    xs, ys = lung.any(axis=1), lung.any(axis=0)  # (X, Z), (Y, Z)
    with_lung = np.flatnonzero(xs.any(axis=0))
    if with_lung.size:
        boxes[with_lung] = _grown_box(np.flatnonzero(xs.any(axis=1)), np.flatnonzero(ys.any(axis=1)), lung.shape[:2], margins)
    return boxes


def _grown_box(xi: np.ndarray, yi: np.ndarray, shape: Sequence[int], margins: Sequence[float]) -> np.ndarray:
    x0, x1, y0, y1 = int(xi[0]), int(xi[-1]) + 1, int(yi[0]), int(yi[-1]) + 1
    w, h = x1 - x0, y1 - y0
    return np.array(
        [
            max(0, int(np.floor(x0 - margins[0] * w))),
            min(int(shape[0]), int(np.ceil(x1 + margins[1] * w))),
            max(0, int(np.floor(y0 - margins[2] * h))),
            min(int(shape[1]), int(np.ceil(y1 + margins[3] * h))),
        ],
        dtype=np.int64,
    )


def grow_boxes(
    boxes: np.ndarray,
    lung: np.ndarray,
    probability: np.ndarray,
    threshold: float = 0.5,
    margins: Sequence[float] = LUNG_CROP_MARGINS,
) -> np.ndarray:
    """Boxes grown where the infection found next to the lung reaches a box edge that is not the slice's edge.

    Args:
        boxes: ``(Z, 4)`` boxes from :func:`slice_boxes`.
        lung: ``(X, Y, Z)`` lung mask.
        probability: ``(X, Y, Z)`` infection probability from the last pass.
        threshold: probability taken as infection.
        margins: as in :func:`slice_boxes`.

    Returns:
        new ``(Z, 4)`` boxes, each containing the old one; equal to ``boxes`` where nothing needs to grow.
    """
    out = boxes.copy()
    shape = lung.shape[:2]
    for k in np.flatnonzero(boxes[:, 0] >= 0):
        x0, x1, y0, y1 = (int(v) for v in boxes[k])
        found = probability[x0:x1, y0:y1, k] >= threshold
        if not found.any():
            continue
        edges = np.zeros_like(found)
        edges[0, :], edges[-1, :], edges[:, 0], edges[:, -1] = x0 > 0, x1 < shape[0], y0 > 0, y1 < shape[1]
        if not (found & edges).any():
            continue
        region = found | (lung[x0:x1, y0:y1, k] > 0)
        labels, _ = ndi.label(region)
        attached = np.unique(labels[lung[x0:x1, y0:y1, k] > 0])
        touching = np.unique(labels[found & edges])
        if not np.intersect1d(attached[attached > 0], touching[touching > 0]).size:
            continue  # what touches the edge is not connected to this slice's lung
        keep = np.isin(labels, attached[attached > 0])
        xi, yi = np.flatnonzero(keep.any(axis=1)) + x0, np.flatnonzero(keep.any(axis=0)) + y0
        grown = _grown_box(xi, yi, shape, margins)
        grown = np.array([min(grown[0], x0), max(grown[1], x1), min(grown[2], y0), max(grown[3], y1)])
        # a side the infection touches moves a further 5% (at least its margin) beyond what is found so far: the
        # infection cut by the crop continues past it
        touched = (found[0].any(), found[-1].any(), found[:, 0].any(), found[:, -1].any())
        limits = (0, shape[0], 0, shape[1])
        for side in range(4):
            if touched[side] and (x0, x1, y0, y1)[side] != limits[side]:
                step = max(1, int(np.ceil(max(margins[side], 0.05) * ((x1 - x0) if side < 2 else (y1 - y0)))))
                grown[side] = int(np.clip(grown[side] + (step if side % 2 else -step), 0, shape[side // 2]))
        out[k] = grown
    return out


@dataclass
class CropReport:
    """What one call of :meth:`LungCropSliceInferer.infer` did.

    Attributes:
        probability: ``(1, K, X, Y, Z)`` float32 probabilities on the inferer's output device; 0 on slices without
            lung.
        boxes: ``(Z, 4)`` crop boxes of the last pass (``(x0, x1, y0, y1)``, end exclusive), ``-1`` rows for slices
            not run.
        first_pass: slices run in the first pass (the slices with lung).
        slices_run: slices run in all passes (reruns with grown boxes included).
        rounds: passes made.
        interpolated: slices with lung not run but interpolated between their neighbours (``z_stride`` > 1).
        head_slices: with a staged network (:class:`~infnet_monai.inferers.backends.StagedMaps`), the slices the
            GGO / consolidation head ran on (once each, on its last crop); ``None`` when the head ran with the
            infection on every slice run.
    """

    probability: torch.Tensor | None
    boxes: np.ndarray
    first_pass: int = 0
    slices_run: int = 0
    rounds: int = 0
    interpolated: int = 0
    head_slices: int | None = None


def strided_slices(todo: np.ndarray, stride: int, offset: int = 0) -> np.ndarray:
    """The slices of ``todo`` (sorted indices of the slices with lung) that are run with ``stride``: every slice whose
    index plus ``offset`` is a multiple of ``stride``, and both ends of every run of consecutive slices, so that each
    slice left out lies between two that are run."""
    todo = np.asarray(todo, dtype=np.int64)
    if stride <= 1 or todo.size == 0:
        return todo
    breaks = np.flatnonzero(np.diff(todo) != 1)
    ends = np.concatenate([todo[:1], todo[breaks], todo[breaks + 1], todo[-1:]])
    return np.union1d(todo[(todo + offset) % stride == 0], ends)


def interpolate_slices(out: torch.Tensor, run: np.ndarray, todo: np.ndarray) -> int:
    """Fill the slices of ``todo`` that are not in ``run`` (both sorted; see :func:`strided_slices`) of ``out``
    ``(1, K, X, Y, Z)`` in place, linearly along Z between the nearest run slices on either side; the count filled."""
    skipped = np.setdiff1d(todo, run)
    for z in skipped:
        j = int(np.searchsorted(run, z))
        a, b = int(run[j - 1]), int(run[j])
        t = (int(z) - a) / (b - a)
        torch.add(out[..., a] * (1.0 - t), out[..., b], alpha=t, out=out[..., int(z)])
    return int(skipped.size)


class LungCropSliceInferer(Inferer):
    """Run a 2D network over the axial slices of a volume, each cropped to its lungs and resized.

    Stateless: :meth:`infer` returns the probabilities with a :class:`CropReport`; calling the inferer returns the
    probabilities alone, as MONAI inferers do.

    Args:
        roi_size: the network's in-plane input size.
        sw_batch_size: slices per forward pass.
        sw_device: device of the network.
        device: device of the output.
        margins: crop margins (see :data:`LUNG_CROP_MARGINS`).
        max_rounds: passes at most; rounds after the first rerun only slices whose box grew (see :func:`grow_boxes`).
        grow_threshold: probability taken as infection when deciding to grow a box (the segmentation threshold).
        head_threshold: with a staged network, the head runs only on the slices whose infection probability reaches
            this on the last crop (default ``grow_threshold`` - :data:`HEAD_MARGIN`): the pipeline reads the share
            only inside the infection mask (probability >= the threshold), so elsewhere its 0 changes nothing.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 16,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        margins: Sequence[float] = LUNG_CROP_MARGINS,
        max_rounds: int = 3,
        grow_threshold: float = THRESHOLD,
        head_threshold: float | None = None,
    ) -> None:
        super().__init__()
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}.")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
        if not 0.0 < grow_threshold <= 1.0:
            raise ValueError(f"grow_threshold must be in (0, 1], got {grow_threshold}.")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.slice_inferer = SliceInferer(
            roi_size=self.roi_size, sw_batch_size=sw_batch_size, spatial_dim=0, sw_device=sw_device, device=device, progress=False
        )
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.margins = tuple(float(m) for m in margins)
        self.max_rounds = int(max_rounds)
        self.grow_threshold = float(grow_threshold)
        self.head_threshold = max(0.0, self.grow_threshold - HEAD_MARGIN) if head_threshold is None else float(head_threshold)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[[torch.Tensor], torch.Tensor],
        lung: np.ndarray | torch.Tensor,
        boxes: np.ndarray | None = None,
    ) -> torch.Tensor:
        """``(1, K, X, Y, Z)`` probabilities on the grid of ``inputs``; see :meth:`infer`."""
        return self.infer(inputs, network, lung, boxes).probability

    def infer(
        self,
        inputs: torch.Tensor,
        network: Callable[[torch.Tensor], torch.Tensor],
        lung: np.ndarray | torch.Tensor,
        boxes: np.ndarray | None = None,
        progress: Callable[[int, int], None] | None = None,
        z_stride: int = 1,
        z_offset: int = 0,
    ) -> CropReport:
        """Probabilities on the grid of ``inputs`` and the crop boxes used.

        Args:
            inputs: ``(1, C, X, Y, Z)`` prepared volume (intensity-normalised, slices along Z), or a slab of one.
            network: maps ``(B, C, H, W)`` to ``(B, K, H, W)`` probabilities; channel 0 is the infection, which
                decides the box growth (further channels, e.g. the consolidation share, are carried along). A staged
                network (with ``stages``, :class:`~infnet_monai.inferers.backends.StagedMaps`) runs its head after the
                reruns, on :attr:`head_threshold`'s slices (channel 1 is 0 elsewhere); until then each slice's
                infection on its last crop is kept (``H x W`` float32 a slice), so give long volumes in slabs, as
                :class:`~infnet_monai.pipeline.predictor.VolumePredictor` does.
            lung: ``(X, Y, Z)`` lung mask on the same grid.
            boxes: ``(Z, 4)`` first-pass crop boxes (default :func:`slice_boxes` of ``lung``); a slab of a volume
                passes its rows of the whole volume's boxes, so that slabs give what the whole volume gives.
            progress: called as ``progress(slices done, slices to do)`` after every batch of the first pass (the
                total is known before the first batch; reruns do not move it).
            z_stride: with ``k`` > 1, the network runs only every ``k``-th slice with lung (and the ends of each run
                of consecutive slices with lung, :func:`strided_slices`); the others are interpolated linearly along
                Z between the nearest slices run, after the reruns (which run only slices that were run).
            z_offset: the index of ``inputs``' first slice in the whole volume, so that the slabs of a volume keep
                one rhythm (each slab's own first and last slices with lung are run as well).

        Returns:
            :class:`CropReport`; its ``probability`` is ``(1, K, X, Y, Z)`` float32 on ``self.device``.
        """
        if inputs.ndim != 5 or inputs.shape[0] != 1:
            raise ValueError(f"inputs must be (1, C, X, Y, Z), got {tuple(inputs.shape)}.")
        lung_np = np.asarray(lung.cpu() if isinstance(lung, torch.Tensor) else lung) > 0
        if lung_np.shape != tuple(inputs.shape[2:]):
            raise ValueError(f"lung mask shape {lung_np.shape} differs from the volume's {tuple(inputs.shape[2:])}.")
        out: torch.Tensor | None = None
        boxes = slice_boxes(lung_np, self.margins) if boxes is None else np.asarray(boxes, dtype=np.int64).copy()
        if boxes.shape != (lung_np.shape[2], 4):
            raise ValueError(f"boxes must be ({lung_np.shape[2]}, 4), got {boxes.shape}.")
        with_lung = np.flatnonzero(boxes[:, 0] >= 0)
        if int(z_stride) < 1:
            raise ValueError(f"z_stride must be >= 1, got {z_stride}.")
        run = strided_slices(with_lung, int(z_stride), int(z_offset))
        skipped = np.setdiff1d(np.arange(len(boxes)), run) if run.size < with_lung.size else None
        todo = run
        report = CropReport(probability=None, boxes=boxes, first_pass=int(run.size))
        stages = getattr(network, "stages", None) if skipped is None else None  # the head apart: see StagedMaps
        crops_p: dict[int, torch.Tensor] | None = None
        if stages is not None and run.size:
            network, share = stages
            crops_p = {}  # each slice's infection on its last crop, for the head
            out = torch.zeros((1, 2, *inputs.shape[2:]), dtype=torch.float32, device=self.device)
        for round_ in range(self.max_rounds):
            if todo.size == 0:
                break
            counted = self._counted(network, report, progress if round_ == 0 else None)
            out = self._run(inputs, counted, report.boxes, todo, out, crops_p)
            report.rounds = round_ + 1
            if round_ + 1 == self.max_rounds:
                break
            grown = grow_boxes(report.boxes, lung_np, out[0, 0].cpu().numpy(), self.grow_threshold, self.margins)
            if skipped is not None:  # only slices that are run grow (the others are interpolated)
                grown[skipped] = report.boxes[skipped]
            todo = np.flatnonzero((grown != report.boxes).any(axis=1))
            report.boxes = grown
        if crops_p is not None:
            report.head_slices = self._run_head(inputs, share, report.boxes, crops_p, out)
        if out is None:  # no slice holds lung: the network is never run, one channel of zeros
            out = torch.zeros((1, 1, *inputs.shape[2:]), dtype=torch.float32, device=self.device)
        elif skipped is not None:
            report.interpolated = interpolate_slices(out, run, with_lung)
        report.probability = out
        return report

    @staticmethod
    def _counted(network, report: CropReport, progress) -> Callable[[torch.Tensor], torch.Tensor]:
        """``network`` that counts the slices it runs into ``report`` and tells ``progress`` (first pass only)."""
        start = report.slices_run

        def run(x: torch.Tensor) -> torch.Tensor:
            y = network(x)
            report.slices_run += int(x.shape[0])
            if progress is not None:
                progress(report.slices_run - start, report.first_pass)
            return y

        return run

    def _run(
        self, inputs, network, boxes: np.ndarray, slices: np.ndarray, out: torch.Tensor | None,
        crops_p: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        # the crops are stacked a few batches at a time, so their memory does not grow with the scan's length; they
        # are stacked along the first spatial axis, so that every slice the SliceInferer takes is contiguous memory
        step = self.slice_inferer.sw_batch_size * 4
        for start in range(0, len(slices), step):
            part = slices[start : start + step]
            groups = _same_box_groups(boxes, part)
            crops = torch.empty((len(part), inputs.shape[1], *self.roi_size), dtype=torch.float32, device=inputs.device)
            for box, at in groups:  # slices that share a box are cropped and resized together
                crops[torch.as_tensor(at)] = self._crops(inputs[0], box, part[at])
            prob = self.slice_inferer(crops.transpose(0, 1).contiguous()[None], network)[0]  # (K, n, H, W)
            del crops
            if out is None:
                out = torch.zeros((1, prob.shape[0], *inputs.shape[2:]), dtype=torch.float32, device=self.device)
            if crops_p is not None:
                for i, k in enumerate(part):
                    crops_p[int(k)] = prob[0, i].clone()
            _paste(out, slice(0, prob.shape[0]), prob, groups, part, clear=True)
        return out

    def _run_head(self, inputs, share, boxes: np.ndarray, crops_p: dict[int, torch.Tensor], out: torch.Tensor) -> int:
        """The head ``share`` on the slices of ``crops_p`` (their infection on the last crop) that reach
        :attr:`head_threshold`, each on its last crop, pasted into channel 1 of ``out``; the slices it ran."""
        slices = np.array(sorted(k for k, p in crops_p.items() if float(p.max()) >= self.head_threshold), dtype=np.int64)
        step = self.slice_inferer.sw_batch_size * 4
        for start in range(0, len(slices), step):
            part = slices[start : start + step]
            groups = _same_box_groups(boxes, part)
            crops = torch.empty((len(part), inputs.shape[1] + 1, *self.roi_size), dtype=torch.float32, device=inputs.device)
            for box, at in groups:
                crops[torch.as_tensor(at), :-1] = self._crops(inputs[0], box, part[at])
            crops[:, -1] = torch.stack([crops_p[int(k)] for k in part]).to(crops.device)
            q = self.slice_inferer(crops.transpose(0, 1).contiguous()[None], _in_batches(share, HEAD_BATCH_SLICES))[0]
            del crops
            _paste(out, slice(1, 2), q, groups, part)
        return int(slices.size)

    def _crops(self, volume: torch.Tensor, box: np.ndarray, slices: np.ndarray) -> torch.Tensor:
        """``(m, C, H, W)``: the ``box`` of each of ``slices`` of ``volume`` ``(C, X, Y, Z)``, resized to the
        network's input."""
        x0, x1, y0, y1 = (int(v) for v in box)
        crop = volume[:, x0:x1, y0:y1, torch.as_tensor(slices, device=volume.device)].permute(3, 0, 1, 2).float()
        return F.interpolate(crop, size=self.roi_size, mode="bilinear", align_corners=False)


def _paste(out: torch.Tensor, channels: slice, maps: torch.Tensor, groups, part: np.ndarray, clear: bool = False) -> None:
    """Resize the ``(K, n, H, W)`` crop ``maps`` of the slices ``part`` back to their boxes (``groups``, from
    :func:`_same_box_groups`) and write them into ``channels`` of ``out`` ``(1, C, X, Y, Z)``; with ``clear`` the
    slices' every channel is zeroed first (a rerun replaces the whole slice)."""
    for box, at in groups:
        x0, x1, y0, y1 = (int(v) for v in box)
        back = F.interpolate(maps[:, torch.as_tensor(at)].transpose(0, 1).float(), size=(x1 - x0, y1 - y0), mode="bilinear", align_corners=False)
        index = _slice_index(part[at], out.device)
        if clear:
            out[0, :, :, :, index] = 0.0
        out[0, channels, x0:x1, y0:y1, index] = back.permute(1, 2, 3, 0).to(out.device)  # (K, h, w, m)


def _slice_index(slices: np.ndarray, device) -> slice | torch.Tensor:
    """An index of the last axis for the sorted ``slices``: a plain slice when they are consecutive (the usual case:
    torch writes through a slice several times faster than through an index tensor), else the index tensor."""
    if slices.size and int(slices[-1]) - int(slices[0]) + 1 == slices.size:
        return slice(int(slices[0]), int(slices[-1]) + 1)
    return torch.as_tensor(slices, device=device)


def _in_batches(network: Callable[[torch.Tensor], torch.Tensor], size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` called on at most ``size`` slices at a time."""

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([network(x[i : i + size]) for i in range(0, int(x.shape[0]), size)])

    return run


def _same_box_groups(boxes: np.ndarray, slices: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(box, positions in slices), ...]``: the slices that share a crop box (all of them in the first pass,
    where one box serves every slice; a few groups after boxes grew)."""
    unique, inverse = np.unique(boxes[slices], axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [(unique[g], np.flatnonzero(inverse == g)) for g in range(len(unique))]
