from .masking import RandPatchMask, RandPatchMaskd
from .slices import (
    DEFAULT_SPATIAL_SIZE,
    SLICE_MEAN,
    SLICE_STD,
    inference_slice_transforms,
    intensity_normalization,
    pretrain_slice_transforms,
    train_slice_transforms,
    val_slice_transforms,
)

__all__ = [
    "DEFAULT_SPATIAL_SIZE",
    "SLICE_MEAN",
    "SLICE_STD",
    "RandPatchMask",
    "RandPatchMaskd",
    "inference_slice_transforms",
    "intensity_normalization",
    "pretrain_slice_transforms",
    "train_slice_transforms",
    "val_slice_transforms",
]
