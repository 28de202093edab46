"""Pictures of segmentations for people: colour overlays with legends (numpy + PIL, no torch/ROS)."""
from .colorize import blend, class_palette, colorize, draw_legend, draw_stamp, overlay

__all__ = ["blend", "class_palette", "colorize", "draw_legend", "draw_stamp", "overlay"]
