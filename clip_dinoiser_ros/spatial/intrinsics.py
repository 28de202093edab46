"""The pinhole model of a camera_info as image_geometry reads it, and the same camera at another resolution."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence


ASPECT_TOLERANCE = 0.01  # relative: an image of another aspect ratio is not of this camera (registered to it)


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether two image sizes can be the same camera at two resolutions (within ASPECT_TOLERANCE)."""
    aspect = width / height
    return abs(other_width / other_height - aspect) <= ASPECT_TOLERANCE * aspect


class CameraModelError(ValueError):
    """A camera_info that cannot describe the image (zeros, non-finite values, no size, an roi outside it)."""


@dataclass(frozen=True)
class Intrinsics:
    """P's terms (fx = P[0], cx = P[2], Tx = P[3], fy = P[5], cy = P[6], Ty = P[7]) in the pixels of one image
    of ``width`` x ``height``, and the map from the calibration's full-resolution pixels to that image's:
    u = (u_full - x_offset) * scale_x (v likewise), which ``reframe`` applies to a whole K or P."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    tx: float = 0.0
    ty: float = 0.0
    x_offset: float = 0.0
    y_offset: float = 0.0
    scale_x: float = 1.0
    scale_y: float = 1.0

    @classmethod
    def from_camera_info(cls, k: Sequence[float], p: Sequence[float], width: int, height: int,
                         binning: tuple[int, int] = (0, 0),
                         roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> "Intrinsics":
        """The model of the images a camera_info describes, as image_geometry's PinholeCameraModel builds it
        (vision_opencv, image_geometry/src/pinhole_camera_model.cpp, fromCameraInfo): P, since the images are
        rectified (K only when P is all zero, as an uncalibrated driver sends it), its principal point moved by
        the roi's (x_offset, y_offset, width, height) offset, then fx, cx, Tx divided by binning_x and fy, cy, Ty
        by binning_y (binning 0 = 1, an all-zero roi = the full image); the image is the roi's size divided by
        the binning. Refuses what no real camera has."""
        if width <= 0 or height <= 0:
            raise CameraModelError(f"camera_info size is {width}x{height}: it must say the image size")
        use_p = any(float(v) != 0.0 for v in p)
        name, columns = ("P", 4) if use_p else ("K", 3)
        matrix = [float(v) for v in (p if use_p else k)]
        fx, cx, fy, cy = matrix[0], matrix[2], matrix[columns + 1], matrix[columns + 2]
        tx, ty = (matrix[3], matrix[7]) if use_p else (0.0, 0.0)
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy, tx, ty)) or fx <= 0.0 or fy <= 0.0:
            raise CameraModelError(f"camera_info {name} has fx={fx:g}, fy={fy:g}, cx={cx:g}, cy={cy:g}, "
                                   f"Tx={tx:g}, Ty={ty:g}: the focal lengths must be positive and all finite (an "
                                   "uncalibrated driver sends zeros)")
        x_offset, y_offset, roi_width, roi_height = (int(v) for v in roi)
        if (x_offset, y_offset, roi_width, roi_height) == (0, 0, 0, 0):
            roi_width, roi_height = width, height
        if roi_width <= 0 or roi_height <= 0 or x_offset + roi_width > width or y_offset + roi_height > height:
            raise CameraModelError(f"camera_info roi is {roi_width}x{roi_height} at ({x_offset}, {y_offset}): it "
                                   f"must be a non-empty part of the {width}x{height} calibrated image")
        binning_x, binning_y = (max(1, int(v)) for v in binning)
        if roi_width < binning_x or roi_height < binning_y:
            raise CameraModelError(f"camera_info binning {binning_x}x{binning_y} leaves no pixel of its "
                                   f"{roi_width}x{roi_height} image")
        full = cls(fx, fy, cx, cy, roi_width // binning_x, roi_height // binning_y, tx, ty)
        return full.reframed(x_offset, y_offset, 1.0 / binning_x, 1.0 / binning_y)

    def reframed(self, x_offset: float, y_offset: float, scale_x: float, scale_y: float) -> "Intrinsics":
        """Moved by this image's pixels (``x_offset``, ``y_offset``), then scaled; the size is the caller's."""
        return replace(self, fx=self.fx * scale_x, fy=self.fy * scale_y, cx=(self.cx - x_offset) * scale_x,
                       cy=(self.cy - y_offset) * scale_y, tx=self.tx * scale_x, ty=self.ty * scale_y,
                       x_offset=self.x_offset + x_offset / self.scale_x,
                       y_offset=self.y_offset + y_offset / self.scale_y,
                       scale_x=self.scale_x * scale_x, scale_y=self.scale_y * scale_y)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera resized to ``width`` x ``height``, as image_proc's resize scales K and P."""
        return replace(self.reframed(0.0, 0.0, width / self.width, height / self.height), width=width, height=height)

    def reframe(self, matrix: Sequence[float]) -> list[float]:
        """A row-major K (3x3) or P (3x4) of the full-resolution calibration in this image's pixels: rows 0 and 1
        become scale * (row - offset * row 2), so fx, cx, Tx and skew follow the pixels, and a zero P stays zero."""
        columns = len(matrix) // 3
        rows = [[float(v) for v in matrix[row * columns:(row + 1) * columns]] for row in range(3)]
        moved = [[scale * (value - offset * last) for value, last in zip(rows[row], rows[2])]
                 for row, offset, scale in ((0, self.x_offset, self.scale_x), (1, self.y_offset, self.scale_y))]
        return [value for row in moved + [rows[2]] for value in row]
