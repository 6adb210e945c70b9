"""MONAI transform chain that turns a CT volume in Hounsfield units into network-ready axial slices.

The chain is invertible: :class:`monai.transforms.Invertd` with the same chain brings a prediction made on the
prepared volume back onto the voxel grid it was given (the orientation undone). The per-slice crop to the lungs and
the in-plane resize to the network's input are done, and undone, by
:class:`infnet_monai.inferers.LungCropSliceInferer`.

Calibration of the Hounsfield window (``scripts/calibrate_window.py``): on the 50 labeled training slices, Otsu's
threshold splits aerated lung from soft tissue with median grey values 55.0 and 210.5; on the real chest CT slices
of ``../shared/data/ct/chest_2slice_dicom`` the same split gives -789 HU and -25 HU. The linear map through both
points is the window [-1059, 194] HU (rounded to :data:`LUNG_WINDOW_HU`).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose, Orientationd, ScaleIntensityRanged

from infnet_monai.transforms.slices import SLICE_MEAN, SLICE_STD, intensity_normalization

__all__ = ["WORLD_AXIS_LABELS", "LUNG_WINDOW_HU", "SLICE_AXCODES", "check_window", "ct_slice_preprocessing"]

# Hounsfield window mapped onto [0, 1] (grey 0..255 of the training slices); see the module docstring
LUNG_WINDOW_HU: tuple[float, float] = (-1060.0, 195.0)
# Orientation of the prepared volume. Slices are taken along the last axis (superior); within a slice rows run along
# the patient's right-left axis and columns from anterior to posterior, which is how the labeled COVID-SemiSeg slices
# are laid out (lungs at the top and bottom, heart on the left, spine on the right).
SLICE_AXCODES = "LPS"
# axis-code letters of the world frame of MONAI's affines (RAS+), given explicitly to Orientation transforms
WORLD_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def check_window(window_hu: Sequence[float]) -> tuple[float, float]:
    """``window_hu`` as ``(lower, upper)`` floats, or ``ValueError`` unless it is two numbers with upper > lower: the
    one check of the Hounsfield window (the settings and the slice preparation call it)."""
    values = tuple(window_hu)
    if len(values) != 2:
        raise ValueError(f"window_hu must be (lower, upper) with upper > lower, got {values!r}.")
    lower, upper = (float(v) for v in values)
    if not upper > lower:
        raise ValueError(f"window_hu must be (lower, upper) with upper > lower, got {values!r}.")
    return lower, upper


def ct_slice_preprocessing(
    window_hu: Sequence[float] = LUNG_WINDOW_HU,
    in_channels: int = 1,
    axcodes: str = SLICE_AXCODES,
    key: str = "image",
    lung_key: str | None = "lung",
    mean: float = SLICE_MEAN,
    std: float = SLICE_STD,
) -> Compose:
    """Invertible chain: orientation of the image (and its lung mask), Hounsfield window to [0, 1], standardise.

    Cropping each slice to its lungs and resizing it to the network's input happen per slice in
    :class:`infnet_monai.inferers.LungCropSliceInferer`, which needs the lung mask on the same grid: ``lung_key`` is
    oriented with the image (and is optional in the input dictionary).

    Args:
        window_hu: (lower, upper) Hounsfield window mapped to [0, 1], clipped outside.
        in_channels: network input channels (the slice is replicated).
        axcodes: orientation of the prepared volume; slices are along its last axis.
        key: the image key.
        lung_key: the lung-mask key oriented together with the image; ``None`` for none.
        mean, std: the standardisation of the network's training slices (the checkpoint's ``slice_mean`` and
            ``slice_std``).

    Returns:
        a :class:`monai.transforms.Compose` mapping ``{"image": MetaTensor (1, X, Y, Z) in HU}`` to
        ``(in_channels, X', Y', Z')`` in ``axcodes`` orientation.
    """
    lower, upper = check_window(window_hu)
    keys = [key] if lung_key is None else [key, lung_key]
    xforms: list = [
        Orientationd(keys, axcodes=axcodes, labels=WORLD_AXIS_LABELS, allow_missing_keys=True),
        ScaleIntensityRanged(key, a_min=lower, a_max=upper, b_min=0.0, b_max=1.0, clip=True),
        *intensity_normalization(key, in_channels, mean, std),
    ]
    return Compose(xforms)
