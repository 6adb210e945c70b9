"""Tools built on the library, as the command line runs them: ``predict-slices`` over a folder of slice images
(:mod:`.slices`), choosing a model's logit temperature (:mod:`.calibration`) and the infection priors the GGO /
consolidation head trains on (:mod:`.priors`). The 3D cohort pipeline is :mod:`infnet_monai.pipeline`."""

from .calibration import DEFAULT_TEMPERATURES, SWEEP_KEYS, calibrate_model, choose_temperature, temperature_sweep
from .priors import with_infection_priors
from .slices import SliceFolderReport, predict_slice_folder

__all__ = [
    "DEFAULT_TEMPERATURES",
    "SWEEP_KEYS",
    "SliceFolderReport",
    "calibrate_model",
    "choose_temperature",
    "predict_slice_folder",
    "temperature_sweep",
    "with_infection_priors",
]
