from .base_reader import MAX_SPACING_MM, MIN_SLICES, CaseError
from .cases import MAX_CASE_ID_LENGTH, CTCase, discover_cases, is_nifti_path, sanitize_case_id
from .checkpoint import (
    CHECKPOINT_FORMAT,
    ENCODER_FORMAT,
    CheckpointError,
    ModelSpec,
    atomic_torch_save,
    load_checkpoint,
    load_pretrained_encoder,
    load_class_model,
    load_model,
    load_weights,
    model_temperature,
    network_state_dict,
    resolve_temperature,
    safe_torch_load,
    save_calibrated_model,
    save_encoder,
    save_model,
)
from .dicom_headers import CT_SOP_CLASS_UIDS, read_dicom_header
from .dicom_series import SimpleITKSeriesReader
from .hounsfield import AIR_HU, RAW_CT_OFFSET
from .slices import read_slice, write_png_atomic
from .volume import load_ct

__all__ = [
    "AIR_HU",
    "CHECKPOINT_FORMAT",
    "CT_SOP_CLASS_UIDS",
    "ENCODER_FORMAT",
    "CTCase",
    "CaseError",
    "CheckpointError",
    "MAX_CASE_ID_LENGTH",
    "MAX_SPACING_MM",
    "MIN_SLICES",
    "ModelSpec",
    "RAW_CT_OFFSET",
    "SimpleITKSeriesReader",
    "atomic_torch_save",
    "discover_cases",
    "is_nifti_path",
    "load_checkpoint",
    "load_ct",
    "load_class_model",
    "load_model",
    "load_weights",
    "load_pretrained_encoder",
    "model_temperature",
    "network_state_dict",
    "read_dicom_header",
    "read_slice",
    "resolve_temperature",
    "safe_torch_load",
    "sanitize_case_id",
    "save_calibrated_model",
    "save_encoder",
    "save_model",
    "write_png_atomic",
]
