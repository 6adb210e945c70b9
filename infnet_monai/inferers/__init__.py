from infnet_monai.utils.deprecation import moved_names

from .lung_crop import LUNG_CROP_MARGINS, LungCropSliceInferer, grow_boxes, slice_boxes
from .probability import LEFT_RIGHT_DIM, ProbabilityMaps
from .slices import MOVED_NAMES, SlicePredictor

__all__ = [
    "LEFT_RIGHT_DIM",
    "LUNG_CROP_MARGINS",
    "LungCropSliceInferer",
    "ProbabilityMaps",
    "SlicePredictor",
    "grow_boxes",
    "slice_boxes",
]

__getattr__ = moved_names(__name__, MOVED_NAMES)
