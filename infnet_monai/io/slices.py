"""Reading and writing 2D CT slice images (8-bit, lung-windowed PNG / JPG), as ``predict-slices`` and the
semi-supervised propagation do.

A slice is read as a numpy ``(rows, columns)`` array (PIL's layout, not transposed); for COVID-SemiSeg slices the
rows run along the patient's right-left axis (see :mod:`infnet_monai.inferers.probability`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from infnet_monai.utils.files import atomic_write

__all__ = ["read_slice", "write_png_atomic"]


def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit single-channel PNG through a temporary file renamed into place (no half-written files)."""
    atomic_write(path, lambda tmp: Image.fromarray(array, mode="L").save(tmp, format="PNG"))


def read_slice(path: Path) -> np.ndarray:
    """An 8-bit grey slice as a ``(H, W)`` uint8 array (colour images are converted to grey).

    Raises:
        ValueError: the file is not a readable image, not 2D and at least 2x2, or not 8-bit (the message names it).
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "I;16", "I", "F"):
                im = im.convert("L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"'{path}' is not a readable image ({e}); remove it or replace it with a valid PNG/JPG.") from e
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"'{path}' has shape {arr.shape}; expected a 2D grey slice of at least 2x2 pixels.")
    if arr.dtype != np.uint8:
        raise ValueError(
            f"'{path}' is a {arr.dtype} image; predict-slices expects 8-bit lung-windowed slices "
            "(use `infnet-covid segment` for CT volumes in Hounsfield units)."
        )
    return arr
