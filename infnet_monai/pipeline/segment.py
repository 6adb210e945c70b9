"""The main job: CT volumes in, NIfTI infection and lung masks plus per-patient infection burden out.

One implementation behind three doors: ``infnet-covid segment``, the bundle's ``configs/inference.json`` and the
Python API (:class:`CTSegmenter`, :func:`segment_cohort`).

Per case:

1. find and validate the volume (:func:`infnet_monai.io.discover_cases`, :func:`infnet_monai.io.load_ct`);
2. lung mask from Hounsfield units (RAS);
3. prepare the volume with MONAI transforms (orientation with its lung mask, calibrated Hounsfield window;
   :func:`infnet_monai.transforms.ct.ct_slice_preprocessing`);
4. crop every slice that holds lung to the lungs' box with the margins of the training slices, resize it to the
   network's input and run the 2D network over the crops with MONAI's :class:`~monai.inferers.SliceInferer`
   (:class:`infnet_monai.inferers.LungCropSliceInferer`); slices without lung are skipped;
5. bring the probabilities back onto the input's voxel grid with :class:`~monai.transforms.Invertd`;
6. infection found against the lung joins it (:func:`infnet_monai.postprocessing.extend_lung`), infection restricted
   to that lung, lesions below a volume or an axial extent and in-plane pieces below an area removed;
7. burden statistics from the voxel spacing; outputs written atomically.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.distributed as dist

from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, apply_transform

from infnet_monai import __version__
from infnet_monai.defaults import BASAL_RIM_MAX_SHARE, DEFAULT_MAX_SLICES, DEFAULT_MIN_LESION_MM3
from infnet_monai.io.cases import CTCase, discover_cases
from infnet_monai.inferers.lung_crop import LUNG_CROP_MARGINS, LungCropSliceInferer, slice_boxes
from infnet_monai.inferers.slices import resolve_temperature
from infnet_monai.io.checkpoint import load_checkpoint, load_class_model, load_model
from infnet_monai.io.outputs import (
    CLASSES_FILE,
    CSV_FILE,
    INFECTION_FILE,
    LUNG_FILE,
    PROBABILITY_FILE,
    STATS_FILE,
    case_fields,
    check_output_dir,
    completed_row,
    json_value,
    reference_header,
    remove_stale_parts,
    write_case_volumes,
    write_csv_atomic,
    write_text_atomic,
)
from infnet_monai.io.dicom_seg import DICOM_SEG_FILE, write_dicom_seg
from infnet_monai.pipeline.distributed import case_bytes, dist_env, gather_rows, rank_device, shard_by_size, start
from infnet_monai.io.volume import CaseError, load_ct
from infnet_monai.pipeline.components import ct_postprocessing, ct_preprocessing, split_slicewise
from infnet_monai.postprocessing import EXTENSION_THRESHOLD, MIN_LESION_AREA_MM2, MIN_LESION_EXTENT_MM, body_mask
from infnet_monai.transforms.ct import LUNG_WINDOW_HU
from infnet_monai.transforms.slices import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD
from infnet_monai.utils.device import autocast_context, resolve_device
from infnet_monai.utils.memory import release_memory
from infnet_monai.utils.model_path import default_class_model_path, default_model_path
from infnet_monai.utils.validation import check_flag
from infnet_monai.visualize.overview import overview_image, write_overview
from infnet_monai.visualize.report import OVERVIEW_FILE, write_report

__all__ = [
    "CTSegmenter",
    "CaseResult",
    "CohortReport",
    "segment_cohort",
    "DEFAULT_MAX_SLICES",
    "DEFAULT_MIN_LESION_MM3",
    "DEFAULT_MIN_LESION_EXTENT_MM",
    "DEFAULT_MIN_LESION_AREA_MM2",
    "STATS_FILE",
    "CSV_FILE",
]

logger = logging.getLogger(__name__)

# the option defaults live in infnet_monai.defaults (no heavy imports, for a fast --help)
DEFAULT_MIN_LESION_EXTENT_MM = MIN_LESION_EXTENT_MM
DEFAULT_MIN_LESION_AREA_MM2 = MIN_LESION_AREA_MM2
@dataclass
class CaseResult:
    """Outputs of one case: masks on the input's voxel grid and the statistics row."""

    row: dict
    infection: np.ndarray | None = None
    lung: np.ndarray | None = None
    probability: np.ndarray | None = None
    classes: np.ndarray | None = None
    overview: Any = None  # the overview picture (PIL image), when made
    notes: list = field(default_factory=list)
    affine: np.ndarray | None = None  # voxel-to-world (RAS) matrix of the input's grid


@dataclass
class CohortReport:
    """Outcome of :func:`segment_cohort`: one row per case, in input order."""

    rows: list[dict] = field(default_factory=list)
    output_dir: Path | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") != "ok"]

    @property
    def exit_code(self) -> int:
        """0 when every case succeeded, 1 when any failed."""
        return 1 if self.failed else 0


class CTSegmenter:
    """Segment COVID-19 lung infection in CT volumes with a 2D Inf-Net applied slice by slice.

    The pipeline is four MONAI components, the ones the bundle's ``configs/inference.json`` lists
    (:mod:`infnet_monai.pipeline.components`): the network, ``preprocessing``, ``inferer`` and ``postprocessing``;
    each can be given, else it is built from the options below.

    Args:
        model_path: checkpoint from :func:`infnet_monai.io.save_model` (default: the shipped model); with ``network``
            given, only its metadata (calibration, input size) is read.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
        batch_slices: axial slices per forward pass (bounds memory on the device).
        threshold: probability at or above which a voxel is infection.
        min_lesion_volume_mm3: connected lesions smaller than this are removed.
        window_hu: Hounsfield window mapped onto the training intensities.
        max_slices: longer volumes are refused with a clear error naming the file (a guard against a mistaken input;
            memory does not grow with the length beyond the volume and its masks).
        amp: mixed precision on CUDA.
        flip_tta: also run the left-right flipped slices and average (twice the time).
        temperature: logit temperature, probability ``sigmoid(logit / temperature)``; ``None`` uses the checkpoint's
            calibration (1 when it has none). Without ``flip_tta``, masks at threshold 0.5 do not depend on it.
        network: an already built network (weights loaded); used with ``spatial_size`` or ``model_path``.
        spatial_size: in-plane network size when ``network`` is given without ``model_path``.
        preprocessing: the chain from ``{"image": case, path or volume}`` (default
            :func:`~infnet_monai.pipeline.components.ct_preprocessing`); its slice-wise tail streams in slabs.
        min_lesion_extent_mm: lesions spanning fewer axial millimetres are removed (3D consistency).
        min_lesion_area_mm2: in-plane pieces of infection smaller than this on a slice are removed (before the 3D
            filters, so every lesion of the output passes them).
        basal_rim_max_share: lesions with at least this share of their voxels in the slice of lung over the
            diaphragm and the heart are removed (:func:`~infnet_monai.postprocessing.infection.basal_rim_shares`);
            above 1 none is.
        field_of_view: ``"lung"`` crops every slice with lung to the lungs' box (training-like); ``"body"`` to the
            body's box on the same slices, for comparison (on the normal chest CT the extension then takes in what
            the network marks around the heart: 12.1% false infection against 0%, ``scripts/evaluate_3d.py``).
        crop_rounds: passes of the lung-cropped inference at most; a slice whose infection reaches the edge of its
            crop is run again with a larger crop (:class:`~infnet_monai.inferers.LungCropSliceInferer`).
        extension_threshold: probability at or above which infection against the lung joins the lung mask
            (:func:`~infnet_monai.postprocessing.extend_lung`); default the smaller of ``threshold`` and
            :data:`~infnet_monai.postprocessing.EXTENSION_THRESHOLD` (0.3).
        classes: also label the infection GGO or consolidation with the head of ``class_model_path``
            (:class:`~infnet_monai.networks.nets.InfNetClasses`); needs ``model_path`` or ``network``.
        class_model_path: the GGO / consolidation head (default: the shipped ``models/classes.pt``).
        overview: write ``overview.png`` per case (also for cases skipped by ``resume``); ``run`` always writes
            ``report.html``.
        dicom_seg: write ``segmentation.dcm`` (DICOM-SEG referencing the source series) for DICOM inputs.
        save_probability: also write ``probability.nii.gz`` (uint8, scaled to 0-1 by its header); with ``resume``,
            a case stored without it is redone.
        slab_slices: axial slices that stream together through the slice-wise preprocessing, the network and the
            inversion (bounds the memory of those steps; the results do not depend on it).
        inferer: called as ``inferer(slab, network_fn, lung, boxes=...)`` (default
            :class:`~infnet_monai.inferers.LungCropSliceInferer` with ``batch_slices`` and ``crop_rounds``).
        postprocessing: the chain from ``{"image", "lung", "pred"}`` on the RAS grid to ``"infection"``, ``"lung"``,
            ``"classes"`` (with the head), ``"burden"`` and ``"image"`` on the input's grid (default
            :func:`~infnet_monai.pipeline.components.ct_postprocessing` with the thresholds and lesion filters above).
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "auto",
        batch_slices: int = 16,
        threshold: float = 0.5,
        min_lesion_volume_mm3: float = DEFAULT_MIN_LESION_MM3,
        window_hu: Sequence[float] = LUNG_WINDOW_HU,
        max_slices: int = DEFAULT_MAX_SLICES,
        amp: bool = True,
        flip_tta: bool = False,
        network: torch.nn.Module | None = None,
        spatial_size: int | None = None,
        preprocessing: Compose | None = None,
        temperature: float | None = None,
        crop_rounds: int = 3,
        field_of_view: str = "lung",
        min_lesion_extent_mm: float = DEFAULT_MIN_LESION_EXTENT_MM,
        min_lesion_area_mm2: float = DEFAULT_MIN_LESION_AREA_MM2,
        basal_rim_max_share: float = BASAL_RIM_MAX_SHARE,
        extension_threshold: float | None = None,
        classes: bool = True,
        class_model_path: str | os.PathLike | None = None,
        overview: bool = True,
        dicom_seg: bool = True,
        save_probability: bool = False,
        slab_slices: int = 32,
        inferer: Any = None,
        postprocessing: Compose | None = None,
    ) -> None:
        _check_options(batch_slices, threshold, slab_slices, field_of_view, extension_threshold)
        self.device = resolve_device(rank_device(device, dist_env()))
        self._rank = (0, 1)  # (rank, world size) of the running job, recorded in stats.json
        self.network, self.model_path, info = self._load_network(model_path, network)
        prep = info.get("preprocessing", {})
        size = spatial_size or prep.get("spatial_size", DEFAULT_SPATIAL_SIZE)
        self.spatial_size = int(size if isinstance(size, (int, float)) else size[0])
        in_channels = int(info.get("network", {}).get("in_channels", getattr(self.network, "in_channels", 1)))
        self.threshold = threshold
        self.extension_threshold = float(min(threshold, EXTENSION_THRESHOLD) if extension_threshold is None else extension_threshold)
        self.min_lesion_volume_mm3 = float(min_lesion_volume_mm3)
        self.min_lesion_extent_mm = float(min_lesion_extent_mm)
        self.min_lesion_area_mm2 = float(min_lesion_area_mm2)
        self.basal_rim_max_share = float(basal_rim_max_share)
        self.window_hu = tuple(float(w) for w in window_hu)
        self.max_slices = int(max_slices)
        stats = (float(prep.get("slice_mean", SLICE_MEAN)), float(prep.get("slice_std", SLICE_STD)))
        self._build_components(preprocessing, inferer, postprocessing, in_channels, stats, batch_slices, crop_rounds)
        self.field_of_view = field_of_view
        self.slab_slices = int(slab_slices)
        self.last_boxes: np.ndarray | None = None  # (Z, 4) crop boxes of the last volume, -1 rows for skipped slices
        self.amp = check_flag(amp, "amp")
        self.flip_tta = check_flag(flip_tta, "flip_tta")
        self.model_info = info
        self.temperature = resolve_temperature(temperature, info)
        self.overview = check_flag(overview, "overview")
        self.dicom_seg = check_flag(dicom_seg, "dicom_seg")
        self.save_probability = check_flag(save_probability, "save_probability")
        self.class_model: torch.nn.Module | None = None
        self.class_model_path: Path | None = None
        if check_flag(classes, "classes"):
            self.class_model, class_info = load_class_model(self.network, self.temperature, class_model_path, self.device)
            self.class_model_path = Path(class_model_path) if class_model_path else None
            self.class_model_info = class_info

    def _load_network(self, model_path, network) -> tuple[torch.nn.Module, Path | None, dict]:
        """``(network on the device in eval mode, checkpoint path or None, checkpoint metadata)``."""
        if network is None:
            path = Path(model_path) if model_path is not None else default_model_path()
            network, info = load_model(path, self.device)
            return network, path, info
        network = network.to(self.device).eval()
        if model_path is None:
            return network, None, {}
        info = {k: v for k, v in load_checkpoint(model_path).items() if k != "state_dict"}
        return network, Path(model_path), info

    def _build_components(self, preprocessing, inferer, postprocessing, in_channels: int, stats, batch_slices: int, crop_rounds: int) -> None:
        """``preprocessing``, ``inferer`` and ``postprocessing`` as given or from the factories (with the checkpoint's
        input channels and slice ``stats``, mean and std), and the inversions."""
        self.preprocessing = preprocessing or ct_preprocessing(self.window_hu, in_channels, self.max_slices, *stats)
        self._volume_prep, self._slab_prep = split_slicewise(self.preprocessing)
        self._slab_invert = Invertd("pred", transform=self._slab_prep, orig_keys="image", nearest_interp=False)
        self._to_input_grid = Invertd("probability", transform=self._volume_prep, orig_keys="image", nearest_interp=False)
        self.inferer = inferer or LungCropSliceInferer(
            roi_size=(self.spatial_size, self.spatial_size),
            sw_batch_size=batch_slices,
            sw_device=self.device,
            device=torch.device("cpu"),
            max_rounds=crop_rounds,
        )
        slices = getattr(self.inferer, "slice_inferer", None)
        if slices is not None and slices.sw_device is None:
            slices.sw_device = self.device  # a configured inferer runs the network where it lives
        self.postprocessing = postprocessing or ct_postprocessing(
            self._volume_prep,
            threshold=self.threshold,
            extension_threshold=self.extension_threshold,
            min_lesion_volume_mm3=self.min_lesion_volume_mm3,
            min_lesion_extent_mm=self.min_lesion_extent_mm,
            min_lesion_area_mm2=self.min_lesion_area_mm2,
            basal_rim_max_share=self.basal_rim_max_share,
        )

    # ------------------------------------------------------------------ one volume
    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        """Infection probability, and with the class head the consolidation share: ``(B, 1 or 2, H, W)``."""
        if self.class_model is not None:
            return self.class_model.infection_and_share(x)
        return torch.sigmoid(self.network(x).float() / self.temperature)

    def _network_fn(self, x: torch.Tensor) -> torch.Tensor:
        prob = self._maps(x)
        if self.flip_tta:
            prob = 0.5 * (prob + self._maps(x.flip(-1)).flip(-1))
        return prob

    @torch.no_grad()
    def _probability_ras(self, hu_ras: MetaTensor, lung_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probability, share)`` on the RAS grid of ``hu_ras``: the infection probability ``(1, X, Y, Z)``
        (float16) and, with the class head, the consolidation share ``(1, X, Y, Z)`` as uint8 in 1/255 steps
        (else ``None``); each slice cropped to ``lung_ras`` (or to the body on the slices with lung, with
        ``field_of_view="body"``).

        The volume streams through the slice-wise preprocessing, the network and the inversion in slabs of
        :attr:`slab_slices` axial slices; the crop boxes come from the whole lung, so the slabs give what the whole
        volume gives, and memory beyond the volume, its lung mask and this result does not grow with the length."""
        if self.field_of_view == "body":
            body = body_mask(hu_ras[0].numpy())
            body[:, :, ~lung_ras.any(axis=(0, 1))] = False
            lung_ras = body
        n_slices = int(hu_ras.shape[3])
        lung_t = MetaTensor(torch.from_numpy(np.ascontiguousarray(lung_ras[None] > 0)), meta=dict(hu_ras.meta))
        for step in self._slab_prep.transforms:  # the lung in the slices' orientation, for the whole lung's boxes
            if isinstance(step, Orientationd):
                lung_t = step.ornt_transform(lung_t)
        boxes = slice_boxes(lung_t[0].numpy(), getattr(self.inferer, "margins", LUNG_CROP_MARGINS))
        del lung_t
        out: np.ndarray | None = None
        share: np.ndarray | None = None
        progress, offset = getattr(self.inferer, "on_batch", None), (0, 0)
        self.last_boxes = np.full((n_slices, 4), -1, dtype=np.int64)
        try:
            for z0 in range(0, n_slices, self.slab_slices):
                z1 = min(n_slices, z0 + self.slab_slices)
                if not (boxes[z0:z1, 0] >= 0).any():
                    continue  # no lung in this slab: nothing to run, probability 0
                if progress is not None:
                    self.inferer.on_batch = lambda d, t, o=offset: progress(o[0] + d, o[1] + t)
                pred = self._slab_probability(hu_ras, lung_ras, z0, z1, boxes[z0:z1])
                count = getattr(self.inferer, "last_count", (0, 0))
                offset = (offset[0] + count[0], offset[1] + count[1])
                self.last_boxes[z0:z1] = getattr(self.inferer, "last_boxes", boxes[z0:z1])
                if out is None:
                    out = np.zeros((1, *hu_ras.shape[1:]), dtype=np.float16)
                    share = np.zeros((1, *hu_ras.shape[1:]), dtype=np.uint8) if pred.shape[0] > 1 else None
                out[..., z0:z1] = pred[:1]
                if share is not None:  # the share in 1/255 steps (exact at the 0.5 class threshold), a byte a voxel
                    share[..., z0:z1] = np.round(pred[1:2] * 255.0)
                del pred
                release_memory()  # the slab's blocks go back to the system, not into a growing heap
        finally:
            if progress is not None:
                self.inferer.on_batch = progress
        if out is None:  # no slice holds lung: the network is never run
            out, share = np.zeros((1, *hu_ras.shape[1:]), dtype=np.float16), None
        return out, share

    def _slab_probability(self, hu_ras: MetaTensor, lung_ras: np.ndarray, z0: int, z1: int, boxes) -> np.ndarray:
        """Slices ``z0:z1`` through the slice-wise preprocessing, the inferer and the preprocessing's inversion."""
        meta = dict(hu_ras.meta)
        affine = np.array(hu_ras.affine.cpu().numpy(), dtype=np.float64)
        affine[:3, 3] += affine[:3, 2] * z0  # the slab's own origin
        meta["affine"] = torch.as_tensor(affine)
        image = MetaTensor(hu_ras.as_tensor()[..., z0:z1], meta=meta)  # a fresh history: only this chain is inverted
        lung = MetaTensor(torch.from_numpy(np.ascontiguousarray(lung_ras[None, :, :, z0:z1] > 0)), meta=dict(meta))
        data = self._slab_prep({"image": image, "lung": lung})
        x = data["image"].as_tensor().unsqueeze(0)  # (1, C, X', Y', n)
        with autocast_context(self.device, self.amp):
            prob = self.inferer(x, self._network_fn, data["lung"][0].as_tensor(), boxes=boxes)
        pred = MetaTensor(prob[0].float().cpu(), meta=data["image"].meta, applied_operations=data["image"].applied_operations)
        del x, prob, image, lung
        back = self._slab_invert({"image": data["image"], "pred": pred})["pred"]
        return back.clamp_(0.0, 1.0).numpy()

    def _prepare(self, source: Any) -> dict:
        """The whole-volume preprocessing of ``source``; the network's maps go into ``"pred"`` (the infection
        probability) and, with the class head, ``"share"`` (the consolidation share, uint8 in 1/255 steps), on the
        RAS grid."""
        data = _apply_steps(self._volume_prep, {"image": source})
        prob, share = self._probability_ras(data["image"], np.asarray(data["lung"][0]))
        if self.class_model is not None and share is None:  # nothing inferred: an all-background class map
            share = np.zeros(prob.shape, dtype=np.uint8)
        data["pred"] = MetaTensor(torch.from_numpy(prob), meta=dict(data["image"].meta))
        if share is not None:
            data["share"] = MetaTensor(torch.from_numpy(share), meta=dict(data["image"].meta))
        return data

    def _input_grid_probability(self, data: dict) -> np.ndarray:
        """The infection probability (channel 0 of ``"pred"``) on the input's voxel grid, float32."""
        prob = MetaTensor(torch.from_numpy(data["pred"].numpy()[0:1].astype(np.float32)), meta=dict(data["image"].meta))
        out = self._to_input_grid({"image": data["image"], "probability": prob})["probability"]
        return np.ascontiguousarray(out[0].numpy())

    def probability(self, image: MetaTensor) -> MetaTensor:
        """Infection probability on the voxel grid of ``image`` (0 on slices without lung).

        Args:
            image: ``(1, X, Y, Z)`` CT in Hounsfield units with its affine (e.g. from :func:`load_ct`).

        Returns:
            ``(1, X, Y, Z)`` float32 probabilities in [0, 1] (computed in float32, kept in float16 on the way), same
            affine.
        """
        data = self._prepare(image)
        return MetaTensor(torch.from_numpy(self._input_grid_probability(data)[None]), meta=image.meta)

    def segment_image(self, image: Any, keep_probability: bool = False, title: str = "") -> CaseResult:
        """Infection and lung masks plus burden statistics for one volume.

        Steps (in RAS, axis 2 axial): Hounsfield-unit lung mask; lung-cropped slice-wise inference streamed in slabs;
        the infection found against the lung joins it (pathology-inclusive lung); infection thresholded inside that
        lung with small lesions removed; statistics; masks brought back onto the input's grid; the overview picture.

        Args:
            image: ``(1, X, Y, Z)`` CT in Hounsfield units, or what ``preprocessing`` loads (a case or a path).
            keep_probability: also return the probability map.
            title: the overview picture's title (the case id).

        Returns:
            :class:`CaseResult` with ``infection`` (uint8 0/1), ``lung`` (uint8 0 background, 1 right, 2 left) and,
            with the class head, ``classes`` (uint8 0 background, 1 GGO, 2 consolidation; non-zero exactly where
            ``infection`` is) on the voxel grid of ``image``, the burden statistics in ``row`` and, with
            ``overview``, the picture.
        """
        return self.finish(self._prepare(image), keep_probability, title)

    def prepare(self, image: Any) -> dict:
        """The first half of :meth:`segment_image`: the whole-volume preprocessing and the network's maps on the RAS
        grid (``"image"``, ``"lung"``, ``"pred"`` and, with the class head, ``"share"``). :meth:`finish` completes
        it; a copy of the result can be finished with other post-processing (``scripts/evaluate_3d.py`` compares
        settings without running the network again)."""
        return self._prepare(image)

    def finish(self, data: dict, keep_probability: bool = False, title: str = "", postprocessing: Compose | None = None) -> CaseResult:
        """The second half of :meth:`segment_image`: post-processing (``postprocessing``, default this segmenter's),
        statistics, masks on the input's grid and the overview picture, from what :meth:`prepare` returned (which it
        consumes)."""
        spacing = tuple(float(s) for s in data["image"].pixdim[:3])
        lung_hu_ml = round(float(np.count_nonzero(data["lung"].numpy())) * float(np.prod(spacing)) / 1000.0, 3)
        probability = self._input_grid_probability(data) if keep_probability else None
        data = _apply_steps(postprocessing or self.postprocessing, data)
        release_memory()
        volume = data["image"]
        row = dict(data["burden"])
        row["shape"] = [int(s) for s in volume.shape[1:]]
        row["spacing_mm"] = [round(float(s), 6) for s in volume.pixdim[:3]]
        row["lung_hu_volume_ml"] = lung_hu_ml
        row["slices_inferred"] = int((self.last_boxes[:, 0] >= 0).sum()) if self.last_boxes is not None else 0
        masks = {k: np.ascontiguousarray(data[k][0].numpy(), dtype=np.uint8) for k in ("infection", "lung", "classes") if k in data}
        picture, note = self._overview(volume[0].numpy(), masks["lung"], masks["infection"], volume.affine, masks.get("classes"), row, title)
        return CaseResult(
            row=row, infection=masks["infection"], lung=masks["lung"], classes=masks.get("classes"), probability=probability,
            overview=picture, notes=[note] if note else [], affine=np.asarray(volume.affine.cpu().numpy(), dtype=np.float64),
        )

    def _overview(self, hu, lung, infection, affine, classes, row: dict, title: str) -> tuple[Any, str]:
        """``(picture, note)``: the overview picture (RGB) of arrays on the grid of ``affine``, ``None`` when off or
        failed; a failure is a warning and a note for ``stats.json``, never a lost case."""
        if not self.overview:
            return None, ""
        try:
            return overview_image(hu, lung, infection, np.asarray(affine), classes, row, title, self._version()), ""
        except Exception as e:  # noqa: BLE001 - a picture must never cost the masks
            logger.warning("%s: overview picture not made: %s", title, e)
            return None, f"overview.png not written: {type(e).__name__}: {e}"

    # ------------------------------------------------------------------ one case, with files
    def segment_case(self, case: CTCase, output_dir: str | os.PathLike) -> dict:
        """Load, segment and write one case under ``output_dir/<case_id>/``; return its statistics row.

        Raises:
            CaseError: the input is unusable (the message names the file and the problem).
        """
        start = time.time()
        if case.error:
            raise CaseError(case.error)
        result = self.segment_image(case, self.save_probability, case.case_id)  # loaded by the preprocessing's LoadCTd
        reference = reference_header(case, result.affine)
        case_dir = Path(output_dir) / case.case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(case_dir, (INFECTION_FILE, CLASSES_FILE, LUNG_FILE, PROBABILITY_FILE, STATS_FILE, DICOM_SEG_FILE, OVERVIEW_FILE))
        paths = write_case_volumes(case_dir, reference, result.infection, result.lung, result.classes, result.probability)
        row = case_fields(case)
        row.update(result.row)
        row.update(paths)
        row["status"], row["error"] = "ok", ""
        row["seconds"] = round(time.time() - start, 2)
        row["window_hu"] = list(self.window_hu)
        row["threshold"] = self.threshold
        row["model"] = str(self.model_path) if self.model_path else "in-memory network"
        if self.class_model is not None:
            row["class_model"] = str(self.class_model_path or default_class_model_path())
        notes = list(case.notes) + result.notes
        if self.dicom_seg and case.kind == "dicom":
            seg_path = self._write_dicom_seg(case, case_dir, result, reference[0], notes)
            if seg_path is not None:
                row["dicom_seg_path"] = str(seg_path)
        if result.overview is not None:
            self._save_overview(case_dir, result.overview, notes)
        row["notes"] = notes
        row["rank"], row["world_size"] = self._rank
        # stats.json last: its presence marks the case complete (used by resume)
        write_text_atomic(json.dumps({k: json_value(v) for k, v in row.items()}, indent=2), case_dir / STATS_FILE)
        return row

    def _version(self) -> str:
        model = self.model_path.name if self.model_path else "in-memory network"
        head = f" + {Path(self.class_model_path or default_class_model_path()).name}" if self.class_model else ""
        return f"infnet-monai {__version__}, model {model}{head}"

    def _write_dicom_seg(self, case: CTCase, case_dir: Path, result: CaseResult, affine, notes: list) -> Path | None:
        """``segmentation.dcm``; a failure (e.g. stripped headers) is a warning and a note, never a lost case."""
        try:
            return write_dicom_seg(
                case_dir / DICOM_SEG_FILE, case.files, affine, result.lung, result.infection, result.classes,
                software_version=self._version(),
            )
        except Exception as e:  # noqa: BLE001 - highdicom raises many types on incomplete headers
            logger.warning("%s: DICOM-SEG not written: %s", case.case_id, e)
            notes.append(f"segmentation.dcm not written: {type(e).__name__}: {e}")
            return None

    @staticmethod
    def _save_overview(case_dir: Path, picture, notes: list) -> None:
        try:
            write_overview(case_dir / OVERVIEW_FILE, picture)
        except OSError as e:
            logger.warning("%s: overview picture not written: %s", case_dir.name, e)
            notes.append(f"overview.png not written: {type(e).__name__}: {e}")

    def _overview_for_resumed(self, case: CTCase, output_dir: Path, row: dict) -> None:
        """A case skipped by ``--resume`` gets its overview picture when it has none."""
        case_dir = output_dir / case.case_id
        if not self.overview or (case_dir / OVERVIEW_FILE).is_file():
            return
        try:
            image = load_ct(case)
            masks = []
            for name in (LUNG_FILE, INFECTION_FILE, CLASSES_FILE):
                path = case_dir / name
                masks.append(np.asarray(nib.load(str(path)).dataobj) if path.is_file() else None)
            affine = nib.load(str(case_dir / INFECTION_FILE)).affine
        except (OSError, ValueError, CaseError) as e:
            logger.warning("%s: overview picture not written: %s", case.case_id, e)
            return
        picture, _ = self._overview(image[0].numpy(), masks[0], masks[1], affine, masks[2], row, case.case_id)
        if picture is not None:
            self._save_overview(case_dir, picture, [])

    def _write_report(self, report: "CohortReport") -> None:
        provenance = {
            "version": self._version(),
            "model": str(self.model_path) if self.model_path else "in-memory network",
            "class model": str(self.class_model_path or default_class_model_path()) if self.class_model else "none",
            "window (HU)": f"{self.window_hu[0]:g} to {self.window_hu[1]:g}",
            "threshold": self.threshold,
            "temperature": self.temperature,
            "device": str(self.device),
            "command line": " ".join(sys.argv),
        }
        try:
            write_report(report.rows, report.output_dir, provenance)
        except OSError as e:
            logger.warning("report.html not written: %s", e)

    # ------------------------------------------------------------------ cohort
    def run(
        self,
        input_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        resume: bool = False,
        progress: Callable[[Iterable], Iterable] | None = None,
        slice_progress: Callable[[str, int, int], None] | None = None,
    ) -> CohortReport:
        """Segment every case under ``input_path``; see :func:`segment_cohort`. ``slice_progress(case_id, done,
        total)`` is called after every batch of slices inside a case (``total`` grows when crops are rerun)."""
        input_path, output_dir, resume = Path(input_path), Path(output_dir), check_flag(resume, "resume")
        if not input_path.exists():
            raise FileNotFoundError(f"input '{input_path}' does not exist.")
        check_output_dir(input_path, output_dir)
        remove_stale_parts(output_dir, (CSV_FILE,))
        cases = discover_cases(input_path, exclude=[output_dir])
        if not cases:
            raise FileNotFoundError(f"no NIfTI (.nii, .nii.gz) or DICOM CT found under '{input_path}'.")
        env = dist_env()
        joined = start(env, self.device) if env is not None else False
        try:
            return self._run_cases(cases, output_dir, resume, progress, slice_progress, env)
        finally:
            if joined:
                dist.destroy_process_group()

    def _run_cases(self, cases, output_dir: Path, resume, progress, slice_progress, env) -> CohortReport:
        """This rank's share of ``cases`` (all of them in one process), then the cohort's table and report."""
        mine = shard_by_size([case_bytes(c.files) for c in cases], env.world_size)[env.rank] if env else range(len(cases))
        self._rank = (env.rank, env.world_size) if env else (0, 1)
        report = CohortReport(output_dir=output_dir)
        rows: dict[int, dict] = {}
        todo = [cases[i] for i in mine]
        for i, case in zip(mine, progress(todo) if progress is not None else todo):
            rows[i] = self._one_case(case, output_dir, resume, slice_progress)
            if env is None:  # one process: the table grows case by case; with several, rank 0 writes it at the end
                report.rows = [rows[j] for j in sorted(rows)]
                write_csv_atomic(report.rows, output_dir / CSV_FILE)
        report.rows = gather_rows(rows, len(cases)) if env else [rows[j] for j in range(len(cases))]
        if env is None or env.rank == 0:
            write_csv_atomic(report.rows, output_dir / CSV_FILE)
            self._write_report(report)
        if env is not None:
            dist.barrier()
        n_bad = len(report.failed)
        logger.info("%d case(s): %d ok, %d failed; table %s", len(cases), len(cases) - n_bad, n_bad, output_dir / CSV_FILE)
        return report

    def _one_case(self, case: CTCase, output_dir: Path, resume, slice_progress) -> dict:
        classes = self.class_model is not None
        row = completed_row(case, output_dir, classes=classes, probability=self.save_probability) if resume else None
        if row is not None:
            logger.info("%s: already complete, skipped (--resume)", case.case_id)
            self._overview_for_resumed(case, output_dir, row)
            return row
        cid = case.case_id
        self.inferer.on_batch = (lambda d, t, c=cid: slice_progress(c, d, t)) if slice_progress else None
        row = self._safe_case(case, output_dir)
        self.inferer.on_batch = None
        if row.get("status") == "ok":
            logger.info("%s: done in %.1f s (%d slices inferred)", cid, row["seconds"], row.get("slices_inferred", 0))
        return row

    def _safe_case(self, case: CTCase, output_dir: Path) -> dict:
        try:
            return self.segment_case(case, output_dir)
        except KeyboardInterrupt:
            raise
        except (OSError, CaseError, ValueError, RuntimeError, MemoryError) as raised:
            e = _root_cause(raised)
            if isinstance(e, OSError) and getattr(e, "errno", None) == errno.ENOSPC:
                message = f"no space left on the device while writing outputs under '{output_dir}'; free space and rerun with --resume."
            elif isinstance(e, CaseError):
                message = str(e)  # CaseError messages already name the file
            elif isinstance(e, OSError):
                message = f"{case.source_path}: {type(e).__name__}: {e}"
            else:  # anything unexpected gets the case's path in front
                message = f"{case.source_path}: unexpected {type(e).__name__}: {e}"
        logger.error("%s (%s): %s", case.case_id, case.source_path, message)
        row = case_fields(case)
        row.update({"status": "error", "error": message})
        return row


def _apply_steps(chain: Compose, data: dict) -> dict:
    """``chain(data)`` one step at a time, updating ``data`` itself: what a step replaces or drops (the loaded volume
    once oriented, the probabilities once deleted) is freed at once, not when the chain returns."""
    for step in chain.flatten().transforms:
        out = apply_transform(step, data)
        if out is not data:
            data.clear()
            data.update(out)
        del out
    return data


def _root_cause(e: BaseException) -> BaseException:
    """The exception a MONAI ``Compose`` wrapped (``RuntimeError("applying transform ...")``), else ``e``."""
    while isinstance(e, RuntimeError) and str(e).startswith("applying transform") and e.__cause__ is not None:
        e = e.__cause__
    return e


def _check_options(batch_slices: int, threshold: float, slab_slices: int, field_of_view: str, extension_threshold) -> None:
    if batch_slices < 1:
        raise ValueError(f"batch_slices must be >= 1, got {batch_slices}.")
    if slab_slices < 1:
        raise ValueError(f"slab_slices must be >= 1, got {slab_slices}.")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    if extension_threshold is not None and not 0.0 < extension_threshold <= 1.0:
        raise ValueError(f"extension_threshold must be in (0, 1], got {extension_threshold}.")
    if field_of_view not in ("lung", "body"):
        raise ValueError(f"field_of_view must be 'lung' or 'body', got {field_of_view!r}.")


def segment_cohort(input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> CohortReport:
    """Segment a NIfTI file, a DICOM series folder, or a cohort folder of both (any depth).

    Writes ``output_dir/<case_id>/infection.nii.gz`` (uint8 0/1), ``lung.nii.gz`` (uint8 0 background, 1 right,
    2 left), both with the input's shape and affine, ``stats.json`` and, with ``save_probability=True``,
    ``probability.nii.gz``; and ``output_dir/burden.csv`` with one row per case (``status`` ok or error, with the
    message). A failing case never stops the run. With ``resume=True`` cases whose outputs are complete are skipped.

    Args:
        input_path: file or folder.
        output_dir: output folder (may lie inside the input folder; it is then not scanned).
        options: :meth:`CTSegmenter.run` options (``resume``; ``progress``, which wraps the case iterable, e.g.
            ``tqdm``; ``slice_progress``, called as ``(case_id, slices done, slices to do)`` after every batch inside
            a case) and :class:`CTSegmenter` options, with their defaults (``model_path``, default the shipped model;
            ``device``, ``"auto"`` | ``"cpu"`` | ``"cuda"``; ``batch_slices``, ``threshold``,
            ``min_lesion_volume_mm3``, ``window_hu``, ``max_slices``, ``save_probability``, ...).

    Returns:
        :class:`CohortReport`; ``report.exit_code`` is 0 when all cases succeeded, else 1.
    """
    run_options = {name: options.pop(name) for name in ("resume", "progress", "slice_progress") if name in options}
    return CTSegmenter(**options).run(input_path, output_dir, **run_options)
