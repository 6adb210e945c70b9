# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""The mean over images of the Inf-Net paper protocol's per-image results (:mod:`infnet_monai.metrics.paper`).

:class:`PaperMetricAccumulator` keeps one row per image and aggregates them as the paper does: the per-threshold
curves are averaged over images, and a metric's "mean" figure is the mean of its 256-point curve ("max" its
maximum); the scalar metrics are averaged over images. Rows gathered from several processes merge with
:meth:`PaperMetricAccumulator.extend_records` (the ignite metrics of :mod:`infnet_monai.metrics.ignite` do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from infnet_monai.metrics.paper import CURVE_KEYS, PAPER_THRESHOLDS, SCALAR_KEYS, evaluate_image

__all__ = ["PaperMetricAccumulator"]


class PaperMetricAccumulator:
    """
    Accumulate per-image results of :func:`evaluate_image` and aggregate them as the paper does.

    Example::

        acc = PaperMetricAccumulator()
        for pred, gt in pairs:  # numpy arrays, one image each
            acc.update(pred, gt)
        metrics = acc.aggregate()  # {"dice": ..., "s_measure": ..., ...}

    The per-image results are kept as rows of ``4 * 256 + 4`` float64 values (the four curves then
    ``SCALAR_KEYS``), see :meth:`records`, so that results gathered from several processes can be merged with
    :meth:`extend_records`.
    """

    record_size: int = len(CURVE_KEYS) * PAPER_THRESHOLDS.size + len(SCALAR_KEYS)

    def __init__(self) -> None:
        self._records: list[np.ndarray] = []

    def reset(self) -> None:
        """Forget all accumulated images."""
        self._records = []

    def __len__(self) -> int:
        return len(self._records)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
        """
        Evaluate one image with :func:`evaluate_image` and accumulate the result.

        Args:
            pred: prediction map ``(H', W')``, uint8 ``0..255`` or float probabilities in ``[0, 1]``.
            gt: ground-truth mask ``(H, W)`` (bool, uint8 ``> 128``, float ``> 0.5``).

        Returns:
            the per-image result of :func:`evaluate_image`.
        """
        result = evaluate_image(pred, gt)
        self.add_result(result)
        return result

    def add_result(self, result: Mapping[str, Any]) -> None:
        """
        Accumulate an already computed per-image result (a mapping holding ``CURVE_KEYS`` and ``SCALAR_KEYS``).

        Args:
            result: per-image result as returned by :func:`evaluate_image`.
        """
        missing = [k for k in (*CURVE_KEYS, *SCALAR_KEYS) if k not in result]
        if missing:
            raise KeyError(f"result is missing the keys {missing}.")
        parts = [np.asarray(result[k], dtype=np.float64).reshape(-1) for k in CURVE_KEYS]
        for key, part in zip(CURVE_KEYS, parts):
            if part.size != PAPER_THRESHOLDS.size:
                raise ValueError(f"curve {key!r} must have {PAPER_THRESHOLDS.size} values, got {part.size}.")
        parts.append(np.asarray([float(result[k]) for k in SCALAR_KEYS], dtype=np.float64))
        self._records.append(np.concatenate(parts))

    def records(self) -> np.ndarray:
        """
        Returns:
            the per-image results as a float64 array of shape ``(num_images, record_size)``: the four curves
            (``CURVE_KEYS`` order, 256 values each) followed by the ``SCALAR_KEYS`` values.
        """
        if not self._records:
            return np.zeros((0, self.record_size), dtype=np.float64)
        return np.stack(self._records)

    def extend_records(self, records: np.ndarray) -> None:
        """
        Append rows produced by :meth:`records` (e.g. gathered from other processes).

        Args:
            records: array of shape ``(num_images, record_size)``.
        """
        records = np.asarray(records, dtype=np.float64)
        if records.ndim != 2 or records.shape[1] != self.record_size:
            raise ValueError(f"records must have shape (N, {self.record_size}), got {records.shape}.")
        self._records.extend(np.array(row) for row in records)

    def _check_not_empty(self) -> None:
        if not self._records:
            raise RuntimeError("PaperMetricAccumulator has no image; call update() before aggregating.")

    def curves(self) -> dict[str, np.ndarray]:
        """
        Returns:
            the mean over images of each per-threshold curve: keys ``CURVE_KEYS``, arrays of shape ``(256,)``
            aligned with :data:`PAPER_THRESHOLDS`.
        """
        self._check_not_empty()
        n = PAPER_THRESHOLDS.size
        mean = self.records().mean(axis=0)
        return {key: mean[i * n : (i + 1) * n] for i, key in enumerate(CURVE_KEYS)}

    def aggregate(self) -> dict[str, float]:
        """
        Returns:
            dict with the paper's figures: ``dice``, ``sensitivity``, ``specificity``, ``e_measure`` (means of the
            mean curves), ``dice_max``, ``e_measure_max`` (maxima of the mean curves), ``s_measure``, ``mae``,
            ``dice_at_0.5``, ``iou_at_0.5`` (means over images) and ``num_images`` (an int).
        """
        self._check_not_empty()
        curves = self.curves()
        scalars = self.records()[:, len(CURVE_KEYS) * PAPER_THRESHOLDS.size :].mean(axis=0)
        scalar = dict(zip(SCALAR_KEYS, scalars))
        return {
            "dice": float(curves["dice"].mean()),
            "dice_max": float(curves["dice"].max()),
            "sensitivity": float(curves["sensitivity"].mean()),
            "specificity": float(curves["specificity"].mean()),
            "s_measure": float(scalar["s_measure"]),
            "e_measure": float(curves["e_measure"].mean()),
            "e_measure_max": float(curves["e_measure"].max()),
            "mae": float(scalar["mae"]),
            "dice_at_0.5": float(scalar["dice_at_0.5"]),
            "iou_at_0.5": float(scalar["iou_at_0.5"]),
            "num_images": len(self._records),
        }
