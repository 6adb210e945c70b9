from .classes import ClassMapsd
from .io import LoadCT, LoadCTd
from .masking import RandPatchMask, RandPatchMaskd
from .slices import (
    CLASS_AUGMENTATION,
    DEFAULT_CLASS_SIZE,
    DEFAULT_SPATIAL_SIZE,
    SLICE_MEAN,
    SLICE_STD,
    SliceAugmentation,
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
    "CLASS_AUGMENTATION",
    "DEFAULT_CLASS_SIZE",
    "DEFAULT_SPATIAL_SIZE",
    "SliceAugmentation",
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
