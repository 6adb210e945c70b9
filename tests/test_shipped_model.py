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
    # temperature chosen on the validation split by scripts/calibrate_temperature.py (bundle docs)
    assert info["calibration"]["temperature"] == 0.25


def test_shipped_model_validation_dice_through_predict_slices(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    images, gts = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gts.mkdir()
    for d in labeled_splits(data_dir)["validation"]:
        os.symlink(os.path.abspath(d["image"]), images / f"{d['id']}.jpg")
        os.symlink(os.path.abspath(d["label"]), gts / f"{d['id']}.png")
    meta = json.loads((REPO / "bundles" / "infnet_covid" / "configs" / "metadata.json").read_text())["eval_metrics"]
    results = {}
    for label, extra in (("calibrated", []), ("raw", ["--temperature", "1"])):
        out = tmp_path / f"pred_{label}"
        assert main(["predict-slices", str(images), "-o", str(out), "--device", "cpu", "-q", *extra]) == 0
        results[label] = evaluate_folders(out, gts)
    # documented in bundles/infnet_covid/docs/README.md and metadata.json; allow for numeric noise only
    assert results["calibrated"]["dice"] == pytest.approx(0.743, abs=0.01)
    assert results["calibrated"]["dice"] == pytest.approx(meta["val_mean_dice"], abs=0.01)
    assert results["raw"]["dice"] == pytest.approx(0.699, abs=0.01)
    assert results["raw"]["dice"] == pytest.approx(meta["val_mean_dice_temperature_1"], abs=0.01)
    # the temperature sharpens the maps but does not move the 0.5 boundary
    assert results["calibrated"]["dice_at_0.5"] == pytest.approx(results["raw"]["dice_at_0.5"], abs=0.005)
