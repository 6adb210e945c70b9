"""MONAI transform chain that turns a CT volume in Hounsfield units into network-ready axial slices.

The chain is invertible: :class:`monai.transforms.Invertd` with the same chain brings a prediction made on the
prepared slices back onto the voxel grid of the loaded volume (orientation, crop and in-plane resizing undone).

Calibration of the Hounsfield window (``scripts/calibrate_window.py``): on the 50 labeled training slices, Otsu's
threshold splits aerated lung from soft tissue with median grey values 55.0 and 210.5; on the real chest CT slices
of ``../shared/data/ct/chest_2slice_dicom`` the same split gives -789 HU and -25 HU. The linear map through both
points is the window [-1059, 194] HU (rounded to :data:`LUNG_WINDOW_HU`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai.transforms import (
    Compose,
    CropForegroundd,
    NormalizeIntensityd,
    Orientationd,
    RepeatChanneld,
    Resized,
    ScaleIntensityRanged,
)

from infnet_monai.transforms.slices import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD

__all__ = ["WORLD_AXIS_LABELS", "LUNG_WINDOW_HU", "BODY_THRESHOLD_HU", "SLICE_AXCODES", "body_foreground", "ct_slice_preprocessing"]

# Hounsfield window mapped onto [0, 1] (grey 0..255 of the training slices); see the module docstring
LUNG_WINDOW_HU: tuple[float, float] = (-1060.0, 195.0)
# voxels above this are body (air and aerated lung are below); used to crop the field of view to the body
BODY_THRESHOLD_HU = -500.0
# Orientation of the prepared volume. Slices are taken along the last axis (superior); within a slice rows run along
# the patient's right-left axis and columns from anterior to posterior, which is how the labeled COVID-SemiSeg slices
# are laid out (lungs at the top and bottom, heart on the left, spine on the right).
SLICE_AXCODES = "LPS"
# axis-code letters of the world frame of MONAI's affines (RAS+), given explicitly to Orientation transforms
WORLD_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def body_foreground(x: torch.Tensor) -> torch.Tensor:
    """Foreground selector for cropping: voxels denser than :data:`BODY_THRESHOLD_HU`."""
    return x > BODY_THRESHOLD_HU


def ct_slice_preprocessing(
    spatial_size: int | Sequence[int] = DEFAULT_SPATIAL_SIZE,
    window_hu: Sequence[float] = LUNG_WINDOW_HU,
    in_channels: int = 1,
    axcodes: str = SLICE_AXCODES,
    crop_margin: int = 4,
    key: str = "image",
) -> Compose:
    """Invertible chain: orientation, crop to the body, Hounsfield window to [0, 1], in-plane resize, standardise.

    Args:
        spatial_size: in-plane size of the prepared slices (the network's training size).
        window_hu: (lower, upper) Hounsfield window mapped to [0, 1], clipped outside.
        in_channels: network input channels (the slice is replicated).
        axcodes: orientation of the prepared volume; slices are along its last axis.
        crop_margin: voxels kept around the body's bounding box.
        key: the image key.

    Returns:
        a :class:`monai.transforms.Compose` mapping ``{"image": MetaTensor (1, X, Y, Z) in HU}`` to
        ``(in_channels, S, S, Z)``.
    """
    size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(int(s) for s in spatial_size)
    lower, upper = (float(v) for v in window_hu)
    if not upper > lower:
        raise ValueError(f"window_hu must be (lower, upper) with upper > lower, got {tuple(window_hu)}.")
    xforms: list = [
        Orientationd(key, axcodes=axcodes, labels=WORLD_AXIS_LABELS),
        CropForegroundd(key, source_key=key, select_fn=body_foreground, margin=crop_margin, allow_smaller=True),
        ScaleIntensityRanged(key, a_min=lower, a_max=upper, b_min=0.0, b_max=1.0, clip=True),
        Resized(key, spatial_size=(*size, -1), mode="bilinear"),
        NormalizeIntensityd(key, subtrahend=SLICE_MEAN, divisor=SLICE_STD),
    ]
    if in_channels > 1:
        xforms.append(RepeatChanneld(key, repeats=in_channels))
    return Compose(xforms)
