"""Choosing the logit temperature of a trained model on labeled slices.

The network predicts logits ``z``; the inferers report ``sigmoid(z / T)``. ``T`` does not move the 0.5 boundary, so
masks at 0.5 are unchanged, but it changes how decisive the probability map is. The paper's protocol averages Dice,
sensitivity, specificity and E-measure over 256 thresholds of the min-max normalised map, so a map that hesitates
(values spread between 0 and 1 around lesions and in the background) scores below the same map made decisive. The
temperature is chosen on a validation split: the largest ``T`` (least sharpening) whose mean Dice is within
``tolerance`` of the best in the sweep.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infnet_monai.defaults import CALIBRATION_TEMPERATURES
from infnet_monai.inferers.slices import SlicePredictor
from infnet_monai.io.checkpoint import CheckpointError, resolve_temperature, save_calibrated_model
from infnet_monai.io.slices import read_slice
from infnet_monai.metrics.accumulator import PaperMetricAccumulator

__all__ = ["DEFAULT_TEMPERATURES", "SWEEP_KEYS", "calibrate_model", "choose_temperature", "temperature_sweep"]

SWEEP_KEYS: tuple[str, ...] = ("dice", "sensitivity", "specificity", "s_measure", "e_measure", "mae", "dice_at_0.5")
"""Metrics recorded per temperature in a checkpoint's calibration."""

DEFAULT_TEMPERATURES: tuple[float, ...] = CALIBRATION_TEMPERATURES
"""Temperatures tried by default (:data:`infnet_monai.defaults.CALIBRATION_TEMPERATURES`, which the command line
reads without importing torch)."""


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


def calibrate_model(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    mask_paths: Sequence[str | os.PathLike],
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    tolerance: float = 0.005,
    device: str = "auto",
    note: str = "",
) -> dict:
    """Sweep the temperature of ``model_path`` on labeled slices and write the calibrated copy ``output_path``.

    Args:
        model_path: checkpoint to calibrate (not modified).
        output_path: where the calibrated checkpoint goes (must differ from ``model_path``).
        image_paths: 8-bit slices (held out from the model's training: a validation set).
        mask_paths: their infection masks (> 128 is infection), same order and sizes.
        temperatures: values to try.
        tolerance: mean-Dice slack for preferring a larger temperature (see :func:`choose_temperature`).
        device: inference device.
        note: free text stored with the calibration (e.g. which split).

    Returns:
        the calibration written: ``temperature``, ``criterion``, ``num_slices``, ``note`` and the ``sweep`` rows.

    Raises:
        ValueError: unreadable or mismatched slices/masks.
        infnet_monai.io.CheckpointError: unusable checkpoint, or ``output_path`` is ``model_path``.
    """
    # save_calibrated_model refuses this too; checking first saves the sweep's minutes
    if Path(output_path).resolve() == Path(model_path).resolve():
        raise CheckpointError(f"'{output_path}' is the input checkpoint; write the calibrated model to another file.")
    if len(image_paths) != len(mask_paths) or not image_paths:
        raise ValueError(f"need the same, non-zero number of slices and masks, got {len(image_paths)} and {len(mask_paths)}.")
    images = [read_slice(Path(p)) for p in image_paths]
    masks = []
    for image, path in zip(images, mask_paths):
        mask = read_slice(Path(path))
        if mask.shape != image.shape:
            raise ValueError(f"mask '{path}' is {mask.shape[1]}x{mask.shape[0]}, its slice {image.shape[1]}x{image.shape[0]}.")
        masks.append(mask)
    predictor = SlicePredictor(model_path, device=device, temperature=1.0)
    rows = temperature_sweep(predictor, images, masks, temperatures)
    chosen = choose_temperature(rows, tolerance=tolerance)
    calibration = {
        "temperature": chosen,
        "criterion": f"largest temperature within {tolerance} of the best paper mean Dice",
        "num_slices": len(images),
        "note": note,
        "sweep": [{"temperature": r["temperature"], **{k: round(r[k], 4) for k in SWEEP_KEYS}} for r in rows],
    }
    save_calibrated_model(model_path, output_path, calibration)
    return calibration
