from .lung_crop import LUNG_CROP_MARGINS, LungCropSliceInferer, grow_boxes, slice_boxes
from .slices import SliceFolderReport, SlicePredictor, predict_slice_folder, read_slice, resolve_temperature, write_png_atomic

__all__ = [
    "LUNG_CROP_MARGINS",
    "LungCropSliceInferer",
    "SliceFolderReport",
    "SlicePredictor",
    "grow_boxes",
    "predict_slice_folder",
    "read_slice",
    "resolve_temperature",
    "slice_boxes",
    "write_png_atomic",
]
