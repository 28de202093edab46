"""One posed RGB-D frame and its patch features grouped by voxel, without a per-pixel feature copy.

Every valid depth pixel is back-projected (spatial.back_project), moved into the map frame by the
camera-to-map pose and quantised. A voxel's feature is the pixel-weighted mean of the features of the patches
its pixels fell in, so only (voxel, patch) pair counts are needed. Per pixel the work is a few array passes:
each pixel gets one int64 code, (its voxel's place in the frame's bounding box of voxels, its patch), pixels
are merged into runs of one code along image rows (neighbours usually share both: ~5 pixels a run), and one
sort of the runs' codes orders them by voxel, then patch, so that pixel counts, colours and objectness are
sums over contiguous stretches. The features are summed a block of voxels at a time (``feature_sums``) by the
map's merge: the (voxels x E) sums never exist whole and stay in the cache.
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
    """One frame's voxels (``keys`` sorted, unique) and their (voxel, patch) pairs, grouped by voxel."""

    keys: np.ndarray  # (M,) int64
    pixels: np.ndarray  # (M,) float64, how many pixels fell in the voxel
    objectness_sums: np.ndarray  # (M,) float64
    colour_sums: np.ndarray  # (M, 3) float64
    pair_bounds: np.ndarray  # (M + 1,) int64: voxel i's pairs are [pair_bounds[i], pair_bounds[i + 1])
    pair_patches: np.ndarray  # (Q,) int64, flat patch index
    pair_pixels: np.ndarray  # (Q,) float64, how many of the voxel's pixels fell in the patch
    patch_features: np.ndarray  # (P, E) float32, one row per patch

    def feature_sums(self, voxels: np.ndarray, pair_weights: np.ndarray) -> np.ndarray:
        """(len(voxels), E) float32: for each of the frame's ``voxels`` (indices, not empty), its patches'
        features weighted by ``pair_weights`` (Q,) float32 and summed; pass k adds every voxel's k-th pair, so
        the passes are as many as the most patches one voxel spans (a few)."""
        heads = self.pair_bounds[voxels]
        counts = self.pair_bounds[voxels + 1] - heads
        sums = self.patch_features[self.pair_patches[heads]]
        sums *= pair_weights[heads, None]
        for k in range(1, int(counts.max())):
            more = np.flatnonzero(counts > k)
            pairs = heads[more] + k
            sums[more] += self.patch_features[self.pair_patches[pairs]] * pair_weights[pairs, None]
        return sums


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


def frame_voxels(depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray, voxel_size: float,
                 max_depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the valid depth pixels (raster order) and the (3, n) int64 coordinates of the voxels
    their points fall in, in the map frame (float64 from the float32 back-projection, as a recomputation would)."""
    xyz = back_project(depth_m.astype(np.float32, copy=False), camera, max_depth_m).reshape(3, -1)
    valid = np.flatnonzero(xyz[2] > 0.0)  # NaN (none or too far) compares False
    points = pose[:3, :3] @ np.take(xyz, valid, axis=1).astype(np.float64)
    points += pose[:3, 3:]  # in place: a broadcast sum into a new (3, n) array costs ~5x more here
    return valid, voxel_coords(points, voxel_size)


def starts_of_equal_runs(values: np.ndarray) -> np.ndarray:
    """Indices where ``values`` (1-D, non-empty) differs from its predecessor, 0 included."""
    changed = np.empty(values.size, bool)
    changed[0] = True
    np.not_equal(values[1:], values[:-1], out=changed[1:])
    return np.flatnonzero(changed)


def box_codes(voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3, n) voxel coordinates -> (n,) int64 codes that sort like the packed keys (x, then y, then z) within
    the frame's bounding box of voxels, with the box's lowest corner and extent (to decode them)."""
    lowest = voxels.min(axis=1)
    extent = voxels.max(axis=1) - lowest + 1
    codes = (voxels[0] - lowest[0]) * extent[1]
    codes += voxels[1] - lowest[1]
    codes *= extent[2]
    codes += voxels[2] - lowest[2]
    return codes, lowest, extent


def empty_frame(patch_features: np.ndarray) -> FrameVoxels:
    none = np.zeros(0)
    return FrameVoxels(np.zeros(0, np.int64), none, none, np.zeros((0, 3)), np.zeros(1, np.int64),
                       np.zeros(0, np.int64), none, patch_features)


def observe(depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray, features: np.ndarray,
            objectness: np.ndarray, colour: np.ndarray, grid: PatchGrid, voxel_size: float,
            max_depth_m: float) -> FrameVoxels:
    """The voxels and (voxel, patch) pairs of one frame (see the module's docstring)."""
    check_frame(depth_m, camera, pose, features, objectness, colour, grid)
    patch_features = np.ascontiguousarray(features.reshape(features.shape[0], -1).T, dtype=np.float32)
    valid, voxels = frame_voxels(depth_m, camera, pose, voxel_size, max_depth_m)
    if valid.size == 0:
        return empty_frame(patch_features)
    codes, lowest, extent = box_codes(voxels)
    patch_count = patch_features.shape[0]
    if float(np.prod(extent.astype(np.float64))) * patch_count >= 2.0 ** 62:
        raise ValueError(f"one frame spans {extent} voxels: too many for voxels of {voxel_size} m")
    codes *= patch_count
    codes += np.take(grid.pixel_patches().reshape(-1), valid)
    starts = starts_of_equal_runs(codes)
    run_pixels = np.diff(starts, append=codes.size)
    run_colour = np.add.reduceat(np.take(colour.reshape(-1, 3), valid, axis=0), starts, axis=0, dtype=np.int64)
    order = np.argsort(codes[starts], kind="stable")  # timsort: the runs come in partly sorted stretches, ~2x
    run_codes = codes[starts[order]]
    pair_starts = starts_of_equal_runs(run_codes)
    pair_pixels = np.add.reduceat(run_pixels[order], pair_starts).astype(np.float64)
    pair_voxels, pair_patches = np.divmod(run_codes[pair_starts], patch_count)
    voxel_starts = starts_of_equal_runs(pair_voxels)
    x, rest = np.divmod(pair_voxels[voxel_starts], extent[1] * extent[2])
    y, z = np.divmod(rest, extent[2])
    keys = pack(np.column_stack((x, y, z)) + lowest)
    objectness_sums = np.add.reduceat(pair_pixels * objectness.reshape(-1)[pair_patches], voxel_starts)
    colour_sums = np.add.reduceat(run_colour[order], pair_starts[voxel_starts], axis=0).astype(np.float64)
    return FrameVoxels(keys, np.add.reduceat(pair_pixels, voxel_starts), objectness_sums, colour_sums,
                       np.append(voxel_starts, pair_starts.size), pair_patches, pair_pixels, patch_features)
