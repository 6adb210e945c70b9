# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
The 2D evaluation protocol of Inf-Net (Fan et al., IEEE TMI 2020) for lung infection segmentation.

The protocol follows the paper's public evaluation tool:

- Ground truth: ``gt > 128`` for 8-bit masks (``> 0.5`` for float masks).
- Prediction: an 8-bit map; resized bicubically to the ground-truth size when the sizes differ, divided by 255
  and min-max normalised per image, ``(p - min) / (max - min + 1e-8)`` (a constant map becomes all zeros).
- 256 thresholds ``t_k = (255 - k) / 255``, ``k = 0..255`` (from 1 down to 0); a pixel is positive when
  ``p >= t_k``. Per threshold: Dice, sensitivity, specificity (all three set to 0 when there is no true positive)
  and the E-measure (enhanced-alignment measure, Fan et al., IJCAI 2018) of the binarised map.
- The per-image curves are averaged over images; the reported "mean" figure of a metric is the mean of that
  256-point curve ("max" is its maximum).
- S-measure (structure measure, Fan et al., ICCV 2017, ``alpha = 0.5``) and MAE on the continuous normalised map,
  averaged over images.

Choices made where the protocol leaves room (documented in the functions as well):

- The ``eps`` of the E-measure and S-measure formulas is the float64 machine epsilon (MATLAB's ``eps``).
- Specificity is 0 when an image has no negative pixel (full ground truth), where ``TN / (TN + FP)`` is undefined.
- The S-measure centroid is rounded half away from zero (MATLAB ``round``); a quadrant of the region split that
  is empty (zero area, hence zero weight) contributes 0.
- The object score uses the sample standard deviation (``ddof=1``); it is 0 for a single pixel (as MATLAB's
  ``std`` of a scalar).

This module holds the per-image maths (:func:`evaluate_image`);
:class:`~infnet_monai.metrics.accumulator.PaperMetricAccumulator` averages the results over images as the paper does,
and :func:`~infnet_monai.metrics.folders.evaluate_folders` evaluates a folder pair. ``python -m infnet_monai.metrics.paper PRED_DIR GT_DIR`` (or ``... metrics.folders``) prints
the aggregate metrics of a folder pair as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from infnet_monai.utils.deprecation import moved_names

__all__ = [
    "PAPER_THRESHOLDS",
    "CURVE_KEYS",
    "SCALAR_KEYS",
    "normalize_prediction",
    "threshold_curves",
    "e_measure",
    "s_measure",
    "mean_absolute_error",
    "dice_iou_at_threshold",
    "mask_dice",
    "evaluate_image",
]

MOVED_NAMES = {
    "PaperMetricAccumulator": "infnet_monai.metrics.accumulator.PaperMetricAccumulator",
    "evaluate_folders": "infnet_monai.metrics.folders.evaluate_folders",
    "main": "infnet_monai.metrics.folders.main",
}
"""Names that this module held in 0.10.0 -> where they are now."""

__getattr__ = moved_names(__name__, MOVED_NAMES)

PAPER_THRESHOLDS: np.ndarray = np.arange(255, -1, -1, dtype=np.float64) / 255.0
"""The 256 thresholds of the protocol, ``(255 - k) / 255`` for ``k = 0..255`` (1.0 first, 0.0 last)."""
PAPER_THRESHOLDS.setflags(write=False)

CURVE_KEYS: tuple[str, ...] = ("dice", "sensitivity", "specificity", "e_measure")
"""Per-threshold metrics returned by :func:`threshold_curves` (each of shape ``(256,)``)."""

SCALAR_KEYS: tuple[str, ...] = ("s_measure", "mae", "dice_at_0.5", "iou_at_0.5")
"""Per-image scalar metrics returned by :func:`evaluate_image` next to the curves."""

_NORMALIZE_EPS = 1e-8
_EPS = float(np.finfo(np.float64).eps)  # MATLAB ``eps``, used inside the E-measure and S-measure formulas


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}.")
    if pred.size == 0:
        raise ValueError("pred and gt must not be empty.")


def _as_float_map(pred: Any) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    if pred.size == 0:
        raise ValueError("pred must not be empty.")
    if not np.all(np.isfinite(pred)):
        raise ValueError("pred contains NaN or infinite values.")
    return pred


def _as_bool_mask(gt: Any) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.dtype != np.bool_:
        raise TypeError(f"gt must be a boolean array here, got dtype {gt.dtype}.")
    return gt


def _binarize_gt(gt: Any) -> np.ndarray:
    """Ground-truth rule of the protocol: bool as is, uint8 ``> 128``, float ``> 0.5``, other ints must be 0/1."""
    gt = np.asarray(gt)
    if gt.dtype == np.bool_:
        return gt
    if gt.dtype == np.uint8:
        return gt > 128
    if np.issubdtype(gt.dtype, np.floating):
        return gt > 0.5
    if np.issubdtype(gt.dtype, np.integer):
        if gt.size and (gt.min() < 0 or gt.max() > 1):
            raise ValueError(
                f"integer ground truth of dtype {gt.dtype} must hold only 0 and 1 (8-bit masks must be uint8, "
                f"binarised as > 128); got values in [{gt.min()}, {gt.max()}]."
            )
        return gt > 0
    raise TypeError(f"unsupported ground-truth dtype {gt.dtype}; expected bool, uint8, another integer or float.")


def normalize_prediction(pred: np.ndarray, eps: float = _NORMALIZE_EPS) -> np.ndarray:
    """
    Min-max normalise one prediction map, ``(p - min) / (max - min + eps)``, in float64.

    A constant map becomes all zeros (also with ``eps=0``).

    Args:
        pred: prediction map of any shape (typically ``(H, W)``), values in ``[0, 1]``.
        eps: stabiliser added to the range; the protocol uses ``1e-8``. ``eps=0`` gives MATLAB's ``mapminmax``.

    Returns:
        float64 array of the same shape, values in ``[0, 1)`` (``[0, 1]`` when ``eps=0``).
    """
    pred = _as_float_map(pred)
    low, high = pred.min(), pred.max()
    if high == low:
        return np.zeros_like(pred)
    return (pred - low) / (high - low + eps)


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of entries of ``sorted_values`` (ascending) that are ``>= t`` for every ``t`` of ``thresholds``."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _e_measure_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray, num_gt: int, numel: int
) -> np.ndarray:
    """
    E-measure of binary maps given their confusion counts (vectorised over thresholds).

    For binary maps the enhanced-alignment matrix only takes four values, one per (prediction, gt) pair,
    so ``sum(enhanced)`` is the count-weighted sum of these four values.
    """
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    num_pos = tp + fp
    mean_fm = num_pos / numel
    if num_gt == 0:
        return 1.0 - mean_fm
    if num_gt == numel:
        return mean_fm
    mean_gt = num_gt / numel

    def enhanced(fm_value: float, gt_value: float) -> np.ndarray:
        a = fm_value - mean_fm
        b = gt_value - mean_gt
        align = 2.0 * a * b / (a * a + b * b + _EPS)
        return (align + 1.0) ** 2 / 4.0

    total = tp * enhanced(1.0, 1.0) + fp * enhanced(1.0, 0.0) + fn * enhanced(0.0, 1.0) + tn * enhanced(0.0, 0.0)
    return total / (numel - 1 + _EPS)


def threshold_curves(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """
    Per-threshold Dice, sensitivity, specificity and E-measure of one image over :data:`PAPER_THRESHOLDS`.

    At threshold ``t`` a pixel is positive when ``pred >= t`` (so ``t = 0`` marks every pixel positive). With
    ``TP, FP, TN, FN`` the confusion counts, ``|G|`` the ground-truth size and ``|P| = TP + FP``:

    - Dice ``= 2 TP / (|G| + |P|)``, sensitivity ``= TP / |G|``, specificity ``= TN / (TN + FP)``;
      all three are 0 when ``TP = 0``; specificity is also 0 when the image has no negative pixel.
    - E-measure of the binarised map, see :func:`e_measure` (computed here in closed form from the counts).

    The counts for all thresholds come from one sort of the map, so the cost is ``O(N log N)`` per image.

    Args:
        pred: normalised prediction map in ``[0, 1]``, shape ``(H, W)`` (any shape is accepted).
        gt: boolean ground truth of the same shape.

    Returns:
        dict with keys ``"dice"``, ``"sensitivity"``, ``"specificity"``, ``"e_measure"``, each a float64 array of
        shape ``(256,)`` aligned with :data:`PAPER_THRESHOLDS`.
    """
    pred = _as_float_map(pred)
    gt = _as_bool_mask(gt)
    _check_same_shape(pred, gt)
    numel = pred.size
    num_gt = int(gt.sum())

    num_pos = _count_at_least(np.sort(pred, axis=None), PAPER_THRESHOLDS)
    tp = _count_at_least(np.sort(pred[gt], axis=None), PAPER_THRESHOLDS)
    fp = num_pos - tp
    fn = num_gt - tp
    tn = numel - num_pos - fn

    has_tp = tp > 0
    tp_f = tp.astype(np.float64)
    dice = np.zeros(PAPER_THRESHOLDS.shape, dtype=np.float64)
    sensitivity = np.zeros_like(dice)
    specificity = np.zeros_like(dice)
    np.divide(2.0 * tp_f, num_gt + num_pos, out=dice, where=has_tp)
    np.divide(tp_f, float(num_gt), out=sensitivity, where=has_tp)
    negatives = (tn + fp).astype(np.float64)
    np.divide(tn.astype(np.float64), negatives, out=specificity, where=has_tp & (negatives > 0))

    return {
        "dice": dice,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "e_measure": _e_measure_from_counts(tp, fp, fn, tn, num_gt, numel),
    }


def e_measure(binary_pred: np.ndarray, gt: np.ndarray) -> float:
    """
    Enhanced-alignment measure (E-measure, Fan et al., IJCAI 2018) of one binary map.

    With ``FM`` and ``GT`` as 0/1 float maps: an all-zero ``GT`` scores ``1 - mean(FM)``, an all-one ``GT`` scores
    ``mean(FM)``; otherwise, with ``a = FM - mean(FM)``, ``b = GT - mean(GT)``,
    ``align = 2 a b / (a^2 + b^2 + eps)``, ``enhanced = (align + 1)^2 / 4`` and the score is
    ``sum(enhanced) / (numel - 1 + eps)``, ``eps`` being the float64 machine epsilon.

    Args:
        binary_pred: binary map (bool or 0/1 values), any shape, typically ``(H, W)``.
        gt: ground truth of the same shape (bool or 0/1 values).

    Returns:
        the E-measure as a float.
    """
    fm = np.asarray(binary_pred).astype(np.float64)
    gt_f = np.asarray(gt).astype(bool).astype(np.float64)
    _check_same_shape(fm, gt_f)
    mean_gt = gt_f.mean()
    if mean_gt == 0.0:
        return float(1.0 - fm.mean())
    if mean_gt == 1.0:
        return float(fm.mean())
    a = fm - fm.mean()
    b = gt_f - mean_gt
    align = 2.0 * a * b / (a * a + b * b + _EPS)
    enhanced = (align + 1.0) ** 2 / 4.0
    return float(enhanced.sum() / (fm.size - 1 + _EPS))


def _object_score(values: np.ndarray) -> float:
    """``2 mean / (mean^2 + 1 + std + eps)`` of the values inside a region (sample std, 0 for one value)."""
    mean = values.mean()
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return float(2.0 * mean / (mean * mean + 1.0 + std + _EPS))


def _s_object(pred: np.ndarray, gt: np.ndarray) -> float:
    fg_score = _object_score(pred[gt])
    bg_score = _object_score(1.0 - pred[~gt])
    ratio = gt.mean()
    return float(ratio * fg_score + (1.0 - ratio) * bg_score)


def _centroid(gt: np.ndarray) -> tuple[int, int]:
    """
    Split position ``(X, Y)`` of the region term: the ground-truth centroid in 1-based pixel coordinates.

    ``X = round(sum_j j * colsum_j / |G|) + 1`` with 0-based column indices ``j`` and rounding half away from zero
    (as MATLAB's ``round`` on 1-based indices), likewise ``Y`` with rows; the left/top parts are ``[0, X)`` and
    ``[0, Y)``. An empty ground truth gives ``(W // 2, H // 2)``.
    """
    height, width = gt.shape
    total = int(gt.sum())
    if total == 0:
        return width // 2, height // 2
    col_num = int(np.dot(np.arange(width, dtype=np.int64), gt.sum(axis=0, dtype=np.int64)))
    row_num = int(np.dot(np.arange(height, dtype=np.int64), gt.sum(axis=1, dtype=np.int64)))
    # floor(num / total + 1/2) in exact integer arithmetic
    x = (2 * col_num + total) // (2 * total)
    y = (2 * row_num + total) // (2 * total)
    return x + 1, y + 1


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity of one quadrant (the SSIM-like term of the S-measure); 0 for an empty quadrant."""
    n = pred.size
    if n == 0:
        return 0.0
    gt_f = gt.astype(np.float64)
    x = pred.mean()
    y = gt_f.mean()
    dx = pred - x
    dy = gt_f - y
    sigma_x2 = (dx * dx).sum() / (n - 1 + _EPS)
    sigma_y2 = (dy * dy).sum() / (n - 1 + _EPS)
    sigma_xy = (dx * dy).sum() / (n - 1 + _EPS)
    alpha = 4.0 * x * y * sigma_xy
    beta = (x * x + y * y) * (sigma_x2 + sigma_y2)
    if alpha != 0.0:
        return float(alpha / (beta + _EPS))
    if beta == 0.0:
        return 1.0
    return 0.0


def _s_region(pred: np.ndarray, gt: np.ndarray) -> float:
    height, width = gt.shape
    x, y = _centroid(gt)
    area = float(height * width)
    w1 = x * y / area
    w2 = (width - x) * y / area
    w3 = x * (height - y) / area
    w4 = 1.0 - w1 - w2 - w3
    quadrants = (
        (w1, (slice(0, y), slice(0, x))),
        (w2, (slice(0, y), slice(x, width))),
        (w3, (slice(y, height), slice(0, x))),
        (w4, (slice(y, height), slice(x, width))),
    )
    return float(sum(w * _ssim(pred[idx], gt[idx]) for w, idx in quadrants))


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """
    Structure measure (S-measure, Fan et al., ICCV 2017) of a continuous map against a binary ground truth.

    With ``y = mean(GT)``: ``y = 0`` gives ``1 - mean(pred)``, ``y = 1`` gives ``mean(pred)``, otherwise
    ``max(alpha * S_object + (1 - alpha) * S_region, 0)``.

    - ``S_object = y * O(pred on GT) + (1 - y) * O(1 - pred on ~GT)`` with the object score
      ``O(x) = 2 mean(x) / (mean(x)^2 + 1 + std(x) + eps)`` (sample std, ``ddof=1``; 0 for a single pixel).
    - ``S_region``: both maps are split into four quadrants at the ground-truth centroid (see :func:`_centroid`),
      each quadrant weighted by its area fraction and scored by an SSIM-like term with ``(N - 1 + eps)``
      normalised (co)variances; an empty quadrant (weight 0) contributes 0.

    ``eps`` is the float64 machine epsilon.

    Args:
        pred: normalised prediction map in ``[0, 1]``, shape ``(H, W)``.
        gt: boolean ground truth, shape ``(H, W)``.
        alpha: balance between the object term and the region term.

    Returns:
        the S-measure as a float.
    """
    pred = _as_float_map(pred)
    gt = _as_bool_mask(gt)
    _check_same_shape(pred, gt)
    if pred.ndim != 2:
        raise ValueError(f"s_measure expects 2D maps (H, W), got shape {pred.shape}.")
    ratio = gt.mean()
    if ratio == 0.0:
        return float(1.0 - pred.mean())
    if ratio == 1.0:
        return float(pred.mean())
    score = alpha * _s_object(pred, gt) + (1.0 - alpha) * _s_region(pred, gt)
    return float(max(score, 0.0))


def mean_absolute_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """
    Mean absolute error between a continuous map and a binary ground truth.

    Args:
        pred: prediction map in ``[0, 1]``, any shape.
        gt: ground truth of the same shape (bool or 0/1 values).

    Returns:
        ``mean(|pred - gt|)`` as a float.
    """
    pred = _as_float_map(pred)
    gt_f = np.asarray(gt).astype(bool).astype(np.float64)
    _check_same_shape(pred, gt_f)
    return float(np.abs(pred - gt_f).mean())


def dice_iou_at_threshold(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """
    Plain Dice and IoU of ``pred >= threshold`` against the ground truth of one image.

    When the ground truth and the thresholded prediction are both empty, Dice and IoU are defined as 1.0;
    an empty ground truth with a non-empty prediction (or the reverse) gives 0.0.

    Args:
        pred: probability map (not min-max normalised), any shape.
        gt: boolean ground truth of the same shape.
        threshold: a pixel is positive when ``pred >= threshold``.

    Returns:
        ``(dice, iou)`` as floats.
    """
    pred = _as_float_map(pred)
    gt = _as_bool_mask(gt)
    _check_same_shape(pred, gt)
    return _dice_iou(pred >= threshold, gt)


def _dice_iou(positive: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean masks of one shape; both 1.0 when both are empty."""
    tp = int(np.count_nonzero(positive & gt))
    total = int(np.count_nonzero(positive)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0, 1.0
    return 2.0 * tp / total, tp / (total - tp)


def mask_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two masks of any dimension (2D slices, 3D volumes); values > 0 are foreground, so label maps (e.g.
    1 right and 2 left lung) count as one foreground. 1.0 when both are empty, 0.0 when only one is.

    Raises:
        ValueError: the shapes differ, or the masks are empty arrays.
    """
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    _check_same_shape(pred, gt)
    return _dice_iou(pred, gt)[0]


def _prepare_prediction(pred: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Bring a uint8 (0..255) or float (0..1) map to float64 ``[0, 1]`` at ``shape`` (bicubic when resized)."""
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"pred must be a 2D map (H, W), got shape {pred.shape}.")
    if pred.dtype == np.uint8:
        if pred.shape != shape:
            resample = getattr(Image, "Resampling", Image).BICUBIC
            image = Image.fromarray(np.ascontiguousarray(pred))
            pred = np.asarray(image.resize((shape[1], shape[0]), resample=resample))
        return pred.astype(np.float64) / 255.0
    if pred.dtype == np.bool_:
        pred = pred.astype(np.float64)
    if not np.issubdtype(pred.dtype, np.floating):
        raise TypeError(f"pred must be uint8 (0..255) or float (0..1), got dtype {pred.dtype}.")
    pred = _as_float_map(pred)
    if pred.min() < 0.0 or pred.max() > 1.0:
        raise ValueError(
            f"float pred must hold probabilities in [0, 1] (apply a sigmoid to logits first), "
            f"got values in [{pred.min()}, {pred.max()}]."
        )
    if pred.shape != shape:
        from skimage.transform import resize  # lazy: skimage import is slow

        pred = np.clip(resize(pred, shape, order=3, preserve_range=True), 0.0, 1.0)
    return pred


def evaluate_image(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """
    Evaluate one prediction map against its ground truth with the paper's protocol.

    Steps: binarise the ground truth (bool as is, uint8 ``> 128``, float ``> 0.5``, other integer masks must be
    0/1); bring the prediction to ``[0, 1]`` (uint8 is divided by 255, float must already be in ``[0, 1]``),
    resizing it to the ground-truth size with bicubic interpolation when the sizes differ (PIL on the 8-bit image
    for uint8, like the reference reading an 8-bit PNG; ``skimage.transform.resize(order=3)`` clipped to
    ``[0, 1]`` for float); min-max normalise it (:func:`normalize_prediction`) and compute the metrics.

    Args:
        pred: prediction map of shape ``(H', W')``, uint8 in ``0..255`` or float probabilities in ``[0, 1]``.
        gt: ground-truth mask of shape ``(H, W)``.

    Returns:
        dict with the four ``(256,)`` curves of :func:`threshold_curves` (``"dice"``, ``"sensitivity"``,
        ``"specificity"``, ``"e_measure"``) and the floats ``"s_measure"``, ``"mae"`` (both on the normalised
        map), ``"dice_at_0.5"`` and ``"iou_at_0.5"`` (on the map before normalisation, see
        :func:`dice_iou_at_threshold`).
    """
    gt_mask = _binarize_gt(gt)
    if gt_mask.ndim != 2:
        raise ValueError(f"gt must be a 2D mask (H, W), got shape {gt_mask.shape}.")
    if gt_mask.size == 0:
        raise ValueError("gt must not be empty.")
    prob = _prepare_prediction(pred, gt_mask.shape)
    normalized = normalize_prediction(prob)
    result: dict[str, Any] = dict(threshold_curves(normalized, gt_mask))
    result["s_measure"] = s_measure(normalized, gt_mask)
    result["mae"] = mean_absolute_error(normalized, gt_mask)
    result["dice_at_0.5"], result["iou_at_0.5"] = dice_iou_at_threshold(prob, gt_mask, 0.5)
    return result


if __name__ == "__main__":  # the documented command: python -m infnet_monai.metrics.paper PRED_DIR GT_DIR
    from infnet_monai.metrics.folders import main

    main()
