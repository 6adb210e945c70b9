from .iteration import MultiScaleIteration, scaled_size

__all__ = ["MultiScaleIteration", "scaled_size"]
