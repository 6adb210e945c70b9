"""The bundle's configs run as users run them: ``python -m monai.bundle ...`` in a subprocess."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infnet_monai.io import load_model

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "infnet_covid"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / ".." / "shared" / "monai" / "meta_schema.json"


def run_bundle(*args, timeout=600):
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_metadata_verifies_against_schema():
    if not SCHEMA.is_file():
        pytest.skip("MONAI meta schema not available offline")
    proc = run_bundle("verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), "--filepath", str(SCHEMA))
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_network_data_format_verifies():
    proc = run_bundle(
        "verify_net_in_out", "network_def",
        "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "train.json"),
    )
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_train_two_iterations_then_resume_then_evaluate(tmp_path, data_dir):
    out = tmp_path / "run"
    common = [
        "--dataset_dir", str(data_dir), "--output_dir", str(out), "--epoch_length", "2", "--batch_size", "2",
        "--spatial_size", "64", "--train_rates", "[1.0]", "--val_interval", "1", "--device", "cpu",
    ]
    run_bundle("run", "--config_file", str(CONFIGS / "train.json"), "--epochs", "1", *common)
    model = out / "model.pt"
    assert model.is_file() and (out / "resume_final.pt").is_file()
    net, info = load_model(model)
    assert info["metadata"]["epoch"] == 1 and info["preprocessing"]["spatial_size"] == 64
    assert 0.0 <= info["metadata"]["validation"]["dice"] <= 1.0
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)

    # resume for a second epoch: the trainer continues at epoch 2, the log gains a row
    run_bundle(
        "run", "--config_file", str(CONFIGS / "train.json"), "--epochs", "2",
        "--resume_from", str(out / "resume_final.pt"), *common,
    )
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["train_loss"]) > 0 for r in rows)

    proc = run_bundle(
        "run", "--config_file", json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]),
        "--model_path", str(model), "--dataset_dir", str(data_dir), "--output_dir", str(tmp_path / "eval"),
        "--device", "cpu",
    )
    start = proc.stdout.index("{")
    metrics = json.loads(proc.stdout[start : proc.stdout.index("}", start) + 1])
    for key in ("dice", "sensitivity", "specificity", "s_measure", "e_measure", "mae"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["num_images"] == 10
