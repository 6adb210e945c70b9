import os
import sys
from pathlib import Path

import pytest

from infnet_monai.data.paths import shared_data_dir  # the package's one answer ($INFNET_SHARED_DATA, else ../shared/data)

REPO_ROOT = Path(__file__).resolve().parents[1]


REQUIRE_DATA_ENV = "INFNET_REQUIRE_SHARED_DATA"
"""Set to 1 (``.ci/run`` does): missing shared data fails the run instead of skipping the tests that need it."""


def meta_schema_path() -> Path:
    """MONAI's bundle metadata schema, ``monai/meta_schema.json`` beside the shared data folder (``../shared/monai``
    by default; ``$INFNET_SHARED_DATA/../monai`` when that is set)."""
    return shared_data_dir().parent / "monai" / "meta_schema.json"


def _missing_shared_data() -> list[str]:
    d = shared_data_dir()
    return [str(d / sub) for sub in ("covid-semiseg", "ct") if not (d / sub).is_dir()]


def _required() -> bool:
    return os.environ.get(REQUIRE_DATA_ENV) == "1"


def pytest_configure(config):
    # converted networks (infnet_monai.inferers.backends) go to a folder of this test run, not the user's cache; made
    # before pytest-xdist starts its workers, which inherit it: a network is converted once per run
    if not os.environ.get("INFNET_CACHE_DIR"):
        import tempfile

        os.environ["INFNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="infnet-test-cache-")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the workers share the cores: one thread each (unless OMP_NUM_THREADS says otherwise), inherited by the
        # processes the tests start; OpenMP threads spinning for cores another worker holds cost a third of the CPU time
        threads = int(os.environ.setdefault("OMP_NUM_THREADS", "1"))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


def pytest_sessionstart(session):
    missing = _missing_shared_data()
    if not meta_schema_path().is_file():
        missing.append(str(meta_schema_path()))
    if missing and _required():
        pytest.exit(f"{REQUIRE_DATA_ENV}=1 but the shared data is missing: {', '.join(missing)}", returncode=1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if _missing_shared_data():
        pytest.skip(f"shared data not found at {d} (set {REQUIRE_DATA_ENV}=1 to make this a failure)")
    return d


@pytest.fixture(scope="session")
def meta_schema() -> Path:
    """:func:`meta_schema_path`; skips when it is missing, fails when the shared data is required."""
    path = meta_schema_path()
    if not path.is_file():
        message = f"MONAI bundle meta schema not found at {path}"
        if _required():
            pytest.fail(f"{REQUIRE_DATA_ENV}=1 but the shared data is missing: {message}")
        pytest.skip(f"{message} (set {REQUIRE_DATA_ENV}=1 to make this a failure)")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised, tiny Inf-Net saved as a self-describing checkpoint."""
    import torch

    from infnet_monai.io import save_model
    from infnet_monai.networks import InfNet

    kwargs = {
        "spatial_dims": 2,
        "in_channels": 1,
        "layers": (1, 1, 1, 1),
        "planes": (8, 16, 32, 64),
        "stem_channels": (8, 8, 16),
        "ra_channels": (16, 16, 16),
    }
    torch.manual_seed(0)
    net = InfNet(**kwargs)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, net, kwargs, preprocessing={"spatial_size": 64, "in_channels": 1}, metadata={"note": "test"})
    return path


@pytest.fixture(scope="session")
def tiny_class_model(tmp_path_factory) -> Path:
    """A randomly initialised, tiny GGO / consolidation head (MONAI UNet) saved as a checkpoint."""
    import torch
    from monai.networks.nets import UNet

    from infnet_monai.io import save_model

    kwargs = {"spatial_dims": 2, "in_channels": 2, "out_channels": 1, "channels": (4, 8), "strides": (2,), "num_res_units": 0}
    torch.manual_seed(0)
    head = UNet(**kwargs)
    path = tmp_path_factory.mktemp("classes") / "tiny_classes.pt"
    save_model(
        path, head, kwargs, preprocessing={"spatial_size": 32, "output": "consolidation_share"}, architecture="UNet"
    )
    return path
