"""Reading label images, for the benchmarks, bag evaluation and bags built from image folders alike."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LABEL_MODES = ("L", "P", "I;16")


class LabelImageError(ValueError):
    """A label file that does not hold one class id per pixel."""


def read_label_image(path: Path, modes: tuple[str, ...] = LABEL_MODES) -> np.ndarray:
    """Class ids as stored: palette images give their indices, never colours; other modes are refused."""
    with Image.open(path) as image:
        if image.mode not in modes:
            raise LabelImageError(f"{path}: labels must be single-channel class ids (mode {' or '.join(modes)}), "
                                  f"not mode {image.mode}")
        return np.array(image)
