"""Moved: :func:`with_infection_priors` runs the binary model, so it lives with the tools that do,
:mod:`infnet_monai.apps.priors`. The old name still works and warns."""

from infnet_monai.utils.deprecation import moved_names

__all__: list[str] = []

__getattr__ = moved_names(__name__, {"with_infection_priors": "infnet_monai.apps.priors.with_infection_priors"})
