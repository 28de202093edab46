"""One posed RGB-D frame and its patch features reduced to per-voxel sums, without a per-pixel feature copy.

Every valid depth pixel is back-projected (spatial.back_project), moved into the map frame by the
camera-to-map pose and quantised. A voxel's feature is the pixel-weighted mean of the features of the patches
its pixels fell in, so only (voxel, patch) pair counts are needed: pixels are first merged into runs along
image rows (neighbours usually share both), then runs into voxels and pairs, then each voxel's pairs summed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spatial.cloud import back_project
from ..spatial.intrinsics import Intrinsics
from ..spatial.patch_grid import PatchGrid
from .keys import pack, voxel_coords


@dataclass(frozen=True)
class FrameVoxels:
    """Sums over one frame's pixels per voxel (``keys`` sorted, unique)."""

    keys: np.ndarray  # (M,) int64
    pixels: np.ndarray  # (M,) float64, how many pixels fell in the voxel
    feature_sums: np.ndarray  # (M, E) float32
    objectness_sums: np.ndarray  # (M,) float64
    colour_sums: np.ndarray  # (M, 3) float64


def check_frame(depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray, features: np.ndarray,
                objectness: np.ndarray, colour: np.ndarray, grid: PatchGrid) -> None:
    """ValueError naming the first input that does not describe the same frame."""
    size = (camera.height, camera.width)
    if depth_m.ndim != 2 or depth_m.shape != size:
        raise ValueError(f"depth is {depth_m.shape}, the camera model's image is {size} (register and resize it)")
    if colour.shape != (*size, 3) or colour.dtype != np.uint8:
        raise ValueError(f"colour must be {size[0]}x{size[1]}x3 uint8, got {colour.dtype} {colour.shape}")
    if tuple(grid.image_size) != size:
        raise ValueError(f"the features' grid is for a {grid.image_size} image, the depth is {size}")
    if features.ndim != 3 or features.shape[1:] != grid.shape or objectness.shape != grid.shape:
        raise ValueError(f"features {features.shape} and objectness {objectness.shape} must be (E, *{grid.shape}) "
                         f"and {grid.shape}: the grid's patches")
    if pose.shape != (4, 4) or not np.isfinite(pose).all() or not np.allclose(pose[3], (0, 0, 0, 1)):
        raise ValueError("pose must be a finite 4x4 homogeneous camera-to-map transform")


def frame_points(depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray,
                 max_depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the valid depth pixels (raster order) and their (n, 3) float64 points in the map frame."""
    xyz = back_project(depth_m.astype(np.float32, copy=False), camera, max_depth_m).reshape(3, -1)
    valid = np.flatnonzero(xyz[2] > 0.0)  # NaN (none or too far) compares False
    points = xyz[:, valid].T.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    return valid, points


def sum_by_voxel(values: np.ndarray, voxel: np.ndarray) -> np.ndarray:
    """Rows of ``values`` summed per ``voxel`` (sorted; every voxel 0..M-1 present): the k-th row of every
    voxel is added in pass k, so the passes are as many as the most rows one voxel has (a few patches)."""
    first = np.flatnonzero(np.diff(voxel, prepend=-1))
    sums = values[first]
    rank = np.arange(voxel.size) - first[voxel]
    for k in range(1, int(rank.max()) + 1):
        rows = np.flatnonzero(rank == k)
        sums[voxel[rows]] += values[rows]
    return sums


def observe(depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray, features: np.ndarray,
            objectness: np.ndarray, colour: np.ndarray, grid: PatchGrid, voxel_size: float,
            max_depth_m: float) -> FrameVoxels:
    """The per-voxel sums of one frame (see the module's docstring)."""
    check_frame(depth_m, camera, pose, features, objectness, colour, grid)
    valid, points = frame_points(depth_m, camera, pose, max_depth_m)
    keys = pack(voxel_coords(points, voxel_size))
    patches = grid.pixel_patches().reshape(-1)[valid]
    if keys.size == 0:
        dim = features.shape[0]
        return FrameVoxels(keys, np.zeros(0), np.zeros((0, dim), np.float32), np.zeros(0), np.zeros((0, 3)))
    changed = np.empty(keys.size, bool)
    changed[0] = True
    np.not_equal(keys[1:], keys[:-1], out=changed[1:])
    changed[1:] |= patches[1:] != patches[:-1]
    starts = np.flatnonzero(changed)
    run_pixels = np.diff(np.append(starts, keys.size)).astype(np.float64)
    voxel_keys, run_voxel = np.unique(keys[starts], return_inverse=True)
    count = voxel_keys.size
    pixels = np.bincount(run_voxel, weights=run_pixels, minlength=count)
    pixel_voxel = run_voxel[np.cumsum(changed) - 1]
    flat_colour = colour.reshape(-1, 3)
    colour_sums = np.stack([np.bincount(pixel_voxel, weights=flat_colour[valid, c], minlength=count)
                            for c in range(3)], axis=1)

    patch_count = grid.shape[0] * grid.shape[1]
    pairs, run_pair = np.unique(run_voxel * patch_count + patches[starts], return_inverse=True)
    pair_pixels = np.bincount(run_pair, weights=run_pixels)
    pair_voxel, pair_patch = pairs // patch_count, pairs % patch_count
    flat_features = features.reshape(features.shape[0], -1).T
    weighted = flat_features[pair_patch] * pair_pixels[:, None].astype(np.float32)
    feature_sums = sum_by_voxel(weighted, pair_voxel)
    objectness_sums = np.bincount(pair_voxel, weights=pair_pixels * objectness.reshape(-1)[pair_patch],
                                  minlength=count)
    return FrameVoxels(voxel_keys, pixels, feature_sums, objectness_sums, colour_sums)
