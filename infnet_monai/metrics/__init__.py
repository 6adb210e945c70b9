# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Evaluation metrics: the Inf-Net paper protocol (:mod:`.paper`, numpy: one image; :mod:`.accumulator`: the mean over
images; :mod:`.folders`: a folder pair and its command line) and its ignite wrappers (:mod:`.ignite`).

The names are imported lazily so that ``python -m infnet_monai.metrics.paper`` runs cleanly and importing the
numpy metrics does not pull in torch/ignite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infnet_monai.utils.lazy import lazy_names

if TYPE_CHECKING:
    from .accumulator import PaperMetricAccumulator
    from .folders import evaluate_folders
    from .ignite import ClassPaperDice, PaperDice, PaperMetrics
    from .paper import (
        CURVE_KEYS,
        PAPER_THRESHOLDS,
        SCALAR_KEYS,
        dice_iou_at_threshold,
        e_measure,
        evaluate_image,
        mask_dice,
        mean_absolute_error,
        normalize_prediction,
        s_measure,
        threshold_curves,
    )

__all__, __getattr__, __dir__ = lazy_names(
    __name__,
    {
        "paper": (
            "CURVE_KEYS",
            "PAPER_THRESHOLDS",
            "SCALAR_KEYS",
            "dice_iou_at_threshold",
            "e_measure",
            "evaluate_image",
            "mask_dice",
            "mean_absolute_error",
            "normalize_prediction",
            "s_measure",
            "threshold_curves",
        ),
        "accumulator": ("PaperMetricAccumulator",),
        "folders": ("evaluate_folders",),
        "ignite": ("PaperMetrics", "PaperDice", "ClassPaperDice"),
    },
)
