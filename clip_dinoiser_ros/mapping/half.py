"""float16 <-> float32 at memory speed for the map's (n, E) feature rows.

numpy (1.26 and 2.4 alike) converts float16 one value at a time (about 2 ns each: 0.2 s for the features of
200,000 voxels); OpenCV converts with the CPU's conversion instructions (F16C), with the same IEEE
round-to-nearest-even, so the values are the ones numpy's ``astype`` gives, bit for bit: OpenCV 4 (the Jazzy
set) through ``convertFp16``, OpenCV 5 (the Kilted set), which dropped it and takes float16 arrays in every
function, through a subtraction of +0 into the other type (exact for every value, -0 included; a product
by 1 gives the same values ~3x slower)."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

HAS_CONVERT_FP16 = hasattr(cv2, "convertFp16")


def to_float32(rows: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """(n, E) float16 or float32 rows as float32, written into ``out`` ((n, E) float32, contiguous) when given:
    a reused buffer spares an allocation per call, and float32 rows copied into one in the cache are read faster
    by a matrix product than from memory. Without ``out``, float32 rows are returned as they are, not copied."""
    if rows.dtype != np.float16 or rows.size == 0:
        if out is None:
            return rows.astype(np.float32, copy=False)
        np.copyto(out, rows)
        return out
    if HAS_CONVERT_FP16:
        return cv2.convertFp16(np.ascontiguousarray(rows).view(np.int16), dst=out)
    return cv2.subtract(rows, 0.0, dst=out, dtype=cv2.CV_32F)


def to_float16(rows: np.ndarray) -> np.ndarray:
    """(n, E) float32 rows rounded to float16."""
    if rows.size == 0:
        return np.asarray(rows, dtype=np.float32).astype(np.float16)
    if HAS_CONVERT_FP16:
        return cv2.convertFp16(np.ascontiguousarray(rows, dtype=np.float32)).view(np.float16)
    return cv2.subtract(np.asarray(rows, dtype=np.float32), 0.0, dtype=cv2.CV_16F)

