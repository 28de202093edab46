"""Voxel coordinates packed into one int64 key each, so sets of voxels sort, search and merge as plain arrays."""
from __future__ import annotations

import numpy as np

AXIS_BITS = 21  # 2^21 voxels per axis: +-52 km at 5 cm
AXIS_OFFSET = 1 << (AXIS_BITS - 1)
AXIS_MASK = (1 << AXIS_BITS) - 1


def pack(coords: np.ndarray) -> np.ndarray:
    """(n, 3) integer voxel coordinates -> (n,) int64 keys; ValueError outside the representable range."""
    shifted = np.asarray(coords, dtype=np.int64) + AXIS_OFFSET
    if shifted.size and (shifted.min() < 0 or shifted.max() > AXIS_MASK):
        raise ValueError(f"voxel coordinates must lie within +-{AXIS_OFFSET} voxels of the map's origin")
    return (shifted[:, 0] << (2 * AXIS_BITS)) | (shifted[:, 1] << AXIS_BITS) | shifted[:, 2]


def unpack(keys: np.ndarray) -> np.ndarray:
    """(n,) int64 keys -> (n, 3) int64 voxel coordinates."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.stack([(keys >> (2 * AXIS_BITS)) & AXIS_MASK, (keys >> AXIS_BITS) & AXIS_MASK, keys & AXIS_MASK],
                    axis=1) - AXIS_OFFSET


def voxel_coords(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Point coordinates in metres (any layout: (n, 3) rows or (3, n) planes) -> the int64 coordinates of the
    voxels holding them (floor), in the same layout."""
    scaled = points / voxel_size
    return np.floor(scaled, out=scaled).astype(np.int64)


def centres(keys: np.ndarray, voxel_size: float) -> np.ndarray:
    """(n, 3) float64 centres of the voxels ``keys`` name."""
    return (unpack(keys) + 0.5) * voxel_size


def x_range(low_x: int, high_x: int) -> tuple[int, int]:
    """The first and the last possible key of the voxels with x coordinate in [``low_x``, ``high_x``] (keys
    sort x first), clipped to the representable range."""
    low = min(max(low_x + AXIS_OFFSET, 0), AXIS_MASK)
    high = min(max(high_x + AXIS_OFFSET, 0), AXIS_MASK)
    return low << (2 * AXIS_BITS), ((high + 1) << (2 * AXIS_BITS)) - 1
