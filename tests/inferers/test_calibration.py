"""Logit temperature: recorded in checkpoints, applied by both inferers, chosen on labeled slices."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from infnet_monai.apps.calibration import choose_temperature, temperature_sweep
from infnet_monai.cli import build_parser, main
from infnet_monai.inferers import SlicePredictor
from infnet_monai.io import (
    CheckpointError,
    load_checkpoint,
    load_model,
    model_temperature,
    resolve_temperature,
    save_calibrated_model,
)
from infnet_monai.pipeline.segment import CTSegmenter


class ScaledInput(torch.nn.Module):
    """Logits = 3 x the standardised input: a network whose output is known in closed form."""

    in_channels = 1

    def forward(self, x):
        return 3.0 * x


def test_save_calibrated_model_records_temperature_and_keeps_weights(tmp_path, tiny_model):
    out = save_calibrated_model(tiny_model, tmp_path / "cal.pt", {"temperature": 0.25, "criterion": "test"})
    before, after = load_checkpoint(tiny_model), load_checkpoint(out)
    assert after["calibration"] == {"temperature": 0.25, "criterion": "test"}
    assert model_temperature(after) == 0.25 and model_temperature(before) == 1.0
    assert before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert load_model(out)[1]["calibration"]["temperature"] == 0.25


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "0.5"])
def test_bad_temperature_refused(tmp_path, tiny_model, bad):
    with pytest.raises(CheckpointError, match="temperature"):
        save_calibrated_model(tiny_model, tmp_path / "cal.pt", {"temperature": bad})
    assert not (tmp_path / "cal.pt").exists()
    with pytest.raises(ValueError, match="temperature"):
        resolve_temperature(bad)


def test_calibrating_in_place_is_refused(tiny_model):
    with pytest.raises(CheckpointError, match="input checkpoint"):
        save_calibrated_model(tiny_model, tiny_model, {"temperature": 0.5})


def test_slice_predictor_applies_temperature_without_moving_the_boundary():
    image = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    raw = SlicePredictor.from_network(ScaledInput(), spatial_size=64).predict_unit([image])[0]
    sharp = SlicePredictor.from_network(ScaledInput(), spatial_size=64, temperature=0.25).predict_unit([image])[0]
    logit = np.log(raw) - np.log1p(-raw)
    np.testing.assert_allclose(sharp, 1.0 / (1.0 + np.exp(-4.0 * logit)), atol=1e-5)
    np.testing.assert_array_equal(raw >= 0.5, sharp >= 0.5)
    assert np.abs(sharp - 0.5).mean() > np.abs(raw - 0.5).mean()


def test_slice_predictor_uses_the_checkpoint_calibration(tmp_path, tiny_model):
    cal = save_calibrated_model(tiny_model, tmp_path / "cal.pt", {"temperature": 0.5})
    assert SlicePredictor(cal, device="cpu").temperature == 0.5
    assert SlicePredictor(cal, device="cpu", temperature=2.0).temperature == 2.0
    assert SlicePredictor(tiny_model, device="cpu").temperature == 1.0


def test_ct_segmenter_applies_temperature(tmp_path, tiny_model):
    cal = save_calibrated_model(tiny_model, tmp_path / "cal.pt", {"temperature": 0.5})
    assert CTSegmenter(cal, device="cpu", classes=False, backend="torch").temperature == 0.5  # read from the checkpoint
    seg = CTSegmenter(network=ScaledInput(), spatial_size=8, device="cpu", temperature=0.5, classes=False)
    x = torch.linspace(-1.0, 1.0, 16).reshape(1, 1, 4, 4)
    torch.testing.assert_close(seg.network_fn(x), torch.sigmoid(6.0 * x))
    with pytest.raises(ValueError, match="temperature"):
        CTSegmenter(network=ScaledInput(), spatial_size=8, device="cpu", temperature=0.0)


def test_choose_temperature_takes_the_least_sharpening_within_tolerance():
    rows = [
        {"temperature": 1.0, "dice": 0.70},
        {"temperature": 0.5, "dice": 0.733},
        {"temperature": 0.25, "dice": 0.743},
        {"temperature": 0.125, "dice": 0.746},
    ]
    assert choose_temperature(rows, tolerance=0.005) == 0.25
    assert choose_temperature(rows, tolerance=0.0) == 0.125
    assert choose_temperature(rows, tolerance=0.1) == 1.0
    with pytest.raises(ValueError):
        choose_temperature([])
    with pytest.raises(ValueError):
        choose_temperature(rows, tolerance=-0.1)


def test_temperature_sweep_on_real_slices(data_dir, tiny_model):
    train = data_dir / "covid-semiseg" / "train"
    names = sorted(p.stem for p in (train / "images").glob("*.jpg"))[:3]
    images = [np.asarray(Image.open(train / "images" / f"{n}.jpg").convert("L")) for n in names]
    masks = [np.asarray(Image.open(train / "masks" / f"{n}.png").convert("L")) for n in names]
    predictor = SlicePredictor(tiny_model, device="cpu")
    rows = temperature_sweep(predictor, images, masks, temperatures=[1.0, 0.1])
    assert [r["temperature"] for r in rows] == [1.0, 0.1]
    assert predictor.temperature == 1.0  # restored
    for r in rows:
        assert 0.0 <= r["dice"] <= 1.0 and r["num_images"] == 3 and math.isfinite(r["mae"])
    # a random network is unsure everywhere: sharpening must change its maps, hence its threshold-averaged metrics
    assert rows[0]["mae"] != rows[1]["mae"]
    with pytest.raises(ValueError):
        temperature_sweep(predictor, images, masks[:2])


def test_cli_temperature_option(tmp_path, data_dir, tiny_model, capsys):
    src = tmp_path / "in"
    src.mkdir()
    image = sorted((data_dir / "covid-semiseg" / "train" / "images").glob("*.jpg"))[0]
    (src / image.name).symlink_to(image)
    outs = {}
    for t in ("1", "0.2"):
        out = tmp_path / f"out_{t}"
        args = ["predict-slices", str(src), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "-q"]
        assert main(args + ["--temperature", t]) == 0
        outs[t] = np.asarray(Image.open(out / f"{image.stem}.png"), dtype=np.int16)
    assert np.abs(outs["0.2"] - 127.5).mean() > np.abs(outs["1"] - 127.5).mean()
    assert main(["predict-slices", str(src), "-o", str(tmp_path / "x"), "--model", str(tiny_model), "--temperature", "0", "-q"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_cli_calibrate_writes_a_calibrated_copy(tmp_path, data_dir, tiny_model, capsys):
    from infnet_monai.apps.calibration import DEFAULT_TEMPERATURES

    # the command line's default is the calibration's, read from the light defaults module
    assert build_parser().parse_args(["calibrate", "i", "m", "-o", "x"]).temperatures == list(DEFAULT_TEMPERATURES)
    train = data_dir / "covid-semiseg" / "train"
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for p in sorted((train / "images").glob("*.jpg"))[:2]:
        (images / p.name).symlink_to(p)
        (masks / f"{p.stem}.png").symlink_to(train / "masks" / f"{p.stem}.png")
    out = tmp_path / "cal.pt"
    args = ["calibrate", str(images), str(masks), "--model", str(tiny_model), "-o", str(out), "--device", "cpu"]
    assert main(args + ["--temperatures", "1", "0.5", "--tolerance", "0"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    calibration = load_checkpoint(out)["calibration"]
    assert printed["temperature"] == calibration["temperature"] in (1.0, 0.5)
    assert [r["temperature"] for r in calibration["sweep"]] == [1.0, 0.5] and calibration["num_slices"] == 2
    best = max(r["dice"] for r in calibration["sweep"])
    assert next(r for r in calibration["sweep"] if r["temperature"] == calibration["temperature"])["dice"] == best
    # the input model is never overwritten; a slice without a mask is a usage error naming it
    assert main(["calibrate", str(images), str(masks), "--model", str(tiny_model), "-o", str(tiny_model)]) == 2
    assert "input checkpoint" in capsys.readouterr().err
    (images / "extra.png").write_bytes((train / "masks" / f"{sorted(p.stem for p in images.glob('*.jpg'))[0]}.png").read_bytes())
    assert main(args) == 2
    assert "extra.png" in capsys.readouterr().err
