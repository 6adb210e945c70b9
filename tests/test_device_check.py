"""scripts/device_check.py (the GPU check) runs its code path on the CPU with --quick, so it is ready when a GPU is
lent."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.py"


@pytest.mark.slow
def test_device_check_quick_on_cpu(data_dir, capsys):
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--device", "cpu", "--quick", "--data", str(data_dir)])
    assert result["device"] == "cpu" and result["masks_agree_with_cpu"] is True
    assert result["predict_slices"]["slices"] == 8 and result["predict_slices"]["mask_dice_vs_cpu_min"] == 1.0
    assert set(result["training"]) == {"light", "paper"}
    assert all(r["images_per_second"] > 0 for r in result["training"].values())
    assert '"masks_agree_with_cpu": true' in capsys.readouterr().out
