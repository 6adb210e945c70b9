"""Choosing the logit temperature of a trained model on labeled slices.

The network predicts logits ``z``; the inferers report ``sigmoid(z / T)``. ``T`` does not move the 0.5 boundary, so
masks at 0.5 are unchanged, but it changes how decisive the probability map is. The paper's protocol averages Dice,
sensitivity, specificity and E-measure over 256 thresholds of the min-max normalised map, so a map that hesitates
(values spread between 0 and 1 around lesions and in the background) scores below the same map made decisive. The
temperature is chosen on a validation split: the largest ``T`` (least sharpening) whose mean Dice is within
``tolerance`` of the best in the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from infnet_monai.inferers.slices import SlicePredictor, resolve_temperature
from infnet_monai.metrics.paper import PaperMetricAccumulator

__all__ = ["DEFAULT_TEMPERATURES", "temperature_sweep", "choose_temperature"]

DEFAULT_TEMPERATURES: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625)
"""Temperatures tried by default, from the raw sigmoid down to a 16-fold logit scale."""


def temperature_sweep(
    predictor: SlicePredictor,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
) -> list[dict[str, float]]:
    """The paper's metrics of ``predictor`` on 8-bit slices for each temperature, through the 8-bit output maps.

    Args:
        predictor: the model to calibrate; its temperature is restored afterwards.
        images: 8-bit slices ``(H_i, W_i)``.
        masks: their ground truth (8-bit, infection > 128), same sizes.
        temperatures: values to try (each > 0).

    Returns:
        one row per temperature, in the given order: ``{"temperature": T, "dice": ..., "s_measure": ..., ...}``.
    """
    if len(images) != len(masks) or not images:
        raise ValueError(f"need the same, non-zero number of images and masks, got {len(images)} and {len(masks)}.")
    temperatures = [resolve_temperature(t) for t in temperatures]
    if not temperatures:
        raise ValueError("temperatures must not be empty.")
    saved = predictor.temperature
    rows = []
    try:
        for t in temperatures:
            predictor.temperature = t
            acc = PaperMetricAccumulator()
            for image, mask in zip(images, masks):
                acc.update(predictor.predict_uint8([image])[0], mask)
            row = {"temperature": t}
            row.update({k: float(v) for k, v in acc.aggregate().items()})
            rows.append(row)
    finally:
        predictor.temperature = saved
    return rows


def choose_temperature(rows: Sequence[dict[str, float]], tolerance: float = 0.005, key: str = "dice") -> float:
    """The largest temperature whose ``key`` is within ``tolerance`` of the best row (least sharpening that pays).

    Raises:
        ValueError: ``rows`` is empty or ``tolerance`` is negative.
    """
    if not rows:
        raise ValueError("no sweep rows to choose from.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    best = max(float(r[key]) for r in rows)
    return max(float(r["temperature"]) for r in rows if float(r[key]) >= best - tolerance)
