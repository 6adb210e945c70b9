"""2D inference on CT slice images in memory: :class:`SlicePredictor` gives infection (and GGO / consolidation)
probability maps at each slice's own size.

The folder tool of ``predict-slices`` moved to :mod:`infnet_monai.apps.slices`, reading and writing slices to
:mod:`infnet_monai.io.slices`, :func:`resolve_temperature` to :mod:`infnet_monai.io.checkpoint`; their old names here
still work and warn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from infnet_monai.inferers.probability import ProbabilityMaps
from infnet_monai.io.checkpoint import ModelSpec, load_class_model, load_model, resolve_temperature
from infnet_monai.networks.nets.classes import class_maps
from infnet_monai.transforms.slices import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD, slice_inference_transforms
from infnet_monai.utils.deprecation import moved_names
from infnet_monai.utils.device import autocast_context, resolve_device
from infnet_monai.utils.model_path import default_model_path
from infnet_monai.utils.validation import check_spatial_size

__all__ = ["SlicePredictor"]

MOVED_NAMES = {
    "SliceFolderReport": "infnet_monai.apps.slices.SliceFolderReport",
    "predict_slice_folder": "infnet_monai.apps.slices.predict_slice_folder",
    "read_slice": "infnet_monai.io.slices.read_slice",
    "write_png_atomic": "infnet_monai.io.slices.write_png_atomic",
    "resolve_temperature": "infnet_monai.io.checkpoint.resolve_temperature",
}
"""Names that this module (and :mod:`infnet_monai.inferers`) held until 0.7.0 -> where they are now."""

__getattr__ = moved_names(__name__, MOVED_NAMES)


class SlicePredictor:
    """Infection probability maps for 2D slices with a trained Inf-Net.

    A slice (any size, 8-bit grey, as in COVID-SemiSeg) is scaled to [0, 1], resized to the network size, standardised
    as in training (:func:`~infnet_monai.transforms.slice_inference_transforms` with the checkpoint's
    :class:`~infnet_monai.io.ModelSpec`), and turned into probabilities by
    :class:`~infnet_monai.inferers.ProbabilityMaps` (``sigmoid(logit / temperature)``, optionally averaged with the
    left-right mirrored slice), which are resized back to the slice's size. The temperature comes from the
    checkpoint's calibration (:func:`infnet_monai.io.save_calibrated_model`) unless given; it never moves the 0.5
    boundary.

    Args:
        model_path: checkpoint written by :func:`infnet_monai.io.save_model`; the default is the shipped model.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        flip_tta: average the prediction with that of the left-right mirrored slice.
        amp: mixed precision on CUDA (ignored on CPU).
        temperature: logit temperature; ``None`` uses the checkpoint's calibration (1 when it has none).

    Attributes:
        spec: the checkpoint's :class:`~infnet_monai.io.ModelSpec` (``None`` for :meth:`from_network`).
        maps: the :class:`~infnet_monai.inferers.ProbabilityMaps` that runs the network; ``temperature`` and
            ``flip_tta`` are its.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "auto",
        flip_tta: bool = False,
        amp: bool = True,
        temperature: float | None = None,
    ) -> None:
        device = resolve_device(device)
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        network, self.info = load_model(self.model_path, device)
        self.spec = ModelSpec.from_checkpoint(self.info)
        self._setup(network, device, self.spec, flip_tta, amp, resolve_temperature(temperature, self.info))

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
        """A predictor around a network in memory (e.g. during training); the caller sets its eval mode. The
        standardisation is the training constants :data:`~infnet_monai.transforms.SLICE_MEAN` and
        :data:`~infnet_monai.transforms.SLICE_STD`."""
        self = cls.__new__(cls)
        self.model_path, self.info, self.spec = None, {}, None
        spec = ModelSpec(in_channels=int(in_channels), mean=SLICE_MEAN, std=SLICE_STD)
        self._setup(network, torch.device(device), spec, flip_tta, amp, temperature)
        self.spatial_size = check_spatial_size(spatial_size)  # may be non-square, unlike a checkpoint's
        return self

    def _setup(self, network, device: torch.device, spec: ModelSpec, flip_tta, amp: bool, temperature: float) -> None:
        self.device = device
        self.spatial_size = check_spatial_size(spec.spatial_size)
        self.in_channels, self.mean, self.std = spec.in_channels, spec.mean, spec.std
        self.maps = ProbabilityMaps(network, temperature, flip_tta=flip_tta)
        self.amp = amp
        self.class_model: torch.nn.Module | None = None
        self.class_info: dict = {}

    @property
    def network(self) -> torch.nn.Module:
        return self.maps.network

    @property
    def temperature(self) -> float:
        """The logit temperature (settable; a value that is not a finite number > 0 raises ``ValueError``)."""
        return self.maps.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.maps.temperature = value

    @property
    def flip_tta(self) -> bool:
        return self.maps.flip_tta

    def with_classes(self, class_model_path: str | os.PathLike | None = None) -> SlicePredictor:
        """Also predict GGO and consolidation with the head of ``class_model_path`` (default: the shipped one),
        see :meth:`predict_classes_unit`. Returns ``self``."""
        self.class_model, self.class_info = load_class_model(self.network, self.temperature, class_model_path, self.device)
        return self

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The slices through :func:`~infnet_monai.transforms.slice_inference_transforms` (the checkpoint's size,
        channels, mean and std), stacked on the device."""
        chain = slice_inference_transforms(self.spatial_size, self.in_channels, self.mean, self.std)
        prepared = [torch.as_tensor(chain({"image": np.asarray(im, dtype=np.float32)})["image"]) for im in images]
        return torch.stack([p.as_tensor() if hasattr(p, "as_tensor") else p for p in prepared]).float().to(self.device)

    def _probabilities(self, batch: torch.Tensor, classes: bool) -> torch.Tensor:
        """``(B, C, H, W)`` probabilities at the network size: infection (C = 1), or infection, GGO and
        consolidation (C = 3, from the infection and the head's consolidation share)."""
        maps = self.maps
        if classes:
            maps = ProbabilityMaps(self.network, self.temperature, self.class_model, self.flip_tta, self.maps.flip_dim)
        with autocast_context(self.device, self.amp):
            prob = maps(batch).float()
        if classes:
            prob = torch.cat([prob[:, :1], class_maps(prob[:, :1], prob[:, 1:2])], dim=1)
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


