"""The paper's test protocol as a library function: the engine's slide mode with the paper's settings.

The engine resizes as mmcv's ``imrescale`` does (cv2 bilinear on the uint8 image, scale factor
min(2048 / long side, 448 / short side), sides rounded half up; ``model.preprocessing``), runs 448/224
sliding windows placed as mmseg places them, resizes each window's patch grid onto the window as the
authors' ``encode_decode`` does, averages the overlaps, and resizes the class map to the original size for
the argmax. One implementation serves the node's ``mode: slide`` and this evaluation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..model import ClipDinoiser

SHORT_SIDE, WINDOW, STRIDE = 448, 448, 224


def predict(engine: ClipDinoiser, image: np.ndarray, background: bool) -> np.ndarray:
    """Labels at the original resolution, as the paper's evaluation computes them."""
    return engine.segment(image, mode="slide", short_side=SHORT_SIDE, window=WINDOW, stride=STRIDE,
                          background=background, probs=False).labels
