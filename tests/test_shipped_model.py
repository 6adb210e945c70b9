"""The shipped checkpoint: found by default, safe to load, and as accurate on the validation split as documented."""

import json
import os
from pathlib import Path

import pytest

from infnet_monai.cli import main
from infnet_monai.data import labeled_splits
from infnet_monai.io import load_checkpoint
from infnet_monai.metrics import evaluate_folders
from infnet_monai.utils import MODEL_ENV_VAR, default_model_path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "bundles" / "infnet_covid" / "models" / "model.pt"


def test_default_model_is_the_shipped_one(monkeypatch):
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    assert default_model_path() == SHIPPED
    assert SHIPPED.stat().st_size < 50 * 2**20
    info = load_checkpoint(SHIPPED)
    assert info["metadata"]["seed"] == 0 and info["metadata"]["epoch"] == 85
    assert info["preprocessing"]["spatial_size"] == 352


def test_shipped_model_validation_dice_through_predict_slices(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    images, gts = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gts.mkdir()
    for d in labeled_splits(data_dir)["validation"]:
        os.symlink(os.path.abspath(d["image"]), images / f"{d['id']}.jpg")
        os.symlink(os.path.abspath(d["label"]), gts / f"{d['id']}.png")
    assert main(["predict-slices", str(images), "-o", str(tmp_path / "pred"), "--device", "cpu", "-q"]) == 0
    metrics = evaluate_folders(tmp_path / "pred", gts)
    # documented in bundles/infnet_covid/docs/README.md: 0.699 (float16 weights, CPU); allow for numeric noise only
    assert metrics["dice"] == pytest.approx(0.699, abs=0.01)
    meta = json.loads((REPO / "bundles" / "infnet_covid" / "configs" / "metadata.json").read_text())
    assert metrics["dice"] == pytest.approx(meta["eval_metrics"]["val_mean_dice"], abs=0.01)
