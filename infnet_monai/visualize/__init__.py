"""Pictures and reports for people: per-case overview pictures and the cohort report."""

from .overview import COLOURS, DISPLAY_WINDOW_HU, overview_image, to_ras, write_overview
from .report import REPORT_FILE, write_report

__all__ = ["COLOURS", "DISPLAY_WINDOW_HU", "overview_image", "to_ras", "write_overview", "REPORT_FILE", "write_report"]
