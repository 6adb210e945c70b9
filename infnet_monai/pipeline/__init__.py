from .segment import (
    CSV_FILE,
    DEFAULT_MAX_SLICES,
    DEFAULT_MIN_LESION_MM3,
    STATS_FILE,
    CaseResult,
    CohortReport,
    CTSegmenter,
    segment_cohort,
)
from infnet_monai.io.outputs import write_csv_atomic, write_nifti_atomic  # the atomic writers, also used by the pipeline

__all__ = [
    "CSV_FILE",
    "DEFAULT_MAX_SLICES",
    "DEFAULT_MIN_LESION_MM3",
    "STATS_FILE",
    "CaseResult",
    "CohortReport",
    "CTSegmenter",
    "segment_cohort",
    "write_csv_atomic",
    "write_nifti_atomic",
]
