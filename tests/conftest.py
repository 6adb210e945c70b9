import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


REQUIRE_DATA_ENV = "INFNET_REQUIRE_SHARED_DATA"
"""Set to 1 (``.ci/run`` does): missing shared data fails the run instead of skipping the tests that need it."""


def shared_data_dir() -> Path:
    """``$INFNET_SHARED_DATA``, else ``../shared/data`` next to the repository (never the working directory)."""
    env = os.environ.get("INFNET_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "data").resolve()


def _missing_shared_data() -> list[str]:
    d = shared_data_dir()
    return [str(d / sub) for sub in ("covid-semiseg", "ct") if not (d / sub).is_dir()]


def pytest_sessionstart(session):
    missing = _missing_shared_data()
    if missing and os.environ.get(REQUIRE_DATA_ENV) == "1":
        pytest.exit(f"{REQUIRE_DATA_ENV}=1 but the shared data is missing: {', '.join(missing)}", returncode=1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if _missing_shared_data():
        pytest.skip(f"shared data not found at {d} (set {REQUIRE_DATA_ENV}=1 to make this a failure)")
    return d


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
