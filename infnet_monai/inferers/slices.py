"""2D inference on folders of CT slice images (``predict-slices``): one 8-bit probability PNG per input image."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from infnet_monai.data.covid_semiseg import IMAGE_SUFFIXES
from infnet_monai.networks.nets.classes import CLASS_NAMES
from infnet_monai.io.checkpoint import load_class_model, load_model, model_temperature
from infnet_monai.transforms.slices import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD, slice_inference_transforms
from infnet_monai.utils.files import atomic_write
from infnet_monai.utils.device import autocast_context, resolve_device
from infnet_monai.utils.model_path import default_model_path
from infnet_monai.utils.validation import check_temperature

__all__ = [
    "SlicePredictor",
    "SliceFolderReport",
    "predict_slice_folder",
    "read_slice",
    "resolve_temperature",
    "write_png_atomic",
]

logger = logging.getLogger(__name__)


def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit single-channel PNG through a temporary file renamed into place (no half-written files)."""
    atomic_write(path, lambda tmp: Image.fromarray(array, mode="L").save(tmp, format="PNG"))


def resolve_temperature(temperature: float | None, info: dict | None = None) -> float:
    """The logit temperature to use: ``temperature`` when given, else the checkpoint's calibration (default 1).

    Raises:
        ValueError: the temperature is not a finite number > 0.
    """
    return check_temperature(model_temperature(info or {}) if temperature is None else temperature)


class SlicePredictor:
    """Infection probability maps for 2D slices with a trained Inf-Net.

    A slice (any size, 8-bit grey, as in COVID-SemiSeg) is scaled to [0, 1], resized to the network size, standardised
    as in training, run through the network (optionally also left-right flipped, averaging both), and the probability
    ``sigmoid(logit / temperature)`` is resized back to the slice's size. The temperature comes from the checkpoint's
    calibration (:func:`infnet_monai.io.save_calibrated_model`) unless given; it never moves the 0.5 boundary.

    Args:
        model_path: checkpoint written by :func:`infnet_monai.io.save_model`; the default is the shipped model.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        flip_tta: average the prediction with that of the left-right flipped slice.
        amp: mixed precision on CUDA (ignored on CPU).
        temperature: logit temperature; ``None`` uses the checkpoint's calibration (1 when it has none).
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "auto",
        flip_tta: bool = False,
        amp: bool = True,
        temperature: float | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.network, info = load_model(self.model_path, self.device)
        prep = info.get("preprocessing", {})
        size = prep.get("spatial_size", DEFAULT_SPATIAL_SIZE)
        self.spatial_size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        self.in_channels = int(info.get("network", {}).get("in_channels", 1))
        self.mean = float(prep.get("slice_mean", SLICE_MEAN))
        self.std = float(prep.get("slice_std", SLICE_STD))
        self.flip_tta = flip_tta
        self.amp = amp
        self.info = info
        self.temperature = resolve_temperature(temperature, info)
        self.class_model: torch.nn.Module | None = None
        self.class_info: dict = {}

    @classmethod
    def from_network(
        cls,
        network: torch.nn.Module,
        spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
        in_channels: int = 1,
        device: str | torch.device = "cpu",
        flip_tta: bool = False,
        amp: bool = True,
        temperature: float = 1.0,
    ) -> SlicePredictor:
        """A predictor around a network in memory (e.g. during training); the caller sets its eval mode."""
        self = cls.__new__(cls)
        self.device = torch.device(device)
        self.model_path = None
        self.network = network
        if isinstance(spatial_size, (int, float)):
            self.spatial_size = (int(spatial_size), int(spatial_size))
        else:
            self.spatial_size = tuple(int(s) for s in spatial_size)
        self.in_channels = int(in_channels)
        self.mean, self.std = SLICE_MEAN, SLICE_STD
        self.flip_tta = flip_tta
        self.amp = amp
        self.info = {}
        self.temperature = resolve_temperature(temperature)
        self.class_model, self.class_info = None, {}
        return self

    def with_classes(self, class_model_path: str | os.PathLike | None = None) -> SlicePredictor:
        """Also predict GGO and consolidation with the head of ``class_model_path`` (default: the shipped one),
        see :meth:`predict_classes_unit`. Returns ``self``."""
        self.class_model, self.class_info = load_class_model(self.network, self.temperature, class_model_path, self.device)
        return self

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The slices through :func:`~infnet_monai.transforms.slice_inference_transforms` (the checkpoint's size,
        channels, mean and std), stacked on the device."""
        chain = slice_inference_transforms(self.spatial_size, self.in_channels, self.mean, self.std)
        prepared = [torch.as_tensor(chain(np.asarray(im, dtype=np.float32))) for im in images]
        return torch.stack([p.as_tensor() if hasattr(p, "as_tensor") else p for p in prepared]).float().to(self.device)

    def _probabilities(self, batch: torch.Tensor, classes: bool) -> torch.Tensor:
        """``(B, C, H, W)`` probabilities at the network size: infection (C = 1), or infection, GGO and
        consolidation (C = 3); with flip TTA the average over the slice and its mirror image."""
        if classes:
            run = self.class_model
        else:
            def run(x: torch.Tensor) -> torch.Tensor:
                return torch.sigmoid(self.network(x).float() / self.temperature)

        with autocast_context(self.device, self.amp):
            prob = run(batch).float()
            if self.flip_tta:
                prob = 0.5 * (prob + run(batch.flip(-1)).float().flip(-1))
        return prob

    @torch.no_grad()
    def _predict(self, images: Sequence[np.ndarray], classes: bool) -> list[np.ndarray]:
        if not images:
            return []
        prob = self._probabilities(self._batch(images), classes)
        out = []
        for p, im in zip(prob, images):
            p = F.interpolate(p[None], size=tuple(np.shape(im)), mode="bilinear", align_corners=False)
            out.append(p[0].clamp(0, 1).cpu().numpy())
        return out

    def predict_unit(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probability maps for slices already scaled to [0, 1].

        Args:
            images: 2D float arrays ``(H_i, W_i)`` in [0, 1] (sizes may differ).

        Returns:
            float32 probability maps with the same sizes.
        """
        return [p[0] for p in self._predict(images, classes=False)]

    def predict_classes_unit(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Infection, GGO and consolidation probabilities ``(3, H_i, W_i)`` for slices scaled to [0, 1]; GGO plus
        consolidation equals infection (:class:`~infnet_monai.networks.nets.InfNetClasses`). Call
        :meth:`with_classes` first."""
        if getattr(self, "class_model", None) is None:
            raise RuntimeError("no GGO / consolidation head loaded; call with_classes() first.")
        return self._predict(images, classes=True)

    def predict_uint8(self, images: Sequence[np.ndarray], classes: bool = False) -> list[np.ndarray]:
        """Probability maps (0-255, uint8) for 8-bit slices ``(H_i, W_i)``: ``(H_i, W_i)`` each, or
        ``(3, H_i, W_i)`` (infection, GGO, consolidation) with ``classes=True``."""
        unit = [np.asarray(im, dtype=np.float32) / 255.0 for im in images]
        maps = self.predict_classes_unit(unit) if classes else self.predict_unit(unit)
        return [np.round(p * 255.0).astype(np.uint8) for p in maps]


@dataclass
class SliceFolderReport:
    """Outcome of :func:`predict_slice_folder`: written files and failures (path, message)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def read_slice(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "I;16", "I", "F"):
                im = im.convert("L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"'{path}' is not a readable image ({e}); remove it or replace it with a valid PNG/JPG.") from e
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"'{path}' has shape {arr.shape}; expected a 2D grey slice of at least 2x2 pixels.")
    if arr.dtype != np.uint8:
        raise ValueError(
            f"'{path}' is a {arr.dtype} image; predict-slices expects 8-bit lung-windowed slices "
            "(use `infnet-covid segment` for CT volumes in Hounsfield units)."
        )
    return arr


def predict_slice_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 8,
    flip_tta: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
    temperature: float | None = None,
    classes: bool = False,
    class_model_path: str | os.PathLike | None = None,
) -> SliceFolderReport:
    """Write ``output_dir/<stem>.png`` (8-bit probability, input height and width) for each slice in ``input_dir``.

    With ``classes=True`` also ``output_dir/ggo/<stem>.png`` and ``output_dir/consolidation/<stem>.png``, the GGO and
    consolidation probabilities of the head ``class_model_path`` (default: the shipped one); they add up to the
    infection map (up to 8-bit rounding).

    Inputs are the ``.jpg``, ``.jpeg`` and ``.png`` files directly in ``input_dir`` (sorted). A file that cannot be
    read is reported in the result and logged; the others are still processed. Outputs are written atomically.
    ``temperature`` overrides the checkpoint's logit temperature (see :class:`SlicePredictor`).

    Raises:
        NotADirectoryError: ``input_dir`` is not a folder.
        ValueError: ``output_dir`` is ``input_dir`` itself (inputs would be overwritten).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise NotADirectoryError(f"input folder '{input_dir}' does not exist or is not a folder.")
    if output_dir.resolve() == input_dir.resolve():
        raise ValueError(f"output folder '{output_dir}' is the input folder; choose another so no input is overwritten.")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems: dict[str, Path] = {}
    report = SliceFolderReport()
    for p in files:
        if p.stem in stems:
            report.failed.append((p, f"'{p}' has the same name stem as '{stems[p.stem]}'; both would write {p.stem}.png."))
        else:
            stems[p.stem] = p
    files = [p for p in files if stems.get(p.stem) == p]
    if not files:
        logger.warning("no .jpg/.jpeg/.png images in '%s'", input_dir)
        return report
    output_dir.mkdir(parents=True, exist_ok=True)
    predictor = SlicePredictor(model_path, device=device, flip_tta=flip_tta, temperature=temperature)
    if classes:
        predictor.with_classes(class_model_path)
        for name in CLASS_NAMES[1:]:
            (output_dir / name).mkdir(exist_ok=True)
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    for chunk in progress(batches) if progress is not None else batches:
        images, paths = [], []
        for p in chunk:
            try:
                images.append(read_slice(p))
                paths.append(p)
            except ValueError as e:
                logger.error("%s", e)
                report.failed.append((p, str(e)))
        for p, prob in zip(paths, predictor.predict_uint8(images, classes=classes)):
            out = output_dir / f"{p.stem}.png"
            if classes:
                for name, class_prob in zip(CLASS_NAMES[1:], prob[1:]):
                    write_png_atomic(class_prob, output_dir / name / f"{p.stem}.png")
                prob = prob[0]
            write_png_atomic(prob, out)
            report.written.append(out)
    return report
