"""The network backends: OpenVINO agrees with torch (on a probe and on a real scan), is cached by the weights, and
anything that could change a result falls back to torch (``auto``) or fails (an explicit ``openvino``)."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from infnet_monai.inferers import ProbabilityMaps
from infnet_monai.inferers import backends
from infnet_monai.inferers.backends import (
    EXACT_TOLERANCE,
    OpenVINOMaps,
    StagedMaps,
    TorchMaps,
    backend_cache_dir,
    check_backend,
    network_backend,
    network_fingerprint,
)
from infnet_monai.networks import InfNet

openvino_missing = importlib.util.find_spec("openvino") is None
needs_openvino = pytest.mark.skipif(openvino_missing, reason="OpenVINO is not installed")

SHAPE = (1, 1, 64, 64)


def _maps(seed: int = 0) -> ProbabilityMaps:
    torch.manual_seed(seed)
    net = InfNet(in_channels=1, layers=(1, 1, 1, 1), planes=(8, 16, 32, 64), stem_channels=(8, 8, 16), ra_channels=(16, 16, 16))
    return ProbabilityMaps(net.eval(), temperature=0.5)


def _key_settings() -> tuple:
    openvino = backends._openvino()  # imported as the backend imports it (its telemetry hidden)
    return backends._FORMAT, SHAPE[1:], openvino.__version__, torch.__version__


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def _slices(n: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn((n, *SHAPE[1:]), generator=gen)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache of converted models."""
    monkeypatch.setenv("INFNET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def _converted_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    if not openvino_missing:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("INFNET_CACHE_DIR", str(path))
            network_backend(_maps(), SHAPE, "cpu", backend="openvino")
    return path


@pytest.fixture
def converted(_converted_cache, monkeypatch) -> Path:
    """A cache holding the converted :func:`_maps` (converted once for the module)."""
    monkeypatch.setenv("INFNET_CACHE_DIR", str(_converted_cache))
    return _converted_cache


def test_names_are_checked():
    assert check_backend(" OpenVINO ", "BF16") == ("openvino", "bf16")
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        check_backend("onnx")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        check_backend("auto", "fp16")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INFNET_CACHE_DIR", str(tmp_path / "c"))
    assert backend_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("INFNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backend_cache_dir() == tmp_path / "xdg" / "infnet-monai"


def test_fingerprint_follows_weights_and_settings():
    a, b = _maps(0), _maps(0)
    assert network_fingerprint(a, 352) == network_fingerprint(b, 352)
    assert network_fingerprint(a, 352) != network_fingerprint(a, 256)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert network_fingerprint(a, 352) != network_fingerprint(b, 352)
    for change in ({"temperature": 0.25}, {"flip_tta": True}):  # settings of the graph that are not weights
        c = _maps(0)
        for name, value in change.items():
            setattr(c, name, value)
        assert network_fingerprint(c, 352) != network_fingerprint(a, 352), change


def test_torch_backend_equals_the_module():
    maps = _maps()
    x = _slices()
    with torch.no_grad():
        expected = maps(x)
    fn = network_backend(maps, SHAPE, "cpu", backend="torch")
    assert isinstance(fn, TorchMaps) and fn.backend == "torch" and fn.precision == "fp32"
    y = fn(x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)
    y += 1  # a normal tensor, not an inference tensor: in-place use works
    assert fn.classes is None


@needs_openvino
def test_openvino_agrees_with_torch_and_is_cached(cache, caplog):
    maps = _maps()
    x = _slices(5)
    with torch.no_grad():
        expected = maps(x)
    opened = _open_files()
    with caplog.at_level(logging.DEBUG, logger="infnet_monai.inferers.backends"):
        fn = network_backend(maps, SHAPE, "cpu", backend="auto")
    assert isinstance(fn, OpenVINOMaps) and fn.backend == "openvino"
    # no descriptor left open: OpenVINO's telemetry, hidden by the backend, kept about 70 pipes per conversion
    assert _open_files() - opened <= 4
    assert "converted" in caplog.text
    assert float((fn(x) - expected).abs().max()) <= EXACT_TOLERANCE
    assert fn(x[:1]).shape == (1, 1, 64, 64)  # any batch size
    entries = list((cache / "openvino").iterdir())
    assert len(entries) == 1 and {p.name for p in entries[0].iterdir()} == {"model.xml", "model.bin", "probe.npy"}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="infnet_monai.inferers.backends"):
        again = network_backend(_maps(), SHAPE, "cpu", backend="openvino")  # same weights: the same entry
    assert "from the cache" in caplog.text
    torch.testing.assert_close(again(x), fn(x))
    network_backend(_maps(seed=1), SHAPE, "cpu", backend="openvino")  # other weights: a new entry
    assert len(list((cache / "openvino").iterdir())) == 2


@needs_openvino
def test_openvino_runs_other_slice_sizes_with_torch(converted):
    maps = _maps()
    fn = network_backend(maps, SHAPE, "cpu", backend="openvino")
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        expected = maps(x)
    torch.testing.assert_close(fn(x), expected, atol=1e-5, rtol=0)


@needs_openvino
def test_disagreement_falls_back_to_torch_or_fails(converted, monkeypatch, caplog):
    monkeypatch.setattr(backends, "EXACT_TOLERANCE", -1.0)  # every difference is too large
    with caplog.at_level(logging.WARNING, logger="infnet_monai.inferers.backends"):
        fn = network_backend(_maps(), SHAPE, "cpu", backend="auto")
    assert isinstance(fn, TorchMaps)
    assert "differ from torch's" in caplog.text
    with pytest.raises(RuntimeError, match="differ from torch's"):
        network_backend(_maps(), SHAPE, "cpu", backend="openvino")


def test_without_openvino_auto_is_torch(monkeypatch):
    monkeypatch.setattr(backends, "_openvino", lambda: None)
    assert isinstance(network_backend(_maps(), SHAPE, "cpu", backend="auto"), TorchMaps)
    with pytest.raises(RuntimeError, match="not installed"):
        network_backend(_maps(), SHAPE, "cpu", backend="openvino")


@needs_openvino
def test_a_failing_conversion_falls_back_to_torch(cache, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ValueError("unsupported operation")

    monkeypatch.setattr(backends, "_openvino_maps", broken)
    with caplog.at_level(logging.WARNING, logger="infnet_monai.inferers.backends"):
        assert isinstance(network_backend(_maps(), SHAPE, "cpu", backend="auto"), TorchMaps)
    assert "unsupported operation" in caplog.text
    with pytest.raises(RuntimeError, match="unsupported operation"):
        network_backend(_maps(), SHAPE, "cpu", backend="openvino")


@needs_openvino
def test_a_damaged_cache_entry_is_converted_again(cache):
    network_backend(_maps(), SHAPE, "cpu", backend="openvino")
    (entry,) = (cache / "openvino").iterdir()
    (entry / "model.xml").write_text("not a model")
    fn = network_backend(_maps(), SHAPE, "cpu", backend="openvino")
    x = _slices()
    with torch.no_grad():
        expected = _maps()(x)
    assert float((fn(x) - expected).abs().max()) <= EXACT_TOLERANCE
    assert (entry / "model.xml").read_text() != "not a model"


@needs_openvino
def test_an_unwritable_cache_still_runs(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("INFNET_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be created
    with caplog.at_level(logging.WARNING, logger="infnet_monai.inferers.backends"):
        fn = network_backend(_maps(), SHAPE, "cpu", backend="openvino")
    assert isinstance(fn, OpenVINOMaps)
    assert "could not store the converted model" in caplog.text


@needs_openvino
def test_the_cache_keeps_the_most_recent_entries(cache, monkeypatch):
    monkeypatch.setattr(backends, "CACHE_ENTRIES", 1)
    for seed in range(2):
        network_backend(_maps(seed), SHAPE, "cpu", backend="openvino")
    (entry,) = (cache / "openvino").iterdir()
    assert entry.name == network_fingerprint(_maps(1), *_key_settings())


def test_openvino_is_refused_on_cuda():
    with pytest.raises(ValueError, match="runs on the CPU"):
        network_backend(_maps(), SHAPE, "cuda", backend="openvino")


@needs_openvino
@pytest.mark.slow
def test_shipped_models_agree_on_a_real_scan(data_dir, tmp_path):
    """The default backend (OpenVINO) and torch give the same masks on real slices and probabilities within
    :data:`EXACT_TOLERANCE` (19 slices of the lung-cancer CT, the golden test's cut). In the test run's cache: the
    shipped model is converted once for all the tests that run it."""
    from infnet_monai.io import discover_cases
    from infnet_monai.pipeline import CTSegmenter

    spec = importlib.util.spec_from_file_location("make_golden", Path(__file__).parents[2] / "scripts" / "make_golden.py")
    make_golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_golden)
    (case,) = discover_cases(make_golden.crop_case(data_dir, tmp_path / "input"))
    results = {}
    for backend in ("torch", "auto"):
        seg = CTSegmenter(device="cpu", backend=backend)
        assert seg.backend == ("torch fp32" if backend == "torch" else "openvino fp32")
        results[backend] = seg.segment_image(case, keep_probability=True)
    ref, fast = results["torch"], results["auto"]
    assert ref.infection.sum() > 0
    assert float(np.abs(ref.probability - fast.probability).max()) <= EXACT_TOLERANCE
    for name in ("infection", "lung", "classes"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name), err_msg=name)


def _maps_with_head(seed: int = 0, flip_tta: bool = False) -> ProbabilityMaps:
    from monai.networks.nets import UNet

    from infnet_monai.networks import InfNetClasses

    maps = _maps(seed)
    torch.manual_seed(seed + 1)
    head = UNet(spatial_dims=2, in_channels=2, out_channels=1, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    classes = InfNetClasses(maps.network, head, temperature=maps.temperature, head_size=32).eval()
    return ProbabilityMaps(maps.network, maps.temperature, classes=classes, flip_tta=flip_tta)


@pytest.mark.parametrize("backend", ["torch", pytest.param("openvino", marks=needs_openvino)])
def test_maps_with_a_head_run_in_two_stages_that_give_the_same_maps(backend, cache):
    maps = _maps_with_head()
    x = _slices(4)
    with torch.no_grad():
        expected = maps(x)
    fn = network_backend(maps, SHAPE, "cpu", backend=backend)
    assert isinstance(fn, StagedMaps) and fn.backend == backend and fn.classes is maps.classes
    torch.testing.assert_close(fn(x), expected, atol=1e-4 if backend == "openvino" else 1e-5, rtol=0)
    infection, share = fn.stages
    p = infection(x)
    torch.testing.assert_close(p, expected[:, :1], atol=1e-4, rtol=0)
    torch.testing.assert_close(share(torch.cat([x, p], 1)), expected[:, 1:], atol=1e-4, rtol=0)
    flipped = network_backend(_maps_with_head(flip_tta=True), SHAPE, "cpu", backend=backend)
    assert not isinstance(flipped, StagedMaps)  # the flip averages the heads of two views: one function
