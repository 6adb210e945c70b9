"""Tests of the Inf-Net paper evaluation protocol (infnet_monai.metrics.paper, .accumulator and .folders).

Expected values are derived by hand in the tests (explicit arithmetic), not by calling the code under test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.transform import resize

from infnet_monai.metrics.accumulator import PaperMetricAccumulator
from infnet_monai.metrics.folders import evaluate_folders, main
from infnet_monai.metrics.paper import (
    PAPER_THRESHOLDS,
    dice_iou_at_threshold,
    e_measure,
    evaluate_image,
    mean_absolute_error,
    normalize_prediction,
    s_measure,
    threshold_curves,
)

NUM_T = 256

# thresholds t_k = (255 - k) / 255: t > 0.5 for k <= 127, t in (0.25, 0.5] for k = 128..191,
# t in (0, 0.25] for k = 192..254 and t = 0 for k = 255
GT_4x4 = np.array(
    [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 1],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)
PRED_4x4 = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.5, 0.0],
        [0.0, 1.0, 1.0, 0.5],
        [0.0, 0.0, 0.0, 0.0],
    ]
)


def piecewise(*segments: tuple[int, float]) -> np.ndarray:
    """Curve made of (length, value) segments, checked to cover the 256 thresholds."""
    out = np.concatenate([np.full(n, v, dtype=np.float64) for n, v in segments])
    assert out.shape == (NUM_T,)
    return out


def enhanced(a: float, b: float) -> float:
    """One entry of the enhanced alignment matrix (without eps)."""
    align = 2 * a * b / (a * a + b * b)
    return (align + 1) ** 2 / 4


def test_thresholds() -> None:
    assert PAPER_THRESHOLDS.shape == (256,)
    assert PAPER_THRESHOLDS[0] == 1.0 and PAPER_THRESHOLDS[-1] == 0.0
    assert PAPER_THRESHOLDS[1] == 254 / 255 and PAPER_THRESHOLDS[128] == 127 / 255
    assert np.all(np.diff(PAPER_THRESHOLDS) < 0)


def test_normalize_prediction() -> None:
    pred = np.array([[0.25, 0.5], [0.75, 0.25]])
    np.testing.assert_allclose(normalize_prediction(pred), (pred - 0.25) / (0.5 + 1e-8), rtol=0, atol=0)
    np.testing.assert_array_equal(normalize_prediction(pred, eps=0.0), [[0.0, 0.5], [1.0, 0.0]])
    for eps in (1e-8, 0.0):
        out = normalize_prediction(np.full((3, 3), 0.7), eps=eps)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, np.zeros((3, 3)))


def test_perfect_binary_prediction() -> None:
    # N = 16, |G| = 4; every t > 0 selects exactly G, t = 0 selects all pixels
    gt = np.zeros((4, 4), dtype=bool)
    gt[1:3, 1:3] = True
    curves = threshold_curves(gt.astype(np.float64), gt)
    np.testing.assert_allclose(curves["dice"], piecewise((255, 1.0), (1, 2 * 4 / (4 + 16))))
    np.testing.assert_allclose(curves["sensitivity"], np.ones(NUM_T))
    np.testing.assert_allclose(curves["specificity"], piecewise((255, 1.0), (1, 0 / 12)))
    # FM == GT: align = 1 everywhere -> sum(enhanced) = 16, score = 16 / 15;
    # t = 0: FM is all ones, a = 0 -> align = 0, enhanced = 1/4 -> 4 / 15
    np.testing.assert_allclose(curves["e_measure"], piecewise((255, 16 / 15), (1, 4 / 15)), rtol=1e-12)


def test_empty_gt() -> None:
    pred = np.array([[0.0, 0.5], [0.25, 1.0]])
    gt = np.zeros((2, 2), dtype=bool)
    curves = threshold_curves(pred, gt)
    for key in ("dice", "sensitivity", "specificity"):
        np.testing.assert_array_equal(curves[key], np.zeros(NUM_T))
    # E = 1 - mean(FM): 1, 2, 3, 4 positives for t in (0.5, 1], (0.25, 0.5], (0, 0.25], {0}
    np.testing.assert_allclose(curves["e_measure"], piecewise((128, 0.75), (64, 0.5), (63, 0.25), (1, 0.0)))
    assert s_measure(pred, gt) == pytest.approx(1 - (0 + 0.5 + 0.25 + 1) / 4)
    assert mean_absolute_error(pred, gt) == pytest.approx(1.75 / 4)
    assert e_measure(pred >= 0.3, gt) == pytest.approx(0.5)


def test_full_gt() -> None:
    pred = np.array([[0.0, 0.5], [0.25, 1.0]])
    gt = np.ones((2, 2), dtype=bool)
    curves = threshold_curves(pred, gt)
    # |P| = 1, 2, 3, 4 on the four threshold ranges; TP = |P|, |G| = 4
    np.testing.assert_allclose(
        curves["dice"], piecewise((128, 2 * 1 / 5), (64, 2 * 2 / 6), (63, 2 * 3 / 7), (1, 2 * 4 / 8))
    )
    np.testing.assert_allclose(curves["sensitivity"], piecewise((128, 0.25), (64, 0.5), (63, 0.75), (1, 1.0)))
    # no negative pixel: specificity is defined as 0
    np.testing.assert_array_equal(curves["specificity"], np.zeros(NUM_T))
    # E = mean(FM)
    np.testing.assert_allclose(curves["e_measure"], piecewise((128, 0.25), (64, 0.5), (63, 0.75), (1, 1.0)))
    assert s_measure(pred, gt) == pytest.approx(1.75 / 4)
    assert mean_absolute_error(pred, gt) == pytest.approx((1 + 0.5 + 0.75 + 0) / 4)


def test_constant_prediction() -> None:
    # constant map -> normalised to zeros; GT: top-left 3x3 of 4x4 (|G| = 9, N = 16)
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[:3, :3] = 255
    res = evaluate_image(np.full((4, 4), 128, dtype=np.uint8), gt)
    # t > 0: nothing positive -> TP = 0 -> 0; t = 0: all positive
    np.testing.assert_allclose(res["dice"], piecewise((255, 0.0), (1, 2 * 9 / (9 + 16))))
    np.testing.assert_allclose(res["sensitivity"], piecewise((255, 0.0), (1, 1.0)))
    np.testing.assert_array_equal(res["specificity"], np.zeros(NUM_T))
    # FM constant (all 0 or all 1): a = 0 -> enhanced = 1/4 everywhere -> 16 * 0.25 / 15
    np.testing.assert_allclose(res["e_measure"], np.full(NUM_T, 4 / 15), rtol=1e-12)
    # S_object: fg mean 0 -> 0; bg = 1 - 0 = 1 (std 0) -> 2 / (1 + 1) = 1; S_object = 7/16 * 1
    # centroid: mean index 1 -> X = Y = 2; LT (2x2, all GT, uniform) -> 1; RT, LB, RB have mixed GT and
    # pred = 0 -> alpha = 0, beta > 0 -> 0; S_region = 4/16
    assert res["s_measure"] == pytest.approx(0.5 * 7 / 16 + 0.5 * 4 / 16)
    assert res["mae"] == pytest.approx(9 / 16)
    # 128 / 255 >= 0.5: everything positive before normalisation
    assert res["dice_at_0.5"] == pytest.approx(18 / 25)
    assert res["iou_at_0.5"] == pytest.approx(9 / 16)


def test_s_measure_centroid_rounds_half_away_from_zero() -> None:
    # GT top-left 2x2 of 4x4: mean 0-based index 0.5 -> round to 1 (MATLAB) -> split at X = Y = 2,
    # all four quadrants uniform; pred = 0 -> every quadrant scores 1 -> S_region = 1
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2, :2] = True
    assert s_measure(np.zeros((4, 4)), gt) == pytest.approx(0.5 * (12 / 16) + 0.5 * 1.0)


def test_hand_example_s_measure() -> None:
    # S_object: fg values [1, .5, 1, 1, .5]: mean 0.8, sample var (3 * 0.04 + 2 * 0.09) / 4 = 0.075
    o_fg = 2 * 0.8 / (0.8**2 + 1 + math.sqrt(0.075))
    o_bg = 2 * 1.0 / (1.0 + 1 + 0.0)  # 1 - pred = 1 on the 11 background pixels
    s_object = 5 / 16 * o_fg + 11 / 16 * o_bg
    # centroid: cols (1+2+1+2+3)/5 = 1.8 -> 2 -> X = 3; rows (1+1+2+2+2)/5 = 1.6 -> 2 -> Y = 3
    # LT 3x3: sum p = 3.5, sum p^2 = 3.25, sum g = 4, sum p*g = 3.5
    x, y = 3.5 / 9, 4 / 9
    sx2 = (3.25 - 9 * x * x) / 8
    sy2 = (4 - 9 * y * y) / 8
    sxy = (3.5 - 9 * x * y) / 8
    q_lt = 4 * x * y * sxy / ((x * x + y * y) * (sx2 + sy2))
    # RT 3x1: p = [0, 0, .5], g = [0, 0, 1]: alpha = 4 (1/6)(1/3)(1/6) = 1/27,
    # beta = (1/36 + 1/9)(1/12 + 1/3) = 25/432 -> q = 432 / 675
    q_rt = (1 / 27) / (25 / 432)
    assert q_rt == pytest.approx(0.64)
    # LB 1x3 and RB 1x1: pred 0 and gt 0 -> alpha = beta = 0 -> 1
    s_region = 9 / 16 * q_lt + 3 / 16 * q_rt + 3 / 16 * 1.0 + 1 / 16 * 1.0
    assert s_measure(PRED_4x4, GT_4x4) == pytest.approx(0.5 * s_object + 0.5 * s_region, rel=1e-12)
    assert s_measure(PRED_4x4, GT_4x4, alpha=1.0) == pytest.approx(s_object, rel=1e-12)
    assert mean_absolute_error(PRED_4x4, GT_4x4) == pytest.approx((0.5 + 0.5) / 16)


def test_hand_example_curves_and_e_measure() -> None:
    # t in (0.5, 1]: FM = the three 1.0 pixels (all in G): TP 3, FP 0, FN 2, TN 11
    mu_fm, mu_gt = 3 / 16, 5 / 16
    e_high = (
        3 * enhanced(1 - mu_fm, 1 - mu_gt) + 2 * enhanced(0 - mu_fm, 1 - mu_gt) + 11 * enhanced(0 - mu_fm, 0 - mu_gt)
    ) / 15
    assert e_measure(PRED_4x4 >= 0.75, GT_4x4) == pytest.approx(e_high, rel=1e-12)
    # t in (0, 0.5]: FM == GT -> 16 / 15; t = 0: FM all ones -> 4 / 15
    assert e_measure(PRED_4x4 >= 0.5, GT_4x4) == pytest.approx(16 / 15, rel=1e-12)
    curves = threshold_curves(PRED_4x4, GT_4x4)
    np.testing.assert_allclose(curves["e_measure"], piecewise((128, e_high), (127, 16 / 15), (1, 4 / 15)), rtol=1e-12)
    np.testing.assert_allclose(curves["dice"], piecewise((128, 2 * 3 / 8), (127, 1.0), (1, 2 * 5 / 21)))
    np.testing.assert_allclose(curves["sensitivity"], piecewise((128, 3 / 5), (127, 1.0), (1, 1.0)))
    np.testing.assert_allclose(curves["specificity"], piecewise((128, 1.0), (127, 1.0), (1, 0.0)))


def test_gt_binarisation_rules() -> None:
    pred = np.array([[255, 0], [0, 255]], dtype=np.uint8)
    gt_u8 = np.array([[129, 0], [128, 200]], dtype=np.uint8)  # 128 is background (> 128 rule)
    res_u8 = evaluate_image(pred, gt_u8)
    res_bool = evaluate_image(pred, np.array([[1, 0], [0, 1]], dtype=bool))
    res_float = evaluate_image(pred.astype(np.float64) / 255, np.array([[0.6, 0.0], [0.5, 1.0]]))
    for res in (res_bool, res_float):
        for key in ("dice", "e_measure", "s_measure", "mae", "dice_at_0.5"):
            np.testing.assert_array_equal(res[key], res_u8[key])
    assert res_u8["dice_at_0.5"] == 1.0
    with pytest.raises(ValueError, match="0 and 1"):
        evaluate_image(pred, np.array([[0, 2], [0, 1]], dtype=np.int64))


def test_resize_path_uint8_and_float() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((6, 8), dtype=np.uint8)
    gt[1:4, 2:6] = 255
    pred = rng.integers(0, 256, size=(12, 16), dtype=np.uint8)  # twice the GT size
    expected_pil = np.asarray(Image.fromarray(pred).resize((8, 6), Image.BICUBIC))
    res = evaluate_image(pred, gt)
    ref = evaluate_image(expected_pil, gt)
    for key in ("dice", "sensitivity", "specificity", "e_measure", "s_measure", "mae", "dice_at_0.5"):
        np.testing.assert_array_equal(res[key], ref[key])

    pred_f = pred.astype(np.float64) / 255
    expected_sk = np.clip(resize(pred_f, (6, 8), order=3, preserve_range=True), 0, 1)
    res_f = evaluate_image(pred_f, gt)
    ref_f = evaluate_image(expected_sk, gt)
    for key in ("dice", "e_measure", "s_measure", "mae"):
        np.testing.assert_allclose(res_f[key], ref_f[key], rtol=1e-12)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_image(np.array([[-1.0, 2.0]]), np.array([[0, 1]], dtype=bool))
    with pytest.raises(TypeError):
        evaluate_image(np.array([[1, 2]], dtype=np.int32), np.array([[0, 1]], dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        threshold_curves(np.zeros((2, 2)), np.zeros((2, 3), dtype=bool))


def test_dice_iou_at_half() -> None:
    empty = np.zeros((3, 3), dtype=bool)
    assert dice_iou_at_threshold(np.full((3, 3), 0.2), empty) == (1.0, 1.0)
    assert dice_iou_at_threshold(np.full((3, 3), 0.5), empty) == (0.0, 0.0)  # 0.5 >= 0.5 is positive
    gt = np.zeros((3, 3), dtype=bool)
    gt[0, :] = True
    gt[1, 0] = True  # |G| = 4
    assert dice_iou_at_threshold(np.zeros((3, 3)), gt) == (0.0, 0.0)
    pred = np.zeros((3, 3))
    pred[0, :2] = 0.9
    pred[2, 2] = 0.5  # |P| = 3, TP = 2
    dice, iou = dice_iou_at_threshold(pred, gt)
    assert dice == pytest.approx(2 * 2 / (3 + 4)) and iou == pytest.approx(2 / (3 + 4 - 2))

    # accumulator: the 0.5 figures are computed before min-max normalisation
    acc = PaperMetricAccumulator()
    acc.update(np.full((3, 3), 0.2), empty)  # normalised to zeros; 0.2 < 0.5 -> empty: 1.0
    acc.update(pred, gt)
    agg = acc.aggregate()
    assert agg["dice_at_0.5"] == pytest.approx((1.0 + 4 / 7) / 2)
    assert agg["iou_at_0.5"] == pytest.approx((1.0 + 2 / 5) / 2)


def test_accumulator_aggregation() -> None:
    acc = PaperMetricAccumulator()
    with pytest.raises(RuntimeError):
        acc.aggregate()
    gt_perfect = np.zeros((4, 4), dtype=bool)
    gt_perfect[1:3, 1:3] = True
    acc.update(gt_perfect.astype(np.float64), gt_perfect)
    acc.update(PRED_4x4, GT_4x4)
    assert len(acc) == 2
    # update() min-max normalises with eps = 1e-8: 1.0 -> 1/(1 + 1e-8) < t_0 = 1, 0.5 -> just below 0.5, which
    # lies between t_127 = 128/255 and t_128 = 127/255. Mean Dice curve of image 1: (t_0: 0, 254 x 1, 0.4);
    # image 2: (t_0: 0, 127 x 0.75, 127 x 1, 10/21)
    dice_curve = (
        piecewise((1, 0.0), (254, 1.0), (1, 0.4)) + piecewise((1, 0.0), (127, 0.75), (127, 1.0), (1, 10 / 21))
    ) / 2
    np.testing.assert_allclose(acc.curves()["dice"], dice_curve)
    agg = acc.aggregate()
    assert agg["num_images"] == 2
    assert agg["dice"] == pytest.approx(dice_curve.mean())
    assert agg["dice_max"] == pytest.approx(1.0)
    # image 1 at t_0: FM empty, a = 0 -> 4 / 15
    e_curve = (piecewise((1, 4 / 15), (254, 16 / 15), (1, 4 / 15)) + acc.records()[1, 3 * NUM_T : 4 * NUM_T]) / 2
    assert agg["e_measure"] == pytest.approx(e_curve.mean())
    assert agg["e_measure_max"] == pytest.approx(16 / 15)
    assert agg["mae"] == pytest.approx((0.0 + 1 / 16) / 2)
    expected_keys = {
        "dice", "dice_max", "sensitivity", "specificity", "s_measure", "e_measure", "e_measure_max", "mae",
        "dice_at_0.5", "iou_at_0.5", "num_images",
    }  # fmt: skip
    assert set(agg) == expected_keys

    other = PaperMetricAccumulator()
    other.extend_records(acc.records())
    assert other.aggregate() == agg
    acc.reset()
    assert len(acc) == 0


def _write_png(path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def test_evaluate_folders(tmp_path) -> None:
    rng = np.random.default_rng(1)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gts = {"1": np.zeros((8, 8), dtype=np.uint8), "2": np.zeros((8, 8), dtype=np.uint8)}
    gts["1"][2:5, 2:6] = 255
    gts["2"][4:8, 0:3] = 255
    preds = {"1": rng.integers(0, 256, (8, 8)), "2": rng.integers(0, 256, (16, 16))}  # "2" gets resized
    for stem in gts:
        _write_png(gt_dir / f"{stem}.png", gts[stem])
        _write_png(pred_dir / f"{stem}.png", preds[stem])
    (gt_dir / "notes.txt").write_text("not an image")
    _write_png(pred_dir / "extra.png", preds["1"])  # prediction without GT: ignored

    acc = PaperMetricAccumulator()
    for stem in ("1", "2"):
        acc.update(preds[stem].astype(np.uint8), gts[stem])
    result = evaluate_folders(pred_dir, gt_dir)
    assert result == acc.aggregate()
    assert result["num_images"] == 2

    assert main([str(pred_dir), str(gt_dir)]) == result

    _write_png(gt_dir / "3.png", gts["1"])
    with pytest.raises(FileNotFoundError, match=r"3\.png"):
        evaluate_folders(pred_dir, gt_dir)


def test_cli_module(tmp_path) -> None:
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[1:3, 1:3] = 255
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        _write_png(tmp_path / folder / "a.png", gt)
    proc = subprocess.run(
        [sys.executable, "-m", "infnet_monai.metrics.paper", str(tmp_path / "pred"), str(tmp_path / "gt")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Warning" not in proc.stderr  # no runpy double-import warning (lazy package imports)
    out = json.loads(proc.stdout)
    assert out["num_images"] == 1
    # perfect 8-bit prediction: normalised foreground is 1/(1 + 1e-8) < 1, so t = 1 selects nothing (dice 0),
    # t in (0, 254/255] selects G (dice 1), t = 0 selects all (2 * 4 / 20)
    assert out["dice"] == pytest.approx((254 * 1.0 + 0.4) / 256)
    assert out["dice_at_0.5"] == 1.0


def test_mask_dice_on_volumes_and_label_maps():
    from infnet_monai.metrics.paper import mask_dice

    a = np.zeros((4, 5, 3), dtype=np.uint8)
    b = np.zeros((4, 5, 3), dtype=np.uint8)
    assert mask_dice(a, b) == 1.0  # both empty
    a[0, :2, 0] = 1  # 2 voxels
    assert mask_dice(a, b) == 0.0
    b[0, 1:4, 0] = 2  # 3 voxels of label 2, 1 shared: 2 * 1 / (2 + 3)
    assert mask_dice(a, b) == pytest.approx(0.4)
    assert mask_dice(a.astype(bool), b) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="same shape"):
        mask_dice(a, b[..., :2])
