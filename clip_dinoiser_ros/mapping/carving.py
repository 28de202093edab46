"""Free-space carving by projection: a voxel the camera sees through is empty now.

Instead of marching every ray, each map voxel's centre is projected into the new depth image (the pinhole
model of spatial.Intrinsics, as back_project inverts it): a voxel in front of the camera, inside the image,
whose depth is clearly smaller than the depth measured at its pixel lies on the ray between the camera and
a surface behind it, so it is free. Voxels behind surfaces, outside the view or where the depth has no
value are left alone. Only the voxels inside ``view_box`` (the box around the view's pyramid) need the
projection, so the map looks them up by key instead of projecting all of itself every frame.
"""
from __future__ import annotations

import numpy as np

from ..spatial.intrinsics import Intrinsics


def seen_through(centres: np.ndarray, depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray,
                 max_depth_m: float, margin_m: float) -> np.ndarray:
    """(n,) bool: which voxel ``centres`` (n, 3, map frame) lie at least ``margin_m`` in front of the depth
    measured at their pixel (``depth_m`` in metres; 0, NaN or beyond ``max_depth_m`` = no measurement)."""
    if centres.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    rotation, translation = pose[:3, :3], pose[:3, 3]
    local = (centres - translation) @ rotation  # R^T (c - t) for each row
    z = local[:, 2]
    ahead = z > 1e-6
    safe_z = np.where(ahead, z, 1.0)
    u = np.floor((camera.fx * local[:, 0] + camera.tx) / safe_z + camera.cx + 0.5)
    v = np.floor((camera.fy * local[:, 1] + camera.ty) / safe_z + camera.cy + 0.5)
    inside = ahead & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height) & (z < max_depth_m)
    free = np.zeros(centres.shape[0], dtype=bool)
    rows = np.flatnonzero(inside)
    measured = depth_m[v[rows].astype(np.int64), u[rows].astype(np.int64)]
    with np.errstate(invalid="ignore"):
        free[rows] = (measured > 0.0) & (measured <= max_depth_m) & (z[rows] < measured - margin_m)
    return free


def view_box(camera: Intrinsics, pose: np.ndarray, far_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest corner (map frame) of an axis-aligned box holding every point that ``seen_through``
    can find free with depths up to ``far_m``: the pyramid of the camera's centre and the image's outer
    corners (pixel edges, as the projection rounds) at that depth."""
    columns = (np.array([-0.5, camera.width - 0.5]) - camera.cx) * far_m - camera.tx
    rows = (np.array([-0.5, camera.height - 0.5]) - camera.cy) * far_m - camera.ty
    corners = [(x / camera.fx, y / camera.fy, far_m) for x in columns for y in rows]
    local = np.array([(-camera.tx / camera.fx, -camera.ty / camera.fy, 0.0), *corners])
    points = local @ pose[:3, :3].T + pose[:3, 3]
    return points.min(axis=0), points.max(axis=0)
