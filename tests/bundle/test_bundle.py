"""The bundle's configs run as users run them: ``python -m monai.bundle ...`` in a subprocess."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from infnet_monai.io import ModelSpec, load_class_model, load_model, save_calibrated_model

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "infnet_covid"
CONFIGS = BUNDLE / "configs"


def run_bundle(*args, timeout=600):
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


STEPS = Path(__file__).with_name("bundle_steps.py")  # several bundle commands in one process


class BundleStep(NamedTuple):
    output: str  # stdout and stderr together, in order
    started_ns: int  # time.time_ns() when the step began


def run_bundle_steps(*steps, timeout=600) -> list[BundleStep]:
    """Run each argument list of ``steps`` as ``python -m monai.bundle <args>`` in one subprocess, in order
    (``bundle_steps.py``)."""
    proc = subprocess.run(
        [sys.executable, str(STEPS), json.dumps([list(s) for s in steps])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    parts = proc.stdout.split("=== monai.bundle step ")[1:]
    assert len(parts) == len(steps), proc.stdout[-3000:]
    out = []
    for part in parts:
        head, output = part.split(" ===\n", 1)
        out.append(BundleStep(output, int(head.split(" started ")[1])))
    return out


def test_metadata_and_network_data_format_verify(meta_schema):
    # the schema is the shared copy (tests/conftest.py: beside $INFNET_SHARED_DATA); its URL is not reachable offline
    metadata, network = run_bundle_steps(
        ["verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), "--filepath", str(meta_schema)],
        ["verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
         "--config_file", str(CONFIGS / "train.json")],
    )
    assert "metadata is verified with no error" in metadata.output
    assert "data shape of network is verified with no error" in network.output


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
    first = tmp_path / "epoch1.pt"
    first.write_bytes(model.read_bytes())
    # the same weights with a calibrated temperature: the evaluator applies it, as predict-slices does
    calibrated = save_calibrated_model(first, tmp_path / "calibrated.pt", {"temperature": 0.05})

    def evaluate(model_path):
        return [
            "run", "--config_file", json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]),
            "--model_path", str(model_path), "--dataset_dir", str(data_dir), "--output_dir", str(tmp_path / "eval"),
            "--device", "cpu",
        ]

    # resume for a second epoch (the trainer continues at epoch 2, the log gains a row), then evaluate
    _, plain, scaled = run_bundle_steps(
        ["run", "--config_file", str(CONFIGS / "train.json"), "--epochs", "2",
         "--resume_from", str(out / "resume_final.pt"), *common],
        evaluate(first),
        evaluate(calibrated),
    )
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["train_loss"]) > 0 for r in rows)
    assert load_model(model)[1]["metadata"]["epoch"] == 2

    def metrics_of(output):
        start = output.index("{")
        return json.loads(output[start : output.index("}", start) + 1])

    metrics = metrics_of(plain.output)
    for key in ("dice", "sensitivity", "specificity", "s_measure", "e_measure", "mae"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["num_images"] == 10
    assert metrics_of(scaled.output)["mae"] != pytest.approx(metrics["mae"], abs=1e-6)


def test_train_classes_overrides_train_and_exports_a_head(tmp_path, data_dir, tiny_model):
    out = tmp_path / "classes"
    train_and_classes = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "train_classes.json")])
    run_bundle(
        "run", "--config_file", train_and_classes, "--dataset_dir", str(data_dir), "--output_dir", str(out),
        "--prior_model", str(tiny_model), "--spatial_size", "32", "--epochs", "1", "--epoch_length", "2",
        "--batch_size", "2", "--val_interval", "1", "--device", "cpu",
    )
    # the priors are the binary model's maps of all 50 labeled slices (training and validation)
    assert len(list((out / "priors").glob("*.png"))) == 50
    spec = ModelSpec.from_checkpoint(out / "classes.pt")
    assert spec.head == "classes" and spec.spatial_size == 32 and spec.in_channels == 2
    segmenter, _ = load_model(tiny_model)
    model, info = load_class_model(segmenter, path=out / "classes.pt")
    assert info["architecture"] == "UNet" and info["preprocessing"]["output"] == "consolidation_share"
    assert "train_classes.json" in info["metadata"]["command"] and 0.0 <= info["metadata"]["validation"]["class_dice"] <= 1.0
    with torch.no_grad():
        maps = model(torch.rand(1, 1, 64, 64))
    assert maps.shape == (1, 3, 64, 64)
    torch.testing.assert_close(maps[:, 1] + maps[:, 2], maps[:, 0])  # GGO + consolidation = infection


def test_pretrain_writes_an_encoder_that_train_starts_from(tmp_path, data_dir):
    pre = tmp_path / "pretrain"
    train_and_pretrain = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "pretrain.json")])
    encoder = pre / "encoder.pt"
    out = tmp_path / "train"
    run_bundle_steps(
        ["run", "--config_file", train_and_pretrain, "--dataset_dir", str(data_dir), "--output_dir", str(pre),
         "--epochs", "1", "--epoch_length", "2", "--batch_size", "2", "--pretrain_size", "64", "--device", "cpu"],
        ["run", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(data_dir), "--output_dir", str(out),
         "--epochs", "1", "--epoch_length", "1", "--batch_size", "2", "--spatial_size", "64", "--train_rates", "[1.0]",
         "--val_interval", "1", "--device", "cpu", "--pretrained_encoder", str(encoder)],
    )
    saved = torch.load(encoder, weights_only=True)
    assert saved["format"] == "infnet-monai-encoder/1"
    # 1650 slices less the 10 validation slices, which pretraining never sees
    assert saved["metadata"]["num_images"] == 1640 and saved["metadata"]["epoch"] == 1
    rows = list(csv.DictReader((pre / "pretrain_log.csv").open()))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) > 0
    _, info = load_model(out / "model.pt")
    assert info["metadata"]["pretrained_encoder"] == str(encoder)


def test_semi_supervised_config_runs_and_resumes(tmp_path, data_dir, tiny_model):
    out = tmp_path / "semi"
    train_and_semi = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "train_semi.json")])
    kwargs = load_model(tiny_model)[1]["network"]
    args = [
        "run", "--config_file", train_and_semi, "--dataset_dir", str(data_dir), "--output_dir", str(out),
        "--initial_model", str(tiny_model), "--network_kwargs", json.dumps(kwargs), "--num_groups", "2",
        "--group_size", "2", "--propagation_batch_size", "2", "--pseudo_chunk", "1", "--propagation_size", "64",
        "--spatial_size", "64", "--train_rates", "[1.0]", "--batch_size", "2", "--epoch_length", "1", "--epochs", "1",
        "--val_interval", "1", "--device", "cpu", "--min_confidence", "0",
    ]
    # the command, then the same command again: it finds the finished state and trains nothing
    first, again = run_bundle_steps(args, args)
    summary = json.loads(first.output[first.output.rindex('{\n  "stage"'):])
    # all 4 pseudo-labels kept; stage-2 batches of 2 hold 1 pseudo-labeled + 1 labeled slice (the config's 0.5)
    assert summary["stage"] == "done" and summary["groups_done"] == 2 and summary["pseudo_steps_done"] == 4
    assert len(list((out / "propagation" / "pseudo_labels").glob("*.png"))) == 8
    _, info = load_model(out / "model.pt")
    assert info["metadata"]["group_size"] == 2 and info["metadata"]["initial_model"] == str(tiny_model)
    assert info["metadata"]["min_confidence"] == 0 and info["metadata"]["pseudo_labeled_fraction"] == 0.5
    assert (out / "propagated.pt").is_file()
    assert json.loads(again.output[again.output.rindex('{\n  "stage"'):])["stage"] == "done"
    assert (out / "model.pt").stat().st_mtime_ns < again.started_ns  # not written again
    assert len(list(csv.DictReader((out / "train_log.csv").open()))) == 1


def test_train_negatives_fine_tunes_or_trains_from_scratch_with_real_ct_negatives(tmp_path, data_dir, tiny_model):
    import numpy as np
    from PIL import Image

    from infnet_monai.io import load_checkpoint

    negatives = tmp_path / "negatives"
    rows = ["scan,slice_index,z_mm,image,label,edge,firing_pixels,max_probability,reason"]
    for scan in ("kept", "held_out"):
        for k in range(3):
            for kind, value in (("images", 120), ("masks", 0), ("edges", 0)):
                (negatives / scan / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((40, 40), value, np.uint8)).save(negatives / scan / kind / f"{k}.png")
            rows.append(f"{scan},{k},{k * 2.0},{scan}/images/{k}.png,{scan}/masks/{k}.png,{scan}/edges/{k}.png,5,0.9,firing")
    (negatives / "manifest.csv").write_text("\n".join(rows) + "\n")
    positives = tmp_path / "positives"  # real-CT positives: their own pool, one drawn per epoch
    rows = [rows[0] + ",ignore"]  # with the loss's ignore masks: every batch mixes entries with and without one
    for k in range(3):
        for kind, value, around in (("images", 120, 0), ("masks", 255, 0), ("edges", 255, 0), ("ignores", 0, 255)):
            (positives / "covid" / kind).mkdir(parents=True, exist_ok=True)
            image = np.pad(np.full((20, 20), value, np.uint8), 10, constant_values=around)  # ignored: the outside
            Image.fromarray(image).save(positives / "covid" / kind / f"{k}.png")
        rows.append(
            f"covid,{k},{k * 2.0},covid/images/{k}.png,covid/masks/{k}.png,covid/edges/{k}.png,400,0.9,positive,"
            f"{'covid/ignores/%d.png' % k if k else ''}"
        )
    (positives / "manifest.csv").write_text("\n".join(rows) + "\n")
    tiny = load_checkpoint(tiny_model)["network"]
    out, scratch = tmp_path / "fine_tuned", tmp_path / "scratch"
    common = [
        "run", "--config_file", json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "train_negatives.json")]),
        "--dataset_dir", str(data_dir), "--network_kwargs", json.dumps(tiny), "--spatial_size", "64",
        "--train_rates", "[1.0]", "--negatives_dir", str(negatives), "--negatives_exclude", "['held_out']",
        "--device", "cpu",
    ]
    run_bundle_steps(
        [*common, "--output_dir", str(out), "--init_model", str(tiny_model), "--negatives_per_epoch", "2",
         "--positives_dir", str(positives), "--positives_per_epoch", "1", "--epochs", "2", "--batch_size", "6"],
        # an empty init model trains the negatives in from the start: train.json's fresh network, no checksum
        [*common, "--output_dir", str(scratch), "--init_model", "", "--negatives_per_epoch", "2", "--epochs", "1",
         "--epoch_length", "1", "--batch_size", "2", "--validate#handlers#2#select", "best"],
    )
    meta = load_checkpoint(scratch / "model.pt")["metadata"]
    assert meta["init_model"] == "" and meta["init_model_sha256"] is None
    assert meta["negatives_count"] == 3 and meta["selected_by"] == "dice" and meta["epoch"] == 1
    info = load_checkpoint(out / "model.pt")
    meta = info["metadata"]
    assert meta["negatives_count"] == 3 and meta["negatives_exclude"] == ["held_out"] and meta["negatives_per_epoch"] == 2
    assert meta["init_model"] == str(tiny_model) and len(meta["init_model_sha256"]) == 64
    assert meta["selected_by"] == "last epoch" and meta["epoch"] == 2
    assert meta["positives_count"] == 3 and meta["positives_per_epoch"] == 1
    assert meta["iteration"] == 2 * 8  # 40 labeled training slices, 2 negatives and 1 positive per epoch, batches of 6
    start = {k: v.float() for k, v in load_checkpoint(tiny_model)["state_dict"].items()}
    tuned = info["state_dict"]
    assert any(not torch.allclose(start[k], tuned[k].float(), atol=1e-3) for k in start if start[k].is_floating_point())
