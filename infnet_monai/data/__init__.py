from .covid_semiseg import (
    DATA_ENV_VAR,
    IMAGE_SUFFIXES,
    default_data_dir,
    labeled_datalist,
    labeled_splits,
    pretraining_datalist,
    split_datalist,
    unlabeled_datalist,
)
from .priors import with_infection_priors

__all__ = [
    "with_infection_priors",
    "DATA_ENV_VAR",
    "IMAGE_SUFFIXES",
    "default_data_dir",
    "labeled_datalist",
    "labeled_splits",
    "pretraining_datalist",
    "split_datalist",
    "unlabeled_datalist",
]
