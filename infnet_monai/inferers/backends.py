"""Where the network function runs: PyTorch, or OpenVINO on the CPU.

The network function (:class:`~infnet_monai.inferers.ProbabilityMaps`: the Inf-Net, the temperature, the GGO /
consolidation head) is the same mathematics on every backend; only the engine that evaluates it changes:

- ``"torch"``: the module itself, in ``torch.inference_mode`` with channels-last tensors (the faster convolution
  layout of CPU kernels). On CUDA the predictor's mixed precision applies as before.
- ``"openvino"``: the module converted once to an OpenVINO model (``openvino.convert_model`` from PyTorch; nothing is
  downloaded) and compiled for the CPU at float32 precision. The converted model is cached on disk under a key
  derived from the weights and every setting that enters the graph, so a checkpoint is converted once per machine.
  Before it is used, each compiled model is checked against the torch module on a fixed probe batch: a largest
  probability difference above :data:`EXACT_TOLERANCE` makes ``"auto"`` fall back to torch (and an explicit
  ``"openvino"`` fail), so a backend is never used that changes the result.
- ``"auto"`` (the default): ``"openvino"`` on the CPU when OpenVINO is installed (it is a dependency of the package,
  so the default install has it), else ``"torch"``; ``"torch"`` on CUDA.

``precision="bf16"`` (opt-in) runs the network in bfloat16: OpenVINO's ``INFERENCE_PRECISION_HINT``, or torch's CPU
autocast. It is faster only on CPUs with bfloat16 matrix units (AMX); probabilities move by up to a few tenths at
single voxels. A CPU without bfloat16 support falls back to float32 with a log line.

Nothing leaves the machine: OpenVINO's model conversion reports each conversion to Google Analytics (its
``openvino_telemetry`` package, on by default unless the user opted out, from a process spawned per event that also
keeps two pipes open for the life of the process) and keeps a client ID under ``~/intel``. OpenVINO is imported here
with that package hidden, so its converter falls back to its own no-op stub (:func:`_openvino`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from infnet_monai.defaults import BACKENDS, PRECISIONS
from infnet_monai.inferers.probability import InfectionStage, ShareStage

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "EXACT_TOLERANCE",
    "OpenVINOMaps",
    "StagedMaps",
    "TorchMaps",
    "backend_cache_dir",
    "check_backend",
    "network_backend",
    "network_fingerprint",
]

EXACT_TOLERANCE: float = 1e-3
"""Largest probability difference from the torch float32 module on the probe batch for a float32 backend to be used."""

CACHE_ENV = "INFNET_CACHE_DIR"
"""Environment variable naming the folder of converted models (default ``$XDG_CACHE_HOME/infnet-monai`` or
``~/.cache/infnet-monai``)."""

CACHE_ENTRIES = 8
"""Converted models kept in the cache (about 50 MB each for the shipped model); the least recently used go first."""

_FORMAT = "infnet-openvino-1"  # part of the cache key: a change of the conversion invalidates old entries


def check_backend(backend: str, precision: str = "fp32") -> tuple[str, str]:
    """``(backend, precision)`` in canonical form.

    Raises:
        ValueError: an unknown name.
    """
    name, prec = str(backend).strip().lower(), str(precision).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if prec not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    return name, prec


def backend_cache_dir() -> Path:
    """The folder of converted models: ``$INFNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/infnet-monai``, else
    ``~/.cache/infnet-monai``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "infnet-monai"


_PLAIN = (bool, int, float, str, type(None))


def _plain(value: object) -> bool:
    return isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(_plain(v) for v in value))


def network_fingerprint(module: nn.Module, *settings: object) -> str:
    """SHA-256 (hex) of a module's parameters and buffers (names, dtypes, shapes, values), of the plain attributes of
    it and its submodules (numbers, strings, flags and tuples of them: a temperature, a flip flag, a head size) and
    of ``settings``: the cache key of a converted model, equal exactly when the same network would be converted."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for path, sub in module.named_modules():
        plain = sorted((k, v) for k, v in vars(sub).items() if _plain(v) and k != "training")  # always converted in eval mode
        digest.update(f"|{path}:{type(sub).__qualname__}:{plain!r}".encode())
    for s in settings:
        digest.update(f"|{s!r}".encode())
    return digest.hexdigest()


def _probe(example_shape: Sequence[int]) -> torch.Tensor:
    """A fixed batch for the agreement check: three slices of smooth random structure on the scale of standardised CT
    slices (values about -3 to 3). Not a constant slice: on one, instance normalisation divides rounding noise by its
    epsilon and no two engines agree (nor does a lung crop ever look like that)."""
    gen = torch.Generator().manual_seed(0)
    _, channels, height, width = (int(s) for s in example_shape)
    coarse = torch.randn((3, channels, max(2, height // 16), max(2, width // 16)), generator=gen)
    fine = 0.25 * torch.randn((3, channels, height, width), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth * 1.5 + fine


class TorchMaps:
    """The network function run by PyTorch: ``inference_mode``, channels-last tensors on the CPU, optionally bfloat16
    autocast on the CPU. Calling it maps ``(B, C, H, W)`` to ``(B, K, H, W)`` float32 probabilities.

    Args:
        maps: the network function (its weights are laid out channels-last in place on the CPU; values unchanged).
        device: where ``maps`` lives.
        precision: ``"fp32"`` or ``"bf16"`` (CPU autocast; CUDA keeps the predictor's own mixed precision).
    """

    backend = "torch"

    def __init__(self, maps: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32") -> None:
        self.maps = maps.eval()
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.maps.to(memory_format=torch.channels_last)

    @property
    def classes(self) -> nn.Module | None:
        """The GGO / consolidation model, ``None`` without it (the output then has one channel)."""
        return getattr(self.maps, "classes", None)

    def _autocast(self):
        if self.precision == "bf16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            y = self.maps(x).float()
        return y.contiguous().clone()  # a normal tensor: inference tensors refuse in-place use outside the mode


class OpenVINOMaps:
    """The network function compiled by OpenVINO for the CPU. Calling it maps ``(B, C, H, W)`` float32 slices (any
    batch size) to ``(B, K, H, W)`` float32 probabilities on the CPU.

    Args:
        compiled: an ``openvino.CompiledModel`` of ``maps``, converted at ``example_shape``.
        maps: the torch network function it was converted from; it runs slices of another channel count or in-plane
            size than ``example_shape`` (the pipeline never sends such slices).
        example_shape: ``(1, C, H, W)`` the model was converted at.
        precision: the precision it was compiled at.
    """

    backend = "openvino"

    def __init__(self, compiled, maps: nn.Module, example_shape: Sequence[int], precision: str = "fp32") -> None:
        self.compiled = compiled
        self.maps = maps
        self.input_shape = tuple(int(s) for s in example_shape[1:])
        self.precision = precision
        self._request = compiled.create_infer_request()
        self._torch: TorchMaps | None = None

    @property
    def classes(self) -> nn.Module | None:
        """The GGO / consolidation model inside the graph, ``None`` without it (the output then has one channel)."""
        return getattr(self.maps, "classes", None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            if self._torch is None:
                self._torch = TorchMaps(self.maps, "cpu", self.precision)
            return self._torch(x)
        data = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self._request.infer({0: data})
        return torch.from_numpy(np.array(out[0], dtype=np.float32, copy=True))


TELEMETRY_MODULE = "openvino_telemetry"
"""OpenVINO's usage telemetry, hidden from the import system before OpenVINO is imported (see the module docstring)."""


def _openvino():
    """The ``openvino`` package, or None where it is not installed. On its first import here its telemetry package is
    made unimportable (a ``None`` entry in ``sys.modules``, which Python answers with ``ImportError``), so that
    ``openvino.convert_model`` uses its no-op stub; where the process imported OpenVINO before, its telemetry is left
    as the process has it and a debug line says so."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault(TELEMETRY_MODULE, None)
    elif sys.modules.get(TELEMETRY_MODULE) is not None:
        logger.debug("OpenVINO was imported before infnet_monai: its usage telemetry is as that import left it")
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def _torch_reference(maps: nn.Module, probe: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return maps(probe).float().numpy()


def _traced(maps: nn.Module, example: torch.Tensor):
    """What ``openvino.convert_model`` reads: OpenVINO's own TorchScript decoder of ``maps`` traced on ``example``,
    without ``torch.jit.trace``'s check (a second run of the module and of its trace, compared): the same OpenVINO
    model, about 3 s less for the shipped models (docs/performance.md, "0.12.0 against 0.11.0"). The probe comparison
    of every load (:data:`EXACT_TOLERANCE`) checks the result instead. Where the decoder is not importable, ``maps``
    itself (OpenVINO traces it with the check)."""
    try:
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
    except ImportError:  # pragma: no cover - an OpenVINO without its PyTorch frontend cannot convert at all
        return maps
    return TorchScriptPythonDecoder(maps, example_input=example, trace_kwargs={"check_trace": False})


def _converted(ov, maps: nn.Module, example_shape: Sequence[int], key: str, use_cache: bool):
    """``(OpenVINO model of maps, torch's probabilities on the probe batch, whether both came from the cache)``:
    read from the cache entry ``key``, or converted and computed (and stored there when the cache is writable)."""
    folder = backend_cache_dir() / "openvino" / key
    files = [folder / name for name in ("model.xml", "model.bin", "probe.npy")]
    if use_cache and all(f.is_file() for f in files):
        try:
            model, reference = ov.Core().read_model(str(files[0])), np.load(files[2])
            with contextlib.suppress(OSError):
                os.utime(folder)  # recently used: kept by the pruning
            return model, reference, True
        except Exception as e:  # a damaged entry: convert again and replace it
            logger.warning("the cached OpenVINO model %s could not be read (%s); converting the network again", folder, e)
    _, channels, height, width = (int(s) for s in example_shape)
    with warnings.catch_warnings():  # the tracer's remarks on shape checks, fixed by the constant slice size
        warnings.simplefilter("ignore")
        with torch.no_grad():
            model = ov.convert_model(
                _traced(maps, torch.zeros((1, channels, height, width))),
                input=[ov.PartialShape([-1, channels, height, width])],
            )
    reference = _torch_reference(maps, _probe(example_shape))
    if use_cache:
        _store(ov, model, reference, folder)
    return model, reference, False


def _store(ov, model, reference: np.ndarray, folder: Path) -> None:
    """Save ``model`` and the probe's ``reference`` into ``folder`` atomically (a reader sees a whole entry or none);
    a cache that cannot be written is logged and skipped: the model converted in memory is used all the same."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)  # the weights stay float32
            np.save(tmp / "probe.npy", reference)
            shutil.rmtree(folder, ignore_errors=True)  # a damaged entry
            os.replace(tmp, folder)
            _prune(folder.parent, keep=folder)
        except OSError:
            if not (folder / "probe.npy").is_file():  # not another process's complete entry
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        logger.warning("could not store the converted model in %s (%s); it is converted again next time", folder, e)


def _prune(root: Path, keep: Path) -> None:
    """Remove the least recently used entries of ``root`` beyond :data:`CACHE_ENTRIES` (never ``keep``)."""
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep]
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[max(0, CACHE_ENTRIES - 1):]:
        shutil.rmtree(old, ignore_errors=True)


def _cpu_has_bf16(ov=None) -> bool:
    if ov is not None:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check()) or bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _openvino_maps(ov, maps: nn.Module, example_shape, precision: str, use_cache: bool) -> tuple[OpenVINOMaps, float]:
    """``(the compiled network function, its largest probability difference from torch on the probe batch)``."""
    key = network_fingerprint(maps, _FORMAT, tuple(int(s) for s in example_shape[1:]), ov.__version__, torch.__version__)
    model, reference, cached = _converted(ov, maps, example_shape, key, use_cache)
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",  # OpenVINO's own default may be bf16
        "INFERENCE_NUM_THREADS": int(torch.get_num_threads()),  # the threads torch was given (OMP_NUM_THREADS)
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(model, "CPU", config)
    fast = OpenVINOMaps(compiled, maps, example_shape, precision)
    difference = float(np.abs(fast(_probe(example_shape)).numpy() - reference).max())
    logger.debug(
        "OpenVINO model %s (%s, %s): largest difference from torch on the probe %.2g",
        key[:12], "from the cache" if cached else "converted", precision, difference,
    )
    return fast, difference


def network_backend(
    maps: nn.Module,
    example_shape: Sequence[int],
    device: torch.device | str = "cpu",
    backend: str = "auto",
    precision: str = "fp32",
    use_cache: bool = True,
):
    """The network function ``maps`` on the chosen backend (see the module docstring).

    :class:`~infnet_monai.inferers.ProbabilityMaps` with a class head (and without the flip augmentation) come back
    as :class:`StagedMaps`: the infection and the head are two networks on the backend, so that an inferer can run the
    head only where its share is used (:class:`~infnet_monai.inferers.LungCropSliceInferer`).

    Args:
        maps: a :class:`~infnet_monai.inferers.ProbabilityMaps` (or any module mapping ``(B, C, H, W)`` slices to
            probabilities), in eval mode on ``device``.
        example_shape: ``(1, C, H, W)``: the channels and in-plane size the network always sees.
        device: where ``maps`` lives; on CUDA the backend is torch.
        backend: one of :data:`BACKENDS`.
        precision: one of :data:`PRECISIONS`.
        use_cache: read and store converted models in :func:`backend_cache_dir`.

    Returns:
        a :class:`TorchMaps`, an :class:`OpenVINOMaps` or a :class:`StagedMaps` of two of them; all are called like
        ``maps`` and tell their ``backend``, ``precision`` and ``classes``.

    Raises:
        ValueError: an unknown backend or precision, ``"openvino"`` asked for on CUDA.
        RuntimeError: ``"openvino"`` asked for but not installed, or its result differs from torch's.
    """
    name, precision = check_backend(backend, precision)
    device = torch.device(device)
    maps = maps.eval()
    if not getattr(maps, "staged", False):
        return _backend(maps, example_shape, device, name, precision, use_cache)
    _, channels, height, width = (int(s) for s in example_shape)
    stages = [
        _backend(InfectionStage(maps).eval(), example_shape, device, name, precision, use_cache),
        _backend(ShareStage(maps).eval(), (1, channels + 1, height, width), device, name, precision, use_cache),
    ]
    if len({s.backend for s in stages}) > 1:  # one stage fell back to torch (auto): both run there, as one backend
        stages = [TorchMaps(InfectionStage(maps).eval(), device, precision), TorchMaps(ShareStage(maps).eval(), device, precision)]
    return StagedMaps(maps, *stages)


def _backend(maps: nn.Module, example_shape, device: torch.device, name: str, precision: str, use_cache: bool):
    """One network function on the backend ``name`` (canonical, :func:`check_backend`)."""
    if device.type != "cpu":
        if name == "openvino":
            raise ValueError(f"backend 'openvino' runs on the CPU; device {device} runs the network with torch.")
        return TorchMaps(maps, device, precision)
    ov = _openvino() if name in ("auto", "openvino") else None
    if precision == "bf16" and not _cpu_has_bf16(ov):
        logger.info("this CPU has no bfloat16 support: the network runs in float32")
        precision = "fp32"
    if name == "openvino" and ov is None:
        raise RuntimeError("backend 'openvino' asked for, but OpenVINO is not installed (pip install openvino).")
    if ov is None:
        return TorchMaps(maps, device, precision)
    try:
        fast, difference = _openvino_maps(ov, maps, example_shape, precision, use_cache)
    except Exception as e:  # a conversion failure must never stop a run that can go on with torch
        if name == "openvino":
            raise RuntimeError(f"OpenVINO could not run the network: {type(e).__name__}: {e}") from e
        logger.warning("OpenVINO could not run the network (%s: %s); using torch", type(e).__name__, e)
        return TorchMaps(maps, device, precision)
    if precision == "fp32" and difference > EXACT_TOLERANCE:
        message = f"OpenVINO's probabilities differ from torch's by {difference:.2g} (> {EXACT_TOLERANCE:g})"
        if name == "openvino":
            raise RuntimeError(message)
        logger.warning("%s; using torch", message)
        return TorchMaps(maps, device, precision)
    return fast


class StagedMaps:
    """Staged :class:`~infnet_monai.inferers.ProbabilityMaps` on a backend: the infection network and the GGO /
    consolidation head as two network functions (:class:`~infnet_monai.inferers.InfectionStage`,
    :class:`~infnet_monai.inferers.ShareStage`).

    Called on ``(B, C, H, W)`` slices it gives what the maps give, ``(B, 2, H, W)``: the infection probability and
    the head's share of every slice. :attr:`stages` lets an inferer run the head on fewer slices: the pipeline uses
    the share only inside the infection mask, so a slice whose infection probability stays below the threshold, or a
    crop that a larger crop replaces, needs no head (the head is a fifth of the network's time).

    Args:
        maps: the staged maps.
        infection: the network function of their infection stage.
        share: the network function of their head stage (input: the slices with the infection as the last channel).
    """

    def __init__(self, maps: nn.Module, infection, share) -> None:
        self.maps = maps
        self.infection = infection
        self.share = share
        self.backend = infection.backend
        self.precision = infection.precision

    @property
    def classes(self) -> nn.Module | None:
        """The GGO / consolidation model of the maps."""
        return getattr(self.maps, "classes", None)

    @property
    def stages(self) -> tuple:
        """``(infection, share)``: ``infection(x)`` is ``(B, 1, H, W)`` and ``share(torch.cat([x, p], 1))`` the
        consolidation share ``(B, 1, H, W)``."""
        return self.infection, self.share

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.infection(x)
        return torch.cat([p, self.share(torch.cat([x.to(p.device, p.dtype), p], dim=1)).to(p.dtype)], dim=1)
