"""configs/multi_gpu_train.json: DDP training with 2 CPU processes (gloo), 2 iterations, then resumed, in CI."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infnet_monai.io import load_model

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "infnet_covid" / "configs"


def _torchrun(args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ddp_two_ranks_two_iterations_then_resume(tmp_path, data_dir):
    out = tmp_path / "ddp"
    configs = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    common = ["--config_file", configs, "--dataset_dir", str(data_dir), "--output_dir", str(out), "--epoch_length", "2",
              "--batch_size", "2", "--spatial_size", "64", "--train_rates", "[1.0]", "--val_interval", "1"]
    _torchrun([*common, "--epochs", "1"])
    net, info = load_model(out / "model.pt")  # exported from rank 0, unwrapped from DistributedDataParallel
    assert info["metadata"]["epoch"] == 1
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    saved = torch.load(out / "resume_final.pt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("module.") for k in saved["network"])  # loads into a plain network too

    _torchrun([*common, "--epochs", "2", "--resume_from", str(out / "resume_final.pt")])
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # one log, written by rank 0 only
    assert [int(r["iteration"]) for r in rows] == [2, 4]  # 2 iterations per epoch on each rank
