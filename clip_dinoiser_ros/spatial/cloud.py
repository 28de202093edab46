"""Back-projection of a depth image through the pinhole model, one point per pixel (organized)."""
from __future__ import annotations

import numpy as np

from .intrinsics import Intrinsics


def back_project(metres: np.ndarray, camera: Intrinsics, max_depth_m: float) -> np.ndarray:
    """(3, H, W) float32 planes x, y, z in the optical frame: ((u - cx) z / fx, (v - cy) z / fy, z) at pixel
    (u, v), as depth_image_proc's convertDepth; NaN where there is no depth or it is beyond ``max_depth_m``.
    Planes, not points: each is one contiguous image, as cv2 and the cloud's field-by-field layout want them.

    With P's Tx or Ty not zero (the second camera of a stereo pair), x and y are ((u - cx) z - Tx) / fx and
    ((v - cy) z - Ty) / fy: the point that image_geometry's project3dToPixel, u = (fx x + Tx) / z + cx, puts at
    (u, v), in the frame of the pair's first camera as P defines it (depth_image_proc ignores Tx;
    projectPixelTo3dRay subtracts it unscaled, which is the same point only at z = 1 m)."""
    height, width = metres.shape
    xyz = np.empty((3, height, width), dtype=np.float32)
    z = xyz[2]
    np.copyto(z, metres)
    z[metres > max_depth_m] = np.nan  # NaN (no depth) compares False and stays NaN
    u = (np.arange(width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.fx)
    v = (np.arange(height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.fy)
    np.multiply(z, u[None, :], out=xyz[0])
    np.multiply(z, v[:, None], out=xyz[1])
    if camera.tx:
        xyz[0] -= np.float32(camera.tx / camera.fx)
    if camera.ty:
        xyz[1] -= np.float32(camera.ty / camera.fy)
    return xyz
