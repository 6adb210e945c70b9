from .cases import CT_SOP_CLASS_UIDS, MAX_CASE_ID_LENGTH, CTCase, discover_cases, is_nifti_path, read_dicom_header, sanitize_case_id
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    load_model,
    network_state_dict,
    save_model,
)
from .volume import AIR_HU, MAX_SPACING_MM, MIN_SLICES, RAW_CT_OFFSET, CaseError, SimpleITKSeriesReader, load_ct

__all__ = [
    "AIR_HU",
    "CHECKPOINT_FORMAT",
    "CT_SOP_CLASS_UIDS",
    "CTCase",
    "CaseError",
    "CheckpointError",
    "MAX_CASE_ID_LENGTH",
    "MAX_SPACING_MM",
    "MIN_SLICES",
    "RAW_CT_OFFSET",
    "SimpleITKSeriesReader",
    "atomic_torch_save",
    "discover_cases",
    "is_nifti_path",
    "load_checkpoint",
    "load_ct",
    "load_model",
    "network_state_dict",
    "read_dicom_header",
    "sanitize_case_id",
    "save_model",
]
