"""The pinhole model of a camera_info, and the same camera at another resolution."""
from __future__ import annotations

import math
from dataclasses import dataclass


ASPECT_TOLERANCE = 0.01  # relative: an image of another aspect ratio is not of this camera (registered to it)


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether two image sizes can be the same camera at two resolutions (within ASPECT_TOLERANCE)."""
    aspect = width / height
    return abs(other_width / other_height - aspect) <= ASPECT_TOLERANCE * aspect


class CameraModelError(ValueError):
    """A camera_info that cannot describe the image (zeros, non-finite values, no size)."""


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: tuple[float, ...], width: int, height: int) -> "Intrinsics":
        """From a row-major 3x3 K (sensor_msgs/CameraInfo.k); refuses what no real camera has."""
        if width <= 0 or height <= 0:
            raise CameraModelError(f"camera_info size is {width}x{height}: it must say the image size")
        fx, cx, fy, cy = float(k[0]), float(k[2]), float(k[4]), float(k[5])
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0.0 or fy <= 0.0:
            raise CameraModelError(f"camera_info K has fx={fx:g}, fy={fy:g}, cx={cx:g}, cy={cy:g}: "
                                   "the focal lengths must be positive and finite (an uncalibrated driver sends zeros)")
        return cls(fx, fy, cx, cy, int(width), int(height))

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera resized to ``width`` x ``height``, as image_proc's resize scales K."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)
