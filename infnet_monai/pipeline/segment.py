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
from monai.transforms import Compose, Invertd, Orientation

from infnet_monai import __version__
from infnet_monai.defaults import DEFAULT_MAX_SLICES, DEFAULT_MIN_LESION_MM3
from infnet_monai.io.cases import CTCase, discover_cases
from infnet_monai.inferers.lung_crop import LungCropSliceInferer
from infnet_monai.inferers.slices import resolve_temperature
from infnet_monai.io.checkpoint import load_class_model, load_model
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
    like_reference,
    reference_header,
    remove_stale_parts,
    write_csv_atomic,
    write_nifti_atomic,
    write_text_atomic,
)
from infnet_monai.io.dicom_seg import DICOM_SEG_FILE, write_dicom_seg
from infnet_monai.pipeline.distributed import case_bytes, dist_env, gather_rows, rank_device, shard_by_size, start
from infnet_monai.io.volume import CaseError, load_ct
from infnet_monai.postprocessing import (
    EXTENSION_THRESHOLD,
    MIN_LESION_AREA_MM2,
    MIN_LESION_EXTENT_MM,
    body_mask,
    extend_lung,
    infection_classes,
    lung_mask,
    postprocess_infection,
)
from infnet_monai.stats.burden import class_burden, infection_burden
from infnet_monai.transforms.ct import LUNG_WINDOW_HU, WORLD_AXIS_LABELS, ct_slice_preprocessing
from infnet_monai.transforms.slices import DEFAULT_SPATIAL_SIZE
from infnet_monai.utils.device import autocast_context, resolve_device
from infnet_monai.utils.model_path import default_class_model_path, default_model_path
from infnet_monai.visualize.overview import overview_image, write_overview
from infnet_monai.visualize.report import OVERVIEW_FILE, write_report

__all__ = [
    "CTSegmenter",
    "CaseResult",
    "CohortReport",
    "segment_cohort",
    "write_nifti_atomic",
    "write_csv_atomic",
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

    Args:
        model_path: checkpoint from :func:`infnet_monai.io.save_model` (default: the shipped model).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
        batch_slices: axial slices per forward pass (bounds memory on the device).
        threshold: probability at or above which a voxel is infection.
        min_lesion_volume_mm3: connected lesions smaller than this are removed.
        window_hu: Hounsfield window mapped onto the training intensities.
        max_slices: longer volumes are refused with a clear error (memory bound); raise it if memory allows.
        amp: mixed precision on CUDA.
        flip_tta: also run the left-right flipped slices and average (twice the time).
        temperature: logit temperature, probability ``sigmoid(logit / temperature)``; ``None`` uses the checkpoint's
            calibration (1 when it has none). Without ``flip_tta``, masks at threshold 0.5 do not depend on it.
        network: an already built network (then ``model_path`` is not read); used with ``spatial_size``.
        spatial_size: in-plane network size when ``network`` is given.
        preprocessing: a custom invertible chain (default :func:`ct_slice_preprocessing`).
        min_lesion_extent_mm: lesions spanning fewer axial millimetres are removed (3D consistency).
        min_lesion_area_mm2: in-plane pieces of infection smaller than this on a slice are removed.
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
        extension_threshold: float | None = None,
        classes: bool = True,
        class_model_path: str | os.PathLike | None = None,
        overview: bool = True,
        dicom_seg: bool = True,
    ) -> None:
        if batch_slices < 1:
            raise ValueError(f"batch_slices must be >= 1, got {batch_slices}.")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
        self.device = resolve_device(rank_device(device, dist_env()))
        self._rank = (0, 1)  # (rank, world size) of the running job, recorded in stats.json
        info: dict = {}
        if network is None:
            self.model_path: Path | None = Path(model_path) if model_path is not None else default_model_path()
            network, info = load_model(self.model_path, self.device)
        else:
            self.model_path = None
            network = network.to(self.device).eval()
        self.network = network
        prep = info.get("preprocessing", {})
        size = spatial_size or prep.get("spatial_size", DEFAULT_SPATIAL_SIZE)
        self.spatial_size = int(size if isinstance(size, (int, float)) else size[0])
        in_channels = int(info.get("network", {}).get("in_channels", getattr(network, "in_channels", 1)))
        self.preprocessing = preprocessing or ct_slice_preprocessing(window_hu, in_channels)
        self.inferer = LungCropSliceInferer(
            roi_size=(self.spatial_size, self.spatial_size),
            sw_batch_size=batch_slices,
            sw_device=self.device,
            device=torch.device("cpu"),
            max_rounds=crop_rounds,
        )
        self.invert = Invertd("pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False)
        if field_of_view not in ("lung", "body"):
            raise ValueError(f"field_of_view must be 'lung' or 'body', got {field_of_view!r}.")
        self.field_of_view = field_of_view
        if extension_threshold is None:
            extension_threshold = min(threshold, EXTENSION_THRESHOLD)  # the lung takes in every lesion it touches
        if not 0.0 < extension_threshold <= 1.0:
            raise ValueError(f"extension_threshold must be in (0, 1], got {extension_threshold}.")
        self.extension_threshold = float(extension_threshold)
        self.threshold = threshold
        self.min_lesion_volume_mm3 = float(min_lesion_volume_mm3)
        self.min_lesion_extent_mm = float(min_lesion_extent_mm)
        self.min_lesion_area_mm2 = float(min_lesion_area_mm2)
        self.window_hu = tuple(float(w) for w in window_hu)
        self.max_slices = int(max_slices)
        self.amp = amp
        self.flip_tta = flip_tta
        self.model_info = info
        self.temperature = resolve_temperature(temperature, info)
        self.overview = bool(overview)
        self.dicom_seg = bool(dicom_seg)
        self.class_model: torch.nn.Module | None = None
        self.class_model_path: Path | None = None
        if classes:
            self.class_model, class_info = load_class_model(self.network, self.temperature, class_model_path, self.device)
            self.class_model_path = Path(class_model_path) if class_model_path else None
            self.class_model_info = class_info

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

    def _check_length(self, image: MetaTensor) -> None:
        n_slices = int(max(image.shape[1:]))
        if n_slices > self.max_slices:
            source = image.meta.get("filename_or_obj", "") if isinstance(image, MetaTensor) else ""
            prefix = f"{source}: " if source else ""  # every error names the file (load_ct records it)
            raise CaseError(
                f"{prefix}volume has {n_slices} voxels along its longest axis, above the limit of {self.max_slices} that keeps "
                "memory bounded; raise it with --max-slices (about 0.6 GB of memory per 100 slices of 512x512)."
            )

    @torch.no_grad()
    def _probability_ras(self, hu_ras: MetaTensor, lung_ras: np.ndarray) -> np.ndarray:
        """Infection probability ``(1, X, Y, Z)`` on the RAS grid of ``hu_ras`` (``(2, X, Y, Z)`` with the
        consolidation share when the class head is on), each slice cropped to ``lung_ras`` (or to the body on the
        slices with lung, with ``field_of_view="body"``)."""
        if self.field_of_view == "body":
            body = body_mask(hu_ras[0].numpy())
            body[:, :, ~lung_ras.any(axis=(0, 1))] = False
            lung_ras = body
        image = MetaTensor(hu_ras.as_tensor(), meta=dict(hu_ras.meta))  # a fresh history: only this chain is inverted
        lung = MetaTensor(torch.from_numpy(np.ascontiguousarray(lung_ras[None] > 0)), meta=dict(hu_ras.meta))
        data = self.preprocessing({"image": image, "lung": lung})
        x = data["image"].as_tensor().unsqueeze(0)  # (1, C, X', Y', Z')
        with autocast_context(self.device, self.amp):
            prob = self.inferer(x, self._network_fn, data["lung"][0].as_tensor())
        pred = MetaTensor(prob[0].float().cpu(), meta=data["image"].meta, applied_operations=data["image"].applied_operations)
        del x, prob, image, lung
        data = {"image": data["image"], "pred": pred}
        return self.invert(data)["pred"].clamp_(0.0, 1.0).numpy()

    def _to_ras(self, image: MetaTensor) -> tuple[Orientation, MetaTensor, tuple[float, float, float], np.ndarray]:
        """The volume in RAS (with the transform that undoes it), its spacing and its Hounsfield-unit lung mask."""
        self._check_length(image)
        orient = Orientation(axcodes="RAS", labels=WORLD_AXIS_LABELS)
        hu_ras = orient(image)
        spacing = tuple(float(s) for s in hu_ras.pixdim[:3])
        return orient, hu_ras, spacing, lung_mask(hu_ras[0].numpy(), spacing)

    @staticmethod
    def _from_ras(arr: np.ndarray, orient: Orientation, hu_ras: MetaTensor, dtype=np.uint8) -> np.ndarray:
        """An ``(X, Y, Z)`` array on the RAS grid of ``hu_ras`` brought back onto the input's grid, in ``dtype``
        (not float32: a float copy of a 512 x 512 x 1000 mask would be 1 GB)."""
        data = torch.from_numpy(np.ascontiguousarray(arr[None], dtype=dtype))
        mt = MetaTensor(data, meta=hu_ras.meta, applied_operations=hu_ras.applied_operations)
        return np.ascontiguousarray(orient.inverse(mt)[0].numpy())

    def probability(self, image: MetaTensor) -> MetaTensor:
        """Infection probability on the voxel grid of ``image`` (0 on slices without lung).

        Args:
            image: ``(1, X, Y, Z)`` CT in Hounsfield units with its affine (e.g. from :func:`load_ct`).

        Returns:
            ``(1, X, Y, Z)`` float32 probabilities in [0, 1], same affine.
        """
        orient, hu_ras, _, lung_hu = self._to_ras(image)
        prob = self._from_ras(self._probability_ras(hu_ras, lung_hu)[0], orient, hu_ras, np.float32)
        return MetaTensor(torch.from_numpy(prob[None]), meta=image.meta)

    def segment_image(self, image: MetaTensor, keep_probability: bool = False) -> CaseResult:
        """Infection and lung masks plus burden statistics for one loaded volume.

        Steps (in RAS, axis 2 axial): Hounsfield-unit lung mask; lung-cropped slice-wise inference; the infection
        found against the lung joins it (pathology-inclusive lung); infection thresholded inside that lung with
        small lesions removed; statistics; masks brought back onto the input's grid.

        Args:
            image: ``(1, X, Y, Z)`` CT in Hounsfield units.
            keep_probability: also return the probability map.

        Returns:
            :class:`CaseResult` with ``infection`` (uint8 0/1), ``lung`` (uint8 0 background, 1 right, 2 left) and,
            with the class head, ``classes`` (uint8 0 background, 1 GGO, 2 consolidation; non-zero exactly where
            ``infection`` is) on the voxel grid of ``image``, and the burden statistics in ``row``.
        """
        orient, hu_ras, spacing, lung_hu = self._to_ras(image)
        hu = hu_ras[0].numpy()
        maps = self._probability_ras(hu_ras, lung_hu)
        prob_ras = maps[0]
        lung_ras = extend_lung(lung_hu, prob_ras, hu, spacing, threshold=self.extension_threshold)
        infection_ras = postprocess_infection(
            prob_ras,
            lung_ras,
            spacing,
            threshold=self.threshold,
            min_lesion_volume_mm3=self.min_lesion_volume_mm3,
            min_lesion_extent_mm=self.min_lesion_extent_mm,
            min_lesion_area_mm2=self.min_lesion_area_mm2,
        )
        row = dict(infection_burden(infection_ras, lung_ras, spacing))
        classes_ras = None
        if self.class_model is not None:  # no slice with lung: nothing was inferred, an all-background class map
            classes_ras = infection_classes(infection_ras, maps[1] if maps.shape[0] > 1 else np.zeros_like(maps[0]))
        del maps
        if classes_ras is not None:
            row.update(class_burden(classes_ras, lung_ras, spacing))
        row["shape"] = list(int(s) for s in image.shape[1:])
        row["spacing_mm"] = [round(float(s), 6) for s in image.pixdim[:3]]
        row["lung_hu_volume_ml"] = round(float((lung_hu > 0).sum()) * float(np.prod(spacing)) / 1000.0, 3)
        row["slices_inferred"] = int((self.inferer.last_boxes[:, 0] >= 0).sum())
        return CaseResult(
            row=row,
            infection=self._from_ras(infection_ras, orient, hu_ras),
            lung=self._from_ras(lung_ras, orient, hu_ras),
            probability=self._from_ras(prob_ras, orient, hu_ras, np.float32) if keep_probability else None,
            classes=self._from_ras(classes_ras, orient, hu_ras) if classes_ras is not None else None,
        )

    # ------------------------------------------------------------------ one case, with files
    def segment_case(self, case: CTCase, output_dir: str | os.PathLike, save_probability: bool = False) -> dict:
        """Load, segment and write one case under ``output_dir/<case_id>/``; return its statistics row.

        Raises:
            CaseError: the input is unusable (the message names the file and the problem).
        """
        start = time.time()
        image = load_ct(case)
        result = self.segment_image(image, keep_probability=save_probability)
        case_dir = Path(output_dir) / case.case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(case_dir, (INFECTION_FILE, CLASSES_FILE, LUNG_FILE, PROBABILITY_FILE, STATS_FILE, DICOM_SEG_FILE, OVERVIEW_FILE))
        reference = reference_header(case, image)
        paths = {
            "infection_mask_path": write_nifti_atomic(like_reference(result.infection, reference), case_dir / INFECTION_FILE),
            "lung_mask_path": write_nifti_atomic(like_reference(result.lung, reference), case_dir / LUNG_FILE),
        }
        if result.classes is not None:
            paths["infection_classes_path"] = write_nifti_atomic(like_reference(result.classes, reference), case_dir / CLASSES_FILE)
        if save_probability and result.probability is not None:
            prob8 = np.round(result.probability * 255.0).astype(np.uint8)
            img = like_reference(prob8, reference)
            img.header.set_slope_inter(1.0 / 255.0, 0.0)  # viewers show 0..1
            write_nifti_atomic(img, case_dir / PROBABILITY_FILE)
        row = case_fields(case)
        row.update(result.row)
        row.update({k: str(v) for k, v in paths.items()})
        row["status"], row["error"] = "ok", ""
        row["seconds"] = round(time.time() - start, 2)
        row["window_hu"] = list(self.window_hu)
        row["threshold"] = self.threshold
        row["model"] = str(self.model_path) if self.model_path else "in-memory network"
        if self.class_model is not None:
            row["class_model"] = str(self.class_model_path or default_class_model_path())
        notes = list(case.notes)
        if self.dicom_seg and case.kind == "dicom":
            seg_path = self._write_dicom_seg(case, case_dir, result, reference[0], notes)
            if seg_path is not None:
                row["dicom_seg_path"] = str(seg_path)
        if self.overview:
            masks = (result.lung, result.infection, result.classes)
            self._write_overview(case_dir, image[0].numpy(), masks, reference[0], row, notes)
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

    def _write_overview(self, case_dir: Path, hu, masks, affine, row: dict, notes: list) -> None:
        """``overview.png``; a failure is a warning and a note in ``stats.json``, never a lost case."""
        lung, infection, classes = masks
        try:
            picture = overview_image(hu, lung, infection, affine, classes, row, row.get("case_id", ""), self._version())
            write_overview(case_dir / OVERVIEW_FILE, picture)
        except Exception as e:  # noqa: BLE001 - a picture must never cost the masks
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
        self._write_overview(case_dir, image[0].numpy(), masks, affine, row, [])

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
        save_probability: bool = False,
        resume: bool = False,
        progress: Callable[[Iterable], Iterable] | None = None,
        slice_progress: Callable[[str, int, int], None] | None = None,
    ) -> CohortReport:
        """Segment every case under ``input_path``; see :func:`segment_cohort`. ``slice_progress(case_id, done,
        total)`` is called after every batch of slices inside a case (``total`` grows when crops are rerun)."""
        input_path, output_dir = Path(input_path), Path(output_dir)
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
            return self._run_cases(cases, output_dir, save_probability, resume, progress, slice_progress, env)
        finally:
            if joined:
                dist.destroy_process_group()

    def _run_cases(self, cases, output_dir: Path, save_probability, resume, progress, slice_progress, env) -> CohortReport:
        """This rank's share of ``cases`` (all of them in one process), then the cohort's table and report."""
        mine = shard_by_size([case_bytes(c.files) for c in cases], env.world_size)[env.rank] if env else range(len(cases))
        self._rank = (env.rank, env.world_size) if env else (0, 1)
        report = CohortReport(output_dir=output_dir)
        rows: dict[int, dict] = {}
        todo = [cases[i] for i in mine]
        for i, case in zip(mine, progress(todo) if progress is not None else todo):
            rows[i] = self._one_case(case, output_dir, save_probability, resume, slice_progress)
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

    def _one_case(self, case: CTCase, output_dir: Path, save_probability, resume, slice_progress) -> dict:
        row = completed_row(case, output_dir, classes=self.class_model is not None) if resume else None
        if row is not None:
            logger.info("%s: already complete, skipped (--resume)", case.case_id)
            self._overview_for_resumed(case, output_dir, row)
            return row
        cid = case.case_id
        self.inferer.on_batch = (lambda d, t, c=cid: slice_progress(c, d, t)) if slice_progress else None
        row = self._safe_case(case, output_dir, save_probability)
        self.inferer.on_batch = None
        if row.get("status") == "ok":
            logger.info("%s: done in %.1f s (%d slices inferred)", cid, row["seconds"], row.get("slices_inferred", 0))
        return row

    def _safe_case(self, case: CTCase, output_dir: Path, save_probability: bool) -> dict:
        try:
            if case.error:
                raise CaseError(case.error)
            return self.segment_case(case, output_dir, save_probability)
        except KeyboardInterrupt:
            raise
        except OSError as e:
            if getattr(e, "errno", None) == errno.ENOSPC:
                message = f"no space left on the device while writing outputs under '{output_dir}'; free space and rerun with --resume."
            else:
                message = f"{case.source_path}: {type(e).__name__}: {e}"
        except (CaseError, ValueError, RuntimeError, MemoryError) as e:
            # CaseError messages already name the file; anything unexpected gets the case's path in front
            message = str(e) if isinstance(e, CaseError) else f"{case.source_path}: unexpected {type(e).__name__}: {e}"
        logger.error("%s (%s): %s", case.case_id, case.source_path, message)
        row = case_fields(case)
        row.update({"status": "error", "error": message})
        return row


def segment_cohort(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    device: str = "auto",
    batch_slices: int = 16,
    save_probability: bool = False,
    resume: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
    slice_progress: Callable[[str, int, int], None] | None = None,
    **kwargs: Any,
) -> CohortReport:
    """Segment a NIfTI file, a DICOM series folder, or a cohort folder of both (any depth).

    Writes ``output_dir/<case_id>/infection.nii.gz`` (uint8 0/1), ``lung.nii.gz`` (uint8 0 background, 1 right,
    2 left), both with the input's shape and affine, ``stats.json`` and optionally ``probability.nii.gz``; and
    ``output_dir/burden.csv`` with one row per case (``status`` ok or error, with the message). A failing case never
    stops the run. With ``resume=True`` cases whose outputs are complete are skipped.

    Args:
        input_path: file or folder.
        output_dir: output folder (may lie inside the input folder; it is then not scanned).
        model_path: checkpoint (default: the shipped model).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``.
        batch_slices: slices per forward pass.
        save_probability: also write the probability map.
        resume: skip cases already complete.
        progress: wraps the case iterable (e.g. ``tqdm``).
        slice_progress: called as ``(case_id, slices done, slices to do)`` after every batch inside a case.
        kwargs: further :class:`CTSegmenter` options (threshold, min_lesion_volume_mm3, window_hu, max_slices, ...).

    Returns:
        :class:`CohortReport`; ``report.exit_code`` is 0 when all cases succeeded, else 1.
    """
    segmenter = CTSegmenter(model_path, device=device, batch_slices=batch_slices, **kwargs)
    return segmenter.run(
        input_path, output_dir, save_probability=save_probability, resume=resume, progress=progress,
        slice_progress=slice_progress,
    )
