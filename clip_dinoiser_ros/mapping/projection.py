"""A per-voxel value projected onto the ground plane (the map frame's x-y): the largest value over each
column's height, so anything a robot would hit in that cell counts; cells without any voxel are unknown.
The node turns it into a nav_msgs/OccupancyGrid for Nav2's costmap filters."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keys import unpack


@dataclass(frozen=True)
class GroundProjection:
    """``values`` (rows = y, columns = x) with NaN where no voxel is; cell (0, 0)'s corner is at ``origin``."""

    values: np.ndarray  # (height, width) float32
    origin: tuple[float, float]  # metres, map frame: the x-y corner of cell (0, 0)
    z: float  # the lowest voxel's floor, metres (the grid's height in the map frame)
    resolution: float  # metres per cell: the voxel size


def project_max(keys: np.ndarray, values: np.ndarray, voxel_size: float) -> GroundProjection:
    """The x-y bounding box of the voxels ``keys``, each cell the max of ``values`` over its voxels."""
    if keys.size == 0:
        return GroundProjection(np.zeros((0, 0), np.float32), (0.0, 0.0), 0.0, voxel_size)
    coords = unpack(keys)
    low = coords.min(axis=0)
    columns, rows = coords[:, 0] - low[0], coords[:, 1] - low[1]
    width, height = int(columns.max()) + 1, int(rows.max()) + 1
    grid = np.full(height * width, -np.inf, np.float32)
    np.maximum.at(grid, rows * width + columns, values.astype(np.float32))
    grid[np.isneginf(grid)] = np.nan
    return GroundProjection(grid.reshape(height, width), (float(low[0] * voxel_size), float(low[1] * voxel_size)),
                            float(low[2] * voxel_size), voxel_size)
