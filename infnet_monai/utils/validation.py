"""Validation of user-facing numeric arguments."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["check_spacing_mm", "check_temperature"]


def check_spacing_mm(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    """Return ``spacing_mm`` as 3 floats; raise ``ValueError`` unless they are 3 positive finite sizes in mm."""
    try:
        spacing = tuple(float(s) for s in spacing_mm)
    except TypeError as err:
        raise ValueError(f"spacing_mm must be a sequence of 3 numbers (mm), got {spacing_mm!r}.") from err
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must hold 3 positive finite voxel sizes in mm, got {spacing_mm!r}.")
    return spacing  # type: ignore[return-value]


def check_temperature(temperature: float) -> float:
    """Return a logit temperature as a float; raise ``ValueError`` unless it is a finite number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    return float(temperature)
