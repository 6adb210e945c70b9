# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""
Evaluation metrics: the Inf-Net paper protocol (:mod:`.paper`, numpy) and its ignite wrappers (:mod:`.ignite`).

The names are imported lazily so that ``python -m infnet_monai.metrics.paper`` runs cleanly and importing the
numpy metrics does not pull in torch/ignite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ignite import ClassPaperDice, PaperDice, PaperMetrics
    from .paper import (
        CURVE_KEYS,
        PAPER_THRESHOLDS,
        SCALAR_KEYS,
        PaperMetricAccumulator,
        dice_iou_at_threshold,
        e_measure,
        evaluate_folders,
        evaluate_image,
        mean_absolute_error,
        normalize_prediction,
        s_measure,
        threshold_curves,
    )

_LAZY_NAMES: dict[str, str] = {
    "CURVE_KEYS": "paper",
    "PAPER_THRESHOLDS": "paper",
    "SCALAR_KEYS": "paper",
    "PaperMetricAccumulator": "paper",
    "dice_iou_at_threshold": "paper",
    "e_measure": "paper",
    "evaluate_folders": "paper",
    "evaluate_image": "paper",
    "mean_absolute_error": "paper",
    "normalize_prediction": "paper",
    "s_measure": "paper",
    "threshold_curves": "paper",
    "PaperMetrics": "ignite",
    "PaperDice": "ignite",
    "ClassPaperDice": "ignite",
}

__all__ = list(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
