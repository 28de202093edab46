"""Pictures of segmentations for people: colour overlays with legends (numpy + PIL, no torch/ROS)."""
from .colorize import RANDOM_NOTICE, RANDOM_STAMP, blend, class_palette, colorize, draw_legend, draw_stamp, overlay

__all__ = ["RANDOM_NOTICE", "RANDOM_STAMP", "blend", "class_palette", "colorize", "draw_legend", "draw_stamp", "overlay"]
