"""The main job: CT volumes in, NIfTI infection and lung masks plus per-patient infection burden out.

One implementation behind three doors: ``infnet-covid segment``, the bundle's ``configs/inference.json`` and the
Python API (:class:`CTSegmenter`, :func:`segment_cohort`). The work is split by role:

- :class:`~infnet_monai.pipeline.predictor.VolumePredictor` maps one volume to its masks and statistics, in memory;
- :class:`~infnet_monai.pipeline.writer.CaseWriter` writes a case's files;
- :class:`~infnet_monai.pipeline.runner.CohortRunner` owns the cohort: discovery, resume, sharding, one row per case,
  error rows, ``burden.csv`` and ``report.html``.

:class:`CTSegmenter` builds the three from one :class:`SegmentConfig` and the shipped (or given) checkpoints.

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

import copy
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from monai.transforms import Compose

from infnet_monai import __version__
from infnet_monai.defaults import (
    BASAL_RIM_MAX_SHARE,
    DEFAULT_MAX_SLICES,
    DEFAULT_MIN_LESION_MM3,
    MIN_LESION_AREA_MM2,
    MIN_LESION_DEPTH_MM,
    MIN_LESION_EXTENT_MM,
    THRESHOLD,
    THROUGH_PLANE_MM,
)
from infnet_monai.inferers.backends import check_backend, network_backend
from infnet_monai.inferers.lung_crop import LungCropSliceInferer
from infnet_monai.inferers.probability import ProbabilityMaps
from infnet_monai.io.cases import CTCase
from infnet_monai.io.checkpoint import ModelSpec, load_checkpoint, load_class_model, load_model
from infnet_monai.io.outputs import CSV_FILE, STATS_FILE
from infnet_monai.pipeline.components import ct_postprocessing, ct_preprocessing
from infnet_monai.pipeline.distributed import dist_env, rank_device
from infnet_monai.pipeline.predictor import CaseResult, VolumePredictor
from infnet_monai.pipeline.runner import CohortReport, CohortRunner
from infnet_monai.pipeline.writer import CaseWriter
from infnet_monai.postprocessing import extension_threshold_for
from infnet_monai.transforms.ct import LUNG_WINDOW_HU, check_window
from infnet_monai.utils.device import resolve_device
from infnet_monai.utils.files import file_sha256
from infnet_monai.utils.model_path import default_class_model_path, default_model_path
from infnet_monai.utils.validation import check_flag

__all__ = [
    "CTSegmenter",
    "CaseResult",
    "CohortReport",
    "SegmentConfig",
    "segment_cohort",
    "DEFAULT_MAX_SLICES",
    "DEFAULT_MIN_LESION_MM3",
    "DEFAULT_MIN_LESION_EXTENT_MM",
    "DEFAULT_MIN_LESION_AREA_MM2",
    "STATS_FILE",
    "CSV_FILE",
]

# the option defaults live in infnet_monai.defaults (no heavy imports, for a fast --help)
DEFAULT_MIN_LESION_EXTENT_MM = MIN_LESION_EXTENT_MM
DEFAULT_MIN_LESION_AREA_MM2 = MIN_LESION_AREA_MM2


@dataclass(frozen=True)
class SegmentConfig:
    """The settings of :class:`CTSegmenter`, checked once here.

    Attributes:
        model_path: checkpoint from :func:`infnet_monai.io.save_model` (default: the shipped model); with a
            ``network`` given to :class:`CTSegmenter`, only its metadata (calibration, input size) is read.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
        batch_slices: axial slices per forward pass (bounds memory on the device).
        threshold: probability at or above which a voxel is infection (also the one that grows a crop).
        min_lesion_volume_mm3: connected lesions smaller than this are removed.
        window_hu: Hounsfield window mapped onto the training intensities.
        max_slices: longer volumes are refused with a clear error naming the file (a guard against a mistaken input).
        amp: mixed precision on CUDA.
        flip_tta: also run the left-right mirrored slices and average (twice the time).
        spatial_size: in-plane network size when a ``network`` is given without ``model_path``.
        temperature: logit temperature, probability ``sigmoid(logit / temperature)``; ``None`` uses the checkpoint's
            calibration (1 when it has none). Without ``flip_tta``, masks at threshold 0.5 do not depend on it.
        crop_rounds: passes of the lung-cropped inference at most; a slice whose infection reaches the edge of its
            crop is run again with a larger crop (:class:`~infnet_monai.inferers.LungCropSliceInferer`).
        max_slice_gap_mm: opt-in z-subsampling of thin-slice scans: the network runs on slices at most this far
            apart and the slices between are interpolated (:class:`~infnet_monai.pipeline.predictor.VolumePredictor`);
            ``None`` (the default) runs every slice with lung.
        min_lesion_extent_mm: lesions spanning fewer axial millimetres are removed (3D consistency).
        min_lesion_area_mm2: in-plane pieces of infection smaller than this on a slice are removed (before the 3D
            filters, so every lesion of the output passes them).
        basal_rim_max_share: lesions with at least this share of their voxels in the slice of lung over the
            diaphragm and the heart are removed; above 1 none is.
        through_plane_mm: a lesion stays only if, seen through an axial window of this length (mm) (where the mean
            probability over the window's slices also reaches ``threshold``), it still passes the lesion gates; a
            lesion that passes stays whole. 0 is off (on slices thicker than the window it has no effect).
        min_lesion_depth_mm: lesions none of whose voxels lies this far (mm) inside the lung (from the pleura, the
            mediastinum, the diaphragm) are removed: bands along the lung's edge. 0 is off.
        extension_threshold: probability at or above which infection against the lung joins the lung mask
            (:func:`~infnet_monai.postprocessing.extend_lung`); default the smaller of ``threshold`` and
            :data:`~infnet_monai.postprocessing.EXTENSION_THRESHOLD`.
        classes: also label the infection GGO or consolidation with the head of ``class_model_path``.
        class_model_path: the GGO / consolidation head (default: the shipped ``models/classes.pt``).
        overview: write ``overview.png`` per case (also for cases skipped by ``resume``).
        dicom_seg: write ``segmentation.dcm`` (DICOM-SEG referencing the source series) for DICOM inputs.
        dicom_sr: write ``measurements.dcm`` (a TID 1500 measurement report in a Comprehensive 3D SR, referencing
            the DICOM-SEG's segments) for DICOM inputs that get a ``segmentation.dcm``.
        save_probability: also write ``probability.nii.gz`` (uint8, scaled to 0-1 by its header); with ``resume``,
            a case stored without it is redone.
        slab_slices: axial slices that stream together through the slice-wise preprocessing, the network and the
            inversion (bounds the memory of those steps; the results do not depend on it).
        backend: what runs the network, ``"auto"`` | ``"torch"`` | ``"openvino"``
            (:func:`~infnet_monai.inferers.backends.network_backend`: ``"auto"`` is OpenVINO on the CPU when it is
            installed and agrees with torch, else torch).
        precision: ``"fp32"`` (default) or ``"bf16"`` (opt-in, faster only on CPUs with bfloat16 matrix units;
            probabilities move, see the bundle docs).
    """

    model_path: str | os.PathLike | None = None
    device: str = "auto"
    batch_slices: int = 16
    threshold: float = THRESHOLD
    min_lesion_volume_mm3: float = DEFAULT_MIN_LESION_MM3
    window_hu: Sequence[float] = LUNG_WINDOW_HU
    max_slices: int = DEFAULT_MAX_SLICES
    amp: bool = True
    flip_tta: bool = False
    spatial_size: int | None = None
    temperature: float | None = None
    crop_rounds: int = 3
    max_slice_gap_mm: float | None = None
    min_lesion_extent_mm: float = MIN_LESION_EXTENT_MM
    min_lesion_area_mm2: float = MIN_LESION_AREA_MM2
    basal_rim_max_share: float = BASAL_RIM_MAX_SHARE
    through_plane_mm: float = THROUGH_PLANE_MM
    min_lesion_depth_mm: float = MIN_LESION_DEPTH_MM
    extension_threshold: float | None = None
    classes: bool = True
    class_model_path: str | os.PathLike | None = None
    overview: bool = True
    dicom_seg: bool = True
    dicom_sr: bool = True
    save_probability: bool = False
    slab_slices: int = 32
    backend: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("batch_slices", "slab_slices", "crop_rounds", "max_slices"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}.")
        if self.max_slice_gap_mm is not None and not float(self.max_slice_gap_mm) > 0:
            raise ValueError(f"max_slice_gap_mm must be > 0 (or None), got {self.max_slice_gap_mm}.")
        if self.extension_threshold is not None and not 0.0 < self.extension_threshold <= 1.0:
            raise ValueError(f"extension_threshold must be in (0, 1], got {self.extension_threshold}.")
        for name in ("amp", "flip_tta", "classes", "overview", "dicom_seg", "dicom_sr", "save_probability"):
            object.__setattr__(self, name, check_flag(getattr(self, name), name))
        object.__setattr__(self, "window_hu", check_window(self.window_hu))
        backend, precision = check_backend(self.backend, self.precision)
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "precision", precision)
        if self.extension_threshold is None:  # the lung takes in every lesion it touches
            object.__setattr__(self, "extension_threshold", extension_threshold_for(self.threshold))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _inferer_on(inferer: Any, device: torch.device, cfg: SegmentConfig) -> Any:
    """``inferer`` as this segmenter runs it: a configured one whose slice inferer names no device runs the network
    where it lives, on a copy (the object passed in is not changed); one whose crop threshold or batch size contradicts
    the settings the rows report is refused."""
    grow = getattr(inferer, "grow_threshold", None)
    if grow is not None and abs(float(grow) - cfg.threshold) > 1e-9:
        raise ValueError(
            f"the inferer grows its crops at {grow:g} but the threshold is {cfg.threshold:g}; give the same value to "
            "both (the rows report the threshold)."
        )
    slices = getattr(inferer, "slice_inferer", None)
    batch = getattr(slices, "sw_batch_size", None)
    if batch is not None and int(batch) != cfg.batch_slices:
        raise ValueError(f"the inferer runs {batch} slices per batch but batch_slices is {cfg.batch_slices}; give the same value to both.")
    if slices is None or slices.sw_device is not None:
        return inferer
    inferer, slices = copy.copy(inferer), copy.copy(slices)
    slices.sw_device = device
    inferer.slice_inferer = slices
    return inferer


class CTSegmenter:
    """Segment COVID-19 lung infection in CT volumes with a 2D Inf-Net applied slice by slice.

    Builds the network function, the predictor, the case writer and the cohort runner from one
    :class:`SegmentConfig`. The pipeline's four MONAI components, the ones the bundle's ``configs/inference.json``
    lists (:mod:`infnet_monai.pipeline.components`), can be given; else they are built from the settings.

    Args:
        model_path: as :attr:`SegmentConfig.model_path` (the one setting that may be given by position).
        config: the settings; keyword ``options`` override its fields (``CTSegmenter(threshold=0.4)``).
        network: an already built network (weights loaded); used with ``spatial_size`` or ``model_path``.
        preprocessing: the chain from ``{"image": case, path or volume}`` (default
            :func:`~infnet_monai.pipeline.components.ct_preprocessing`); its slice-wise tail streams in slabs.
        inferer: a :class:`~infnet_monai.inferers.LungCropSliceInferer` (default: one with ``batch_slices``,
            ``crop_rounds`` and ``threshold``).
        postprocessing: the chain from ``{"image", "lung", "pred"}`` on the RAS grid to the masks and ``"burden"``
            on the input's grid (default :func:`~infnet_monai.pipeline.components.ct_postprocessing`).
        options: fields of :class:`SegmentConfig`.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        config: SegmentConfig | None = None,
        network: torch.nn.Module | None = None,
        preprocessing: Compose | None = None,
        inferer: Any = None,
        postprocessing: Compose | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(SegmentConfig.names()))
        if unknown:
            raise TypeError(f"CTSegmenter got unknown option(s) {unknown}; see SegmentConfig.")
        if model_path is not None:
            options["model_path"] = model_path
        self.config = cfg = replace(config or SegmentConfig(), **options)
        self.env = dist_env()  # read once: the runner gets it from here
        self.device = resolve_device(rank_device(cfg.device, self.env))
        self.network, self.model_path, info = self._load_network(cfg.model_path, network)
        self.spec = ModelSpec.from_checkpoint(info)
        self.spatial_size = int(cfg.spatial_size or self.spec.spatial_size)
        self.temperature = float(self.spec.temperature if cfg.temperature is None else cfg.temperature)
        if not (self.temperature > 0 and self.temperature != float("inf")):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}.")
        self.class_model: torch.nn.Module | None = None
        self.class_model_path: Path | None = None
        if cfg.classes:
            self.class_model, self.class_model_info = load_class_model(self.network, self.temperature, cfg.class_model_path, self.device)
            self.class_model_path = Path(cfg.class_model_path or default_class_model_path())
        in_channels = int(self.spec.in_channels if network is None or cfg.model_path else getattr(network, "in_channels", 1))
        self.network_fn = network_backend(
            ProbabilityMaps(self.network, self.temperature, classes=self.class_model, flip_tta=cfg.flip_tta),
            (1, in_channels, self.spatial_size, self.spatial_size), self.device, cfg.backend, cfg.precision,
        )
        preprocessing = preprocessing or ct_preprocessing(cfg.window_hu, in_channels, cfg.max_slices, self.spec.mean, self.spec.std)
        inferer = inferer or LungCropSliceInferer(
            roi_size=(self.spatial_size, self.spatial_size), sw_batch_size=cfg.batch_slices, sw_device=self.device,
            device=torch.device("cpu"), max_rounds=cfg.crop_rounds, grow_threshold=cfg.threshold,
        )
        inferer = _inferer_on(inferer, self.device, cfg)
        self.predictor = VolumePredictor(
            self.network_fn, preprocessing, inferer, postprocessing or self._postprocessing(preprocessing),
            device=self.device, amp=cfg.amp, slab_slices=cfg.slab_slices, max_slice_gap_mm=cfg.max_slice_gap_mm,
        )
        self.writer = CaseWriter.default(
            self.version, overview=cfg.overview, dicom_seg=cfg.dicom_seg, dicom_sr=cfg.dicom_sr,
            model_name=Path(self.model_path).name if self.model_path else None,
        )
        self.runner = CohortRunner(
            self.predictor, self.writer, self._row_settings(), self._provenance(),
            classes=self.class_model is not None, save_probability=cfg.save_probability, device=self.device,
            env=self.env,
        )

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

    def _postprocessing(self, preprocessing: Compose) -> Compose:
        cfg = self.config
        from infnet_monai.pipeline.components import split_slicewise

        return ct_postprocessing(
            split_slicewise(preprocessing)[0], threshold=cfg.threshold, extension_threshold=cfg.extension_threshold,
            min_lesion_volume_mm3=cfg.min_lesion_volume_mm3, min_lesion_extent_mm=cfg.min_lesion_extent_mm,
            min_lesion_area_mm2=cfg.min_lesion_area_mm2, basal_rim_max_share=cfg.basal_rim_max_share,
            through_plane_mm=cfg.through_plane_mm, min_lesion_depth_mm=cfg.min_lesion_depth_mm,
        )

    # ------------------------------------------------------------------ provenance
    @property
    def version(self) -> str:
        """``infnet-monai VERSION, model NAME (+ HEAD)``: the software version written into the outputs."""
        model = self.model_path.name if self.model_path else "in-memory network"
        head = f" + {self.class_model_path.name}" if self.class_model is not None and self.class_model_path else ""
        return f"infnet-monai {__version__}, model {model}{head}"

    @property
    def backend(self) -> str:
        """What runs the network and at which precision, e.g. ``"openvino fp32"`` (the backend ``"auto"`` chose)."""
        return f"{self.network_fn.backend} {self.network_fn.precision}"

    def _row_settings(self) -> dict:
        row = {
            "infnet_monai_version": __version__,
            "window_hu": list(self.config.window_hu),
            "threshold": self.config.threshold,
            "model": str(self.model_path) if self.model_path else "in-memory network",
            "model_sha256": file_sha256(self.model_path) if self.model_path else "",
            "command_line": " ".join(sys.argv),  # stats.json keeps the command that made the case's masks
            "backend": self.backend,
        }
        if self.class_model is not None:
            row["class_model"] = str(self.class_model_path)
            row["class_model_sha256"] = file_sha256(self.class_model_path) if self.class_model_path.is_file() else ""
        return row

    def _provenance(self) -> dict:
        cfg = self.config
        return {
            "version": self.version,
            "model": str(self.model_path) if self.model_path else "in-memory network",
            "class model": str(self.class_model_path) if self.class_model is not None else "none",
            "window (HU)": f"{cfg.window_hu[0]:g} to {cfg.window_hu[1]:g}",
            "threshold": cfg.threshold,
            "temperature": self.temperature,
            "device": str(self.device),
            "backend": self.backend,
            "this run's command line": " ".join(sys.argv),
        }

    # ------------------------------------------------------------------ the parts, for convenience
    @property
    def inferer(self) -> Any:
        return self.predictor.inferer

    # ------------------------------------------------------------------ in memory
    def probability(self, image: Any):
        """Infection probability on the voxel grid of ``image`` (``(1, X, Y, Z)`` CT in HU with its affine)."""
        return self.predictor.probability(image)

    def segment_image(self, image: Any, keep_probability: bool = False, progress: Callable[[int, int], None] | None = None) -> CaseResult:
        """Masks and burden statistics of one volume, in memory (see
        :class:`~infnet_monai.pipeline.predictor.VolumePredictor`): ``image`` is a ``(1, X, Y, Z)`` CT in Hounsfield
        units with its affine, or what ``preprocessing`` loads (a case or a path)."""
        return self.predictor(image, keep_probability, progress)

    def prepare(self, image: Any) -> dict:
        """:meth:`VolumePredictor.prepare <infnet_monai.pipeline.predictor.VolumePredictor.prepare>`."""
        return self.predictor.prepare(image)

    def finish(self, data: dict, keep_probability: bool = False, postprocessing: Compose | None = None) -> CaseResult:
        """:meth:`VolumePredictor.finish <infnet_monai.pipeline.predictor.VolumePredictor.finish>`."""
        return self.predictor.finish(data, keep_probability, postprocessing)

    # ------------------------------------------------------------------ cohort
    def run(self, input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> CohortReport:
        """Segment every case under ``input_path`` with :meth:`CohortRunner.run
        <infnet_monai.pipeline.runner.CohortRunner.run>` (``options``: ``resume``, ``progress``,
        ``slice_progress``); see :func:`segment_cohort`."""
        return self.runner.run(input_path, output_dir, **options)


def segment_cohort(input_path: str | os.PathLike, output_dir: str | os.PathLike, **options: Any) -> CohortReport:
    """Segment a NIfTI file, a DICOM series folder, or a cohort folder of both (any depth).

    Writes ``output_dir/<case_id>/infection.nii.gz`` (uint8 0/1), ``lung.nii.gz`` (uint8 0 background, 1 right,
    2 left), both with the input's shape and affine, ``stats.json`` and, with ``save_probability=True``,
    ``probability.nii.gz``; and ``output_dir/burden.csv`` with one row per case (``status`` ok or error, with the
    message). A failing case never stops the run. With ``resume=True`` cases whose outputs are complete are skipped.

    Args:
        input_path: file or folder.
        output_dir: output folder (may lie inside the input folder; it is then not scanned).
        options: :meth:`CTSegmenter.run` options (``resume``; ``strict``; ``pairs``; ``progress``, which wraps the case iterable, e.g.
            ``tqdm``; ``slice_progress``, called as ``(case_id, slices done, slices with lung)`` after every batch
            inside a case) and the fields of :class:`SegmentConfig` (``model_path``, default the shipped model;
            ``device``; ``threshold``; ...).

    Returns:
        :class:`CohortReport`; ``report.exit_code`` is 0 when all cases succeeded, else 1.
    """
    run_options = {
        name: options.pop(name)
        for name in ("resume", "progress", "slice_progress", "strict", "pairs", "lock")
        if name in options
    }
    return CTSegmenter(**options).run(input_path, output_dir, **run_options)
