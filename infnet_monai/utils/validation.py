"""Validation of user-facing arguments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

__all__ = ["check_flag", "check_spacing_mm", "check_spatial_size", "check_temperature"]


def check_spacing_mm(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    """Return ``spacing_mm`` as 3 floats; raise ``ValueError`` unless they are 3 positive finite sizes in mm."""
    try:
        spacing = tuple(float(s) for s in spacing_mm)
    except TypeError as err:
        raise ValueError(f"spacing_mm must be a sequence of 3 numbers (mm), got {spacing_mm!r}.") from err
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must hold 3 positive finite voxel sizes in mm, got {spacing_mm!r}.")
    return spacing  # type: ignore[return-value]


def check_spatial_size(spatial_size: int | Sequence[int], spatial_dims: int = 2) -> tuple[int, ...]:
    """Return a network input size as ``spatial_dims`` ints: one number (a square or a cube) is repeated, a sequence
    is taken as it is. Checkpoints and configs store either, e.g. ``352`` or ``[352, 352]``.

    Raises:
        ValueError: not one positive whole number, nor ``spatial_dims`` of them.
    """
    try:
        values = (spatial_size,) * spatial_dims if isinstance(spatial_size, Real) else tuple(spatial_size)
    except TypeError:
        values = ()
    if len(values) != spatial_dims or not all(_is_positive_whole(v) for v in values):
        raise ValueError(f"spatial_size must be a positive int or {spatial_dims} of them, got {spatial_size!r}.")
    return tuple(int(v) for v in values)


def _is_positive_whole(value: object) -> bool:
    return (
        isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        and value >= 1 and float(value).is_integer()
    )


def check_temperature(temperature: float) -> float:
    """Return a logit temperature as a float; raise ``ValueError`` unless it is a finite number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    return float(temperature)


def check_flag(value: object, name: str) -> bool:
    """Return a yes / no option as a bool. A bundle override arrives as the word the user typed (``--resume false``
    gives the string ``"false"``, which Python would take as true), so words are read with MONAI's ``str2bool``
    (true / false, yes / no, t / f, y / n, 1 / 0, any case); anything else raises ``ValueError`` naming the option."""
    from monai.utils import str2bool

    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    try:
        return str2bool(value if isinstance(value, bool) else str(value))
    except ValueError:
        raise ValueError(f"{name} must be true or false, got {value!r}.") from None
