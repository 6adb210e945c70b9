"""Moved to :mod:`infnet_monai.apps.calibration` (choosing a model's temperature is a tool built on the inferers, not
an inferer); the old names still work and warn."""

from infnet_monai.utils.deprecation import moved_names

__all__: list[str] = []

__getattr__ = moved_names(
    __name__,
    {
        name: f"infnet_monai.apps.calibration.{name}"
        for name in ("DEFAULT_TEMPERATURES", "SWEEP_KEYS", "calibrate_model", "choose_temperature", "temperature_sweep")
    },
)
