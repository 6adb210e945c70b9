"""infnet-monai: Inf-Net COVID-19 lung infection segmentation as MONAI networks and a 3D CT pipeline."""

__version__ = "0.19.0"

__all__ = ["__version__"]
