from infnet_monai.utils.deprecation import moved_names

from .covid_semiseg import (
    IMAGE_SUFFIXES,
    labeled_datalist,
    labeled_splits,
    pretraining_datalist,
    split_datalist,
    unlabeled_datalist,
)
from .hard_negatives import hard_negative_datalist
from .paths import DATA_ENV_VAR, shared_data_dir
from .samplers import MixedEpochSampler

__all__ = [
    "DATA_ENV_VAR",
    "IMAGE_SUFFIXES",
    "MixedEpochSampler",
    "hard_negative_datalist",
    "labeled_datalist",
    "labeled_splits",
    "pretraining_datalist",
    "shared_data_dir",
    "split_datalist",
    "unlabeled_datalist",
]

__getattr__ = moved_names(
    __name__,
    {
        "default_data_dir": "infnet_monai.data.paths.shared_data_dir",
        "with_infection_priors": "infnet_monai.apps.priors.with_infection_priors",
    },
)
