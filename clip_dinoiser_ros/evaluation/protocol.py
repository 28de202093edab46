"""The paper's test protocol as a library function: mmcv's rescale on uint8, then slide windows.

The image is rescaled as mmcv's ``imrescale`` does (cv2 bilinear on the uint8 image, scale factor
min(2048 / long side, 448 / short side), sides rounded half up); the engine then runs its 448/224
sliding windows on that image as it is, and its class map is resized to the original size for the argmax.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from ..model import ClipDinoiser

LONG_SIDE, SHORT_SIDE = 2048, 448
WINDOW, STRIDE = 448, 224


def rescaled_size(height: int, width: int) -> tuple[int, int]:
    scale = min(LONG_SIDE / max(height, width), SHORT_SIDE / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def rescale(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> uint8 at the protocol's size (cv2 INTER_LINEAR, as mmcv)."""
    height, width = rescaled_size(*image.shape[:2])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def predict(engine: ClipDinoiser, image: np.ndarray, background: bool) -> np.ndarray:
    """Labels at the original resolution, as the paper's evaluation computes them."""
    rescaled = rescale(image)
    result = engine.segment(rescaled, mode="slide", short_side=min(rescaled.shape[:2]), window=WINDOW,
                            stride=STRIDE, background=background, probs=False, output_size=image.shape[:2])
    return result.labels
