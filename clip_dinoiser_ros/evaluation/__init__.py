"""Segmentation metrics and reports, shared by the bag tool and the benchmark evaluation; no ROS, no torch."""
from .metrics import ConfusionMatrix, Scores, scores
from .reports import summary_table, write_reports

__all__ = ["ConfusionMatrix", "Scores", "scores", "summary_table", "write_reports"]
