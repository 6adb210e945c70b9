"""Old import paths that keep working, with a warning, after a public name moved (house style: deprecate, don't
break)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved_names"]


def moved_names(module: str, moves: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for names that moved elsewhere.

    Using an old name warns (``FutureWarning``, as MONAI's deprecations do, so that users see it) with the new import
    and returns the object from its new home; the new module is imported only then.

    Args:
        module: the old module's ``__name__``.
        moves: old name -> dotted path of the object now, e.g. ``{"read_slice": "infnet_monai.io.slices.read_slice"}``.

    Example::

        __getattr__ = moved_names(__name__, {"predict_slice_folder": "infnet_monai.apps.slices.predict_slice_folder"})
    """

    def __getattr__(name: str) -> Any:
        target = moves.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        home, _, new_name = target.rpartition(".")
        warnings.warn(
            f"{module}.{name} is deprecated: use {target} (from {home} import {new_name}); the old path will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), new_name)

    return __getattr__
