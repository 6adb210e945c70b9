"""Hounsfield units: whether a loaded CT holds them, the correction of raw stored values, and compact storage.

:func:`to_hounsfield` is the last step of :func:`~infnet_monai.io.volume.load_ct` (the rules are in that module's
table): NaN or infinite voxels are refused; stored values written without their rescale intercept (none below 0,
some above 1000, a histogram of air and soft tissue) have :data:`RAW_CT_OFFSET` subtracted, other values that are
not HU are refused; a volume whose values (padding aside) leave :data:`HU_PLAUSIBLE_RANGE`, or that is mostly dense
or has a dense edge, is refused; values below :data:`AIR_HU` (padding outside the field of view) are set to it.
:func:`compact_hu` stores integer HU as int16 with room for the correction. The thresholds come from the
development scans (``scripts/hu_plausibility.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from monai.data import MetaTensor

from infnet_monai.io.base_reader import CaseError

__all__ = [
    "AIR_HU",
    "RAW_CT_OFFSET",
    "INT16_HU_RANGE",
    "HU_PLAUSIBLE_RANGE",
    "HU_MAX_DENSE_FRACTION",
    "HU_MAX_EDGE_MEDIAN",
    "HU_MAX_IMPLAUSIBLE_FRACTION",
    "compact_hu",
    "to_hounsfield",
]

logger = logging.getLogger(__name__)

AIR_HU = -1024.0
"""Lowest HU kept; lower values (padding outside the scan field of view) are set to this."""
RAW_CT_OFFSET = 1024.0
"""Offset subtracted from stored values that were written without their rescale intercept."""
HU_PLAUSIBLE_RANGE = (-1100.0, 4000.0)
"""Values a CT in Hounsfield units holds, besides its padding (the volume's minimum, outside the field of view)."""
HU_MAX_DENSE_FRACTION = 0.2
"""Largest share of the voxels (padding aside) above +1000 HU accepted: dense bone and metal are a few per cent of a
CT; more is noise or wrongly scaled data (the development scans: at most 0.44 %; `scripts/hu_plausibility.py`)."""
HU_MAX_EDGE_MEDIAN = 500.0
"""Largest median (HU) of the image's edge voxels (padding aside) accepted: a CT's edge is air, fat or soft tissue
(the development scans: -1013 to -786 HU; `scripts/hu_plausibility.py`); an edge near +1000 is an inverted scale (a negative slope)."""
HU_MAX_IMPLAUSIBLE_FRACTION = 0.05
"""Largest share of the voxels (padding aside) outside :data:`HU_PLAUSIBLE_RANGE` accepted: more means the scaling
(DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter) or the stored data is wrong. The development scans have
none."""
_AIR_THRESHOLD_HU = -500.0  # a CT in HU always has voxels below this (air around the body, lungs)
_RAW_MIN_FRACTION = 0.01  # fraction of voxels in the air and in the soft-tissue ranges for a raw-value image
_RAW_MAX_DENSE_FRACTION = 0.1  # most voxels above +1000 HU (dense bone, metal) in a raw-value image; real CT: < 1 %
INT16_HU_RANGE = (-32768 + int(RAW_CT_OFFSET), 32767)
"""Integer HU kept as int16 when they lie in this range: room for the raw-value correction."""


def compact_hu(image: MetaTensor) -> MetaTensor:
    """``image`` as int16 when its values are integers in :data:`INT16_HU_RANGE` (room for the raw-value correction),
    else as float32; an int16 or float32 image is returned as it is.

    Integer Hounsfield units (the usual integer rescale slope and intercept) so take 0.6 GB for a 512 x 512 x 1200 scan
    instead of 1.3 GB (float32).
    """
    if image.dtype == torch.int16 or image.dtype == torch.float32:
        return image
    if not image.is_floating_point():
        lo, hi = int(image.min()), int(image.max())
        if INT16_HU_RANGE[0] <= lo and hi <= INT16_HU_RANGE[1]:
            return image.to(torch.int16)
    return image.to(torch.float32)


_COUNT_SLAB = 1 << 20  # voxels tested at a time: small masks, reused, instead of one volume-sized mask per test


def _count_voxels(volume: torch.Tensor, *tests: Callable[[np.ndarray], np.ndarray]) -> list[int]:
    """How many voxels of ``volume`` (on the CPU) pass each test (a function giving a bool mask of its numpy
    argument), in one pass over slabs of :data:`_COUNT_SLAB` voxels: no volume-sized mask is allocated (and paged in)
    per test. numpy, not torch: many small torch operations wait on its worker threads."""
    flat = volume.detach().numpy().reshape(-1)
    counts = [0] * len(tests)
    for start in range(0, flat.size, _COUNT_SLAB):
        part = flat[start : start + _COUNT_SLAB]
        for i, test in enumerate(tests):
            counts[i] += int(np.count_nonzero(test(part)))
    return counts


def _check_hu_range(image: MetaTensor, name: str, scaling: str) -> None:
    """Refuse a volume whose values, its padding (the minimum value) aside, leave :data:`HU_PLAUSIBLE_RANGE` for more
    than :data:`HU_MAX_IMPLAUSIBLE_FRACTION` of the voxels: a wrong slope or intercept, or data of another type."""
    low, high = HU_PLAUSIBLE_RANGE
    hu = (lambda v: v) if image.is_floating_point() else (lambda v: int(v))
    volume = image.as_tensor()
    padding = volume.min().item()
    n_padding, n_low, n_high, dense = _count_voxels(
        volume, lambda v: v == padding, lambda v: v < hu(low), lambda v: v > hu(high), lambda v: v > hu(1000.0)
    )
    rest = image.numel() - n_padding
    if rest == 0:
        return  # one value only: the air and body checks tell what is wrong
    outside = (n_low - n_padding if padding < hu(low) else n_low) + n_high  # below the range, padding aside
    edges = torch.cat([volume[0, [0, -1]].reshape(-1), volume[0, :, [0, -1]].reshape(-1)])
    edges = edges[edges != padding]
    edge_median = float(edges.float().median()) if edges.numel() else float("nan")
    if dense > HU_MAX_DENSE_FRACTION * rest or edge_median > HU_MAX_EDGE_MEDIAN:
        raise CaseError(
            f"{name}: {100.0 * dense / rest:.0f}% of the voxels are denser than +1000 HU and the image's edge has a "
            f"median of {edge_median:.0f} HU ({scaling or 'no scaling recorded'}): this is noise or an inverted or "
            "wrong scale, not a CT in Hounsfield units (bone is a few per cent of a CT, its edge is air or tissue). "
            "Export the original CT again."
        )
    if outside > HU_MAX_IMPLAUSIBLE_FRACTION * rest:
        raise CaseError(
            f"{name}: {100.0 * outside / rest:.0f}% of the voxels lie outside [{low:g}, {high:g}] HU (values "
            f"{float(image.min()):g}..{float(image.max()):g}; {scaling or 'no scaling recorded'}): the rescale slope "
            "or intercept is wrong, or the data were damaged. A CT in Hounsfield units has air near -1000 and bone "
            "below 4000: fix the scaling or export the original CT again."
        )


def to_hounsfield(image: MetaTensor, name: str, rescale_missing: bool, scaling: str = "") -> tuple[MetaTensor, str, int]:
    """Check that ``image`` holds HU, correct raw stored values, clip padding to air (in place).

    Args:
        image: the loaded volume, ``(1, X, Y, Z)``.
        name: the case's source, for messages.
        rescale_missing: no rescale intercept is recorded, so raw stored values may be corrected.
        scaling: the recorded scaling in words, for messages.

    Returns:
        the volume, the correction made (``"none"`` or ``"subtracted 1024"``) and the number of voxels raised to
        :data:`AIR_HU`.

    Raises:
        CaseError: the values are not (and cannot be made) Hounsfield units.
    """
    n_bad = 0
    if image.is_floating_point():
        (n_bad,) = _count_voxels(image.as_tensor(), lambda v: ~np.isfinite(v))
    if n_bad:
        raise CaseError(
            f"{name}: {n_bad} voxel(s) are NaN or infinite. The image is damaged or was processed with errors: "
            "export the original CT again."
        )
    # thresholds as Python ints for integer volumes: a float scalar would make torch compare a float32 copy
    hu = (lambda v: v) if image.is_floating_point() else (lambda v: int(v))
    vmin, vmax = float(image.as_tensor().min()), float(image.as_tensor().max())
    correction = "none"
    if vmin >= 0.0 and vmax > 1000.0:
        total = image.numel()
        air, soft, dense = (
            n / total
            for n in _count_voxels(
                image.as_tensor(),
                lambda v: v <= hu(RAW_CT_OFFSET + _AIR_THRESHOLD_HU),
                lambda v: (v >= hu(RAW_CT_OFFSET - 100.0)) & (v <= hu(RAW_CT_OFFSET + 100.0)),
                lambda v: v > hu(RAW_CT_OFFSET + 1000.0),
            )
        )
        fits = air >= _RAW_MIN_FRACTION and soft >= _RAW_MIN_FRACTION and dense <= _RAW_MAX_DENSE_FRACTION
        if not (rescale_missing and fits):
            reason = (
                "its header records a rescale slope/intercept, so the values should already be HU"
                if not rescale_missing
                else f"the histogram does not look like raw CT ({air:.1%} air-like, {soft:.1%} soft-tissue-like, "
                f"{dense:.1%} above +1000 HU)"
            )
            raise CaseError(
                f"{name}: values range from {vmin:g} to {vmax:g} with none below 0, so they are not Hounsfield units, "
                f"and {reason}. Convert the image to HU (HU = stored value x slope + intercept) and try again."
            )
        logger.warning(
            "%s: values range from %g to %g without a rescale intercept; treating them as raw CT values and "
            "subtracting %g to get HU (%.1f%% air-like, %.1f%% soft-tissue-like voxels).",
            name,
            vmin,
            vmax,
            RAW_CT_OFFSET,
            100 * air,
            100 * soft,
        )
        image.sub_(hu(RAW_CT_OFFSET))
        correction = f"subtracted {RAW_CT_OFFSET:g}"
    _check_hu_range(image, name, scaling)
    n_air, clipped = _count_voxels(image.as_tensor(), lambda v: v < hu(_AIR_THRESHOLD_HU), lambda v: v < hu(AIR_HU))
    if not n_air:
        raise CaseError(
            f"{name}: no voxel below {_AIR_THRESHOLD_HU:g} HU (values {float(image.min()):g}..{float(image.max()):g})."
            " A CT in Hounsfield units always shows air (about -1000 HU) around the body and in the lungs; this "
            "looks like a label map, a normalised image or other units. Give the original CT in HU."
        )
    if clipped:
        image.clamp_(min=hu(AIR_HU))
    return image, correction, clipped
