from .csv_logger import EpochCSVLogger
from .encoder_export import EncoderExporter
from .model_export import BestModelExporter

__all__ = ["BestModelExporter", "EncoderExporter", "EpochCSVLogger"]
