from .slices import (
    DEFAULT_SPATIAL_SIZE,
    SLICE_MEAN,
    SLICE_STD,
    inference_slice_transforms,
    intensity_normalization,
    train_slice_transforms,
    val_slice_transforms,
)

__all__ = [
    "DEFAULT_SPATIAL_SIZE",
    "SLICE_MEAN",
    "SLICE_STD",
    "inference_slice_transforms",
    "intensity_normalization",
    "train_slice_transforms",
    "val_slice_transforms",
]
