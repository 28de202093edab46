"""Depth registered to the colour camera, brought to the mask's resolution."""
from __future__ import annotations

import cv2
import numpy as np

from .intrinsics import same_aspect


class DepthError(ValueError):
    """A depth image that cannot be paired with its colour frame; the message says why."""


def registered_depth(metres: np.ndarray, height: int, width: int) -> np.ndarray:
    """``metres`` (NaN = no depth) at ``height`` x ``width``, nearest neighbour: depth is never blended
    across an object's edge, which would invent points between foreground and background."""
    depth_height, depth_width = metres.shape
    if depth_height == height and depth_width == width:
        return metres
    if not same_aspect(width, height, depth_width, depth_height):
        raise DepthError(f"depth is {depth_width}x{depth_height} but the colour image is {width}x{height}: another "
                         "aspect ratio, so it is not registered to this camera (register it, e.g. depth_image_proc)")
    return cv2.resize(metres, (width, height), interpolation=cv2.INTER_NEAREST)
