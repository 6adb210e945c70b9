from .slices import SliceFolderReport, SlicePredictor, predict_slice_folder, read_slice, resolve_temperature, write_png_atomic

__all__ = ["SliceFolderReport", "SlicePredictor", "predict_slice_folder", "read_slice", "resolve_temperature", "write_png_atomic"]
