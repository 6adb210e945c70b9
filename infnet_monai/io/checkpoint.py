"""Self-describing model checkpoints: weights, network configuration and preprocessing in one file.

A checkpoint written by :func:`save_model` is a plain dictionary of tensors, numbers and strings, so it loads with
``torch.load(..., weights_only=True)``: nothing in it can execute code. Every file the project reads back goes
through :func:`safe_torch_load`, which refuses any file that needs full unpickling. :class:`ModelSpec` is what a
checkpoint says about its network's inputs and outputs (size, channels, standardisation, temperature), parsed once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from infnet_monai import __version__
from infnet_monai.defaults import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD
from infnet_monai.networks.nets import InfNet
from infnet_monai.networks.nets.classes import HEAD_OUTPUTS
from infnet_monai.utils.files import atomic_write
from infnet_monai.utils.validation import check_spatial_size, check_temperature

__all__ = [
    "CHECKPOINT_FORMAT",
    "ENCODER_FORMAT",
    "CheckpointError",
    "ModelSpec",
    "safe_torch_load",
    "bundle_model_spec",
    "resolve_temperature",
    "save_encoder",
    "load_pretrained_encoder",
    "save_model",
    "save_calibrated_model",
    "model_temperature",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "load_class_model",
    "atomic_torch_save",
    "network_state_dict",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "infnet-monai-model/1"
ENCODER_FORMAT = "infnet-monai-encoder/1"


def _architectures() -> dict[str, type[nn.Module]]:
    """Networks a checkpoint may name (``"architecture"``); nothing outside this list is ever built from a file."""
    from monai.networks.nets import UNet

    return {"InfNet": InfNet, "UNet": UNet}


class CheckpointError(RuntimeError):
    """A model checkpoint is missing, unsafe or not an infnet-monai model."""


def safe_torch_load(path: str | os.PathLike, what: str = "model checkpoint", hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors, numbers, strings and containers only,
    so a file cannot run code while it loads.

    Args:
        path: the file (its existence is the caller's to check, with its own advice).
        what: what the file is, for the message (``"model checkpoint"``, ``"propagation state"``...).
        hint: what to do about an unreadable file, appended to the message.

    Raises:
        CheckpointError: the file carries pickled code, or is corrupt, truncated or not a torch file; the message
            names the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises several types for unsafe or corrupt files
        raise CheckpointError(
            f"refusing to load {what} '{path}': it is not a plain weights file that loads with weights_only=True "
            f"(it may carry pickled code, or be corrupt or truncated).{' ' + hint if hint else ''} "
            f"Details: {_load_failure(e)}"
        ) from None  # torch's own text advises weights_only=False, which is exactly what must not be done


def _load_failure(e: Exception) -> str:
    """The reason of a failed ``torch.load`` in one line, without torch's advice to load unsafely."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
        text = text.split(" Please use", 1)[0]  # the advice to allow-list the global
    return " ".join(text.split()[:40]) or type(e).__name__


def bundle_model_spec(path: str | os.PathLike) -> "ModelSpec":
    """:meth:`ModelSpec.from_checkpoint` for the bundle's configs: a refused checkpoint ends the run with the same
    one-line message as the command line (``SystemExit``, which MONAI's config evaluation does not wrap), not a
    traceback."""
    try:
        return ModelSpec.from_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the destination folder, then rename it into place."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def network_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of ``network``, unwrapped from ``DataParallel``/``DistributedDataParallel``/``torch.compile``."""
    module = getattr(network, "_orig_mod", network)
    module = getattr(module, "module", module)
    return module.state_dict()


def save_model(
    path: str | os.PathLike,
    network: nn.Module,
    network_kwargs: dict[str, Any],
    preprocessing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    fp16: bool = True,
    calibration: dict[str, Any] | None = None,
    architecture: str = "InfNet",
) -> Path:
    """Write a self-describing checkpoint atomically.

    Args:
        path: destination file.
        network: the trained :class:`~infnet_monai.networks.nets.InfNet`.
        network_kwargs: the keyword arguments that rebuild it (``InfNet(**network_kwargs)``); tuples are stored as
            lists.
        preprocessing: how inputs were prepared (e.g. ``{"spatial_size": 352, "in_channels": 1}``).
        metadata: free-form provenance (command, seed, epochs, metrics); numbers and strings only.
        fp16: store floating-point weights in half precision (halves the file; they are cast back on load).
        calibration: how logits become probabilities at inference, e.g. ``{"temperature": 0.25}`` for
            ``sigmoid(logit / 0.25)`` (see :func:`save_calibrated_model`); omitted means temperature 1.
        architecture: the network class, one of ``InfNet`` and ``UNet`` (MONAI's; the GGO / consolidation head).

    Returns:
        the written path.
    """
    if architecture not in _architectures():
        raise CheckpointError(f"unknown architecture {architecture!r}; expected one of {sorted(_architectures())}.")
    state = {}
    for k, v in network_state_dict(network).items():
        v = v.detach().cpu()
        state[k] = v.half() if fp16 and v.is_floating_point() else v.clone()
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "infnet_monai_version": __version__,
        "architecture": architecture,
        "network": {k: list(v) if isinstance(v, tuple) else v for k, v in network_kwargs.items()},
        "preprocessing": dict(preprocessing or {}),
        "metadata": dict(metadata or {}),
        "state_dict": state,
    }
    if calibration:
        checkpoint["calibration"] = _checked_calibration(calibration, path)
    return atomic_torch_save(checkpoint, path)


def _checked_calibration(calibration: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    calibration = dict(calibration)
    try:
        calibration["temperature"] = check_temperature(calibration.get("temperature", 1.0))
    except ValueError as e:
        raise CheckpointError(f"'{path}': calibration {e}") from e
    return calibration


def model_temperature(info: dict[str, Any]) -> float:
    """The logit temperature recorded in a checkpoint's ``calibration`` (1.0 when there is none)."""
    return float(info.get("calibration", {}).get("temperature", 1.0))


def resolve_temperature(temperature: float | None, info: Mapping[str, Any] | None = None) -> float:
    """The logit temperature to use: ``temperature`` when given, else the checkpoint's calibration (default 1).

    Raises:
        ValueError: the temperature is not a finite number > 0.
    """
    return check_temperature(model_temperature(info or {}) if temperature is None else temperature)


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint says about its network, parsed once (:meth:`from_checkpoint`); everything that prepares a
    network's inputs or reads its outputs takes these values from here.

    Attributes:
        network: the network constructor's keyword arguments as stored (``InfNet(**network)``).
        spatial_size: in-plane size the network was trained at; slices are resized to a square of this many pixels.
        in_channels: the network's input channels (a grey slice is repeated to fill them).
        mean: subtracted from slices scaled to [0, 1] (the checkpoint's ``slice_mean``).
        std: the standardised slice is ``(slice - mean) / std`` (the checkpoint's ``slice_std``).
        temperature: logit temperature of the calibration, probability ``sigmoid(logit / temperature)``; 1.0 when
            the checkpoint is not calibrated.
        head: ``"infection"`` for a network whose output is the infection logit, ``"classes"`` for a GGO /
            consolidation head (its ``preprocessing`` names an ``output`` in
            :data:`~infnet_monai.networks.nets.classes.HEAD_OUTPUTS`); ``None`` for a spec not read from a checkpoint.

    The defaults are those of a checkpoint that records nothing: :data:`~infnet_monai.defaults.DEFAULT_SPATIAL_SIZE`,
    one channel, :data:`~infnet_monai.defaults.SLICE_MEAN`, :data:`~infnet_monai.defaults.SLICE_STD`, temperature 1.
    """

    network: dict = field(default_factory=dict)
    spatial_size: int = DEFAULT_SPATIAL_SIZE
    in_channels: int = 1
    mean: float = SLICE_MEAN
    std: float = SLICE_STD
    temperature: float = 1.0
    head: str | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike | Mapping[str, Any]) -> ModelSpec:
        """The spec of a checkpoint file, or of its already loaded dictionary (e.g. the ``info`` that
        :func:`load_model` returns; the state dict may be absent).

        Raises:
            CheckpointError: the file is not a model checkpoint, or what it records is unusable (a non-square or
                non-positive ``spatial_size``, ``slice_std`` <= 0, a temperature that is not a finite number > 0).
        """
        source = "the checkpoint" if isinstance(checkpoint, Mapping) else f"'{checkpoint}'"
        info = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
        prep = info.get("preprocessing") or {}
        network = dict(info.get("network") or {})
        try:
            height, width = check_spatial_size(prep.get("spatial_size", DEFAULT_SPATIAL_SIZE))
            if height != width:
                raise ValueError(f"spatial_size must be square, got {prep['spatial_size']!r}.")
            std = float(prep.get("slice_std", SLICE_STD))
            if not std > 0:
                raise ValueError(f"slice_std must be > 0, got {std!r}.")
            return cls(
                network=network,
                spatial_size=height,
                in_channels=int(prep.get("in_channels", network.get("in_channels", 1))),
                mean=float(prep.get("slice_mean", SLICE_MEAN)),
                std=std,
                temperature=resolve_temperature(None, info),
                head="classes" if prep.get("output") in HEAD_OUTPUTS else "infection",
            )
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source} records unusable preprocessing or calibration: {e}") from e


def save_calibrated_model(src: str | os.PathLike, dst: str | os.PathLike, calibration: dict[str, Any]) -> Path:
    """Copy the model checkpoint ``src`` to ``dst`` with ``calibration`` recorded; the weights are unchanged.

    The inferers turn logits into probabilities as ``sigmoid(logit / temperature)``. A temperature below 1 makes the
    probability map more decisive without moving the 0.5 boundary, so masks thresholded at 0.5 do not change.

    Raises:
        CheckpointError: ``src`` is not a model checkpoint, ``dst`` is ``src`` (inputs are never overwritten), or the
            temperature is not a finite number > 0.
    """
    if Path(dst).resolve() == Path(src).resolve():
        raise CheckpointError(f"'{dst}' is the input checkpoint; write the calibrated model to another file.")
    checkpoint = load_checkpoint(src)
    checkpoint["calibration"] = _checked_calibration(calibration, src)
    return atomic_torch_save(checkpoint, dst)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dictionary safely (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, unreadable, carries pickled code, or is not an infnet-monai model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model checkpoint '{path}' does not exist; pass --model with a valid file.")
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"'{path}' is not an infnet-monai model checkpoint (expected a dictionary with "
            f"format='{CHECKPOINT_FORMAT}'); export one with infnet_monai.io.save_model."
        )
    return checkpoint


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", eval_mode: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint and load its weights (in float32).

    The checkpoint's ``architecture`` names the class (``InfNet`` when absent, as in files written before it existed).

    Returns:
        ``(network, checkpoint)``: the network on ``device`` (in eval mode unless ``eval_mode=False``) and the
        checkpoint dictionary without its state dict (``network``, ``preprocessing``, ``metadata``...).
    """
    checkpoint = load_checkpoint(path)
    kwargs = dict(checkpoint.get("network", {}))
    architecture = checkpoint.get("architecture", "InfNet")
    if architecture not in _architectures():
        raise CheckpointError(f"'{path}' names an unknown architecture {architecture!r}; expected one of {sorted(_architectures())}.")
    try:
        network = _architectures()[architecture](**kwargs)
        state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
        network.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"model checkpoint '{path}' does not match its network configuration: {e}") from e
    network.to(device)
    if eval_mode:
        network.eval()
    info = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    logger.debug("loaded %s (network %s)", path, kwargs)
    return network, info


def load_weights(network: nn.Module, path: str | os.PathLike | None = None) -> nn.Module:
    """Load the weights of checkpoint ``path`` (default: the shipped model) into an already built ``network``, the
    bundle's ``network_def`` (in float32); returns ``network`` in eval mode.

    Raises:
        CheckpointError: the file is not a model checkpoint, or its weights do not fit ``network`` (the message gives
            the checkpoint's own network arguments, which ``network_def`` must match).
    """
    from infnet_monai.utils.model_path import default_model_path

    path = Path(path) if path else default_model_path()
    checkpoint = load_checkpoint(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"the weights of '{path}' do not fit the network built from network_def; the checkpoint's network "
            f"arguments are {checkpoint.get('network', {})} ({type(e).__name__}: {str(e)[:300]})"
        ) from e
    return network.eval()


def load_class_model(
    segmenter: nn.Module,
    temperature: float = 1.0,
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The binary ``segmenter`` with the GGO / consolidation head of checkpoint ``path`` (default: the shipped one).

    Returns:
        ``(model, info)``: an :class:`~infnet_monai.networks.nets.InfNetClasses` in eval mode on ``device`` and the
        head's checkpoint dictionary without its weights.

    Raises:
        CheckpointError: the file is not a head written by ``configs/train_classes.json`` (an override of
            ``configs/train.json``).
    """
    from infnet_monai.networks.nets.classes import InfNetClasses
    from infnet_monai.utils.model_path import default_class_model_path

    path = Path(path) if path else default_class_model_path()
    head, info = load_model(path, device)
    spec = ModelSpec.from_checkpoint(info)
    if spec.head != "classes":
        raise CheckpointError(
            f"'{path}' is not a GGO / consolidation head (its preprocessing has no output in {HEAD_OUTPUTS}); "
            "train one with configs/train.json overridden by configs/train_classes.json."
        )
    model = InfNetClasses(
        segmenter, head, temperature, spec.spatial_size, output=info["preprocessing"]["output"],
        head_temperature=spec.temperature,
    )
    return model.to(device).eval(), info


def save_encoder(
    path: str | os.PathLike,
    encoder: nn.Module,
    network_kwargs: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a pretrained encoder (the ``backbone`` of an :class:`InfNet`) as a weights-only checkpoint, atomically.

    Args:
        path: destination file.
        encoder: the pretrained backbone.
        network_kwargs: the ``InfNet`` keyword arguments whose backbone it is (checked again at load time).
        metadata: provenance (command, epochs, loss); numbers and strings only.
    """
    state = {k: v.detach().cpu().clone() for k, v in network_state_dict(encoder).items()}
    checkpoint = {
        "format": ENCODER_FORMAT,
        "infnet_monai_version": __version__,
        "network": {k: list(v) if isinstance(v, tuple) else v for k, v in network_kwargs.items()},
        "metadata": dict(metadata or {}),
        "state_dict": state,
    }
    return atomic_torch_save(checkpoint, path)


def load_pretrained_encoder(network: InfNet, path: str | os.PathLike | None) -> InfNet:
    """Initialise ``network.backbone`` from an encoder checkpoint written by :func:`save_encoder`.

    An empty ``path`` returns the network unchanged, so configs can keep the key and leave it blank. Only the
    backbone is loaded; the decoder keeps its fresh initialisation.

    Raises:
        CheckpointError: the file is missing, unsafe, not an encoder checkpoint, or its backbone does not match.
    """
    if not path:
        return network
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained encoder '{path}' does not exist; run configs/pretrain.json first.")
    checkpoint = safe_torch_load(path, "pretrained encoder", "Run configs/pretrain.json again to write it.")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"'{path}' is not an infnet-monai encoder checkpoint (format='{ENCODER_FORMAT}').")
    backbone = getattr(network, "backbone", None)
    if backbone is None:
        raise CheckpointError(f"cannot load encoder '{path}': the network has no 'backbone'.")
    try:
        backbone.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"pretrained encoder '{path}' does not fit this network's backbone (it was made for "
            f"{checkpoint.get('network')}): {e}"
        ) from e
    logger.info("backbone initialised from pretrained encoder %s", path)
    return network
