"""A tf2 transform as the 4x4 matrix a mapper multiplies points by (no rclpy: a geometry_msgs value in).

tf2's ``lookup_transform(target, source, t)`` answers the transform that moves points expressed in ``source``
into ``target``: p_target = R p_source + t, with R the rotation of its unit quaternion (x, y, z, w).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def transform_matrix(transform: Any) -> np.ndarray:
    """(4, 4) float64 of a geometry_msgs/Transform; ValueError for a quaternion of no length or non-finite values."""
    translation, rotation = transform.translation, transform.rotation
    quaternion = np.array([rotation.x, rotation.y, rotation.z, rotation.w], dtype=np.float64)
    offset = np.array([translation.x, translation.y, translation.z], dtype=np.float64)
    norm = np.linalg.norm(quaternion)
    if not (np.isfinite(quaternion).all() and np.isfinite(offset).all() and norm > 1e-9):
        raise ValueError(f"transform is not usable: rotation {quaternion.tolist()}, translation {offset.tolist()}")
    x, y, z, w = quaternion / norm
    matrix = np.eye(4)
    matrix[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    matrix[:3, 3] = offset
    return matrix
