from .csv_logger import EpochCSVLogger
from .model_export import BestModelExporter

__all__ = ["BestModelExporter", "EpochCSVLogger"]
