from .classes import ClassMapsd
from .io import LoadCT, LoadCTd
from .masking import RandPatchMask, RandPatchMaskd
from .slices import (
    DEFAULT_CLASS_SIZE,
    DEFAULT_SPATIAL_SIZE,
    SLICE_MEAN,
    SLICE_STD,
    intensity_normalization,
    pretrain_slice_transforms,
    slice_inference_transforms,
    train_class_transforms,
    train_slice_transforms,
    val_class_transforms,
    val_slice_transforms,
)

__all__ = [
    "ClassMapsd",
    "LoadCT",
    "LoadCTd",
    "DEFAULT_CLASS_SIZE",
    "DEFAULT_SPATIAL_SIZE",
    "train_class_transforms",
    "val_class_transforms",
    "SLICE_MEAN",
    "SLICE_STD",
    "RandPatchMask",
    "RandPatchMaskd",
    "intensity_normalization",
    "pretrain_slice_transforms",
    "slice_inference_transforms",
    "train_slice_transforms",
    "val_slice_transforms",
]
