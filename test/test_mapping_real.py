"""The voxel map on real posed RGB-D frames (../shared/data: Redwood's 5 frames, TUM's 58 cabinet keyframes).

The features are fixed random unit vectors per frame (random weights give no semantics): what is checked is
the geometry and the fusion arithmetic, against a recomputation written here without the library, and the
conventions (pose direction, optical frame, depth scale) against the cabinet's measured cuboid.
"""
import numpy as np
import pytest

from clip_dinoiser_ros.mapping import MapSettings, VoxelMap
from clip_dinoiser_ros.mapping.keys import unpack
from clip_dinoiser_ros.spatial import back_project
from map_frames import GRID, cabinet_cuboid, distance_to_cuboid_surface, random_features, redwood, tum_cabinet

FP16_TOLERANCE = 2.5e-4  # two fp16 steps at the largest components (|x| < 0.25) of 512-d unit vectors


def patch_of_pixels(flat_pixels):
    """The patch holding each pixel's centre after the resize to 448x597 (patches of 16)."""
    rows, cols = np.divmod(flat_pixels, GRID.image_size[1])
    patch_row = np.minimum(((rows + 0.5) * 448 / 480).astype(np.int64), 447) // 16
    patch_col = np.minimum(((cols + 0.5) * 597 / 640).astype(np.int64), 596) // 16
    return patch_row * GRID.shape[1] + patch_col


RADIX = 4096  # voxel coordinates within +-2048 (+-102 m at 5 cm): a mixed-radix code sorts like the rows


def encode(voxels):
    shifted = voxels + RADIX // 2
    assert shifted.min() >= 0 and shifted.max() < RADIX
    return (shifted[:, 0] * RADIX + shifted[:, 1]) * RADIX + shifted[:, 2]


def decode(codes):
    rest, z = np.divmod(codes, RADIX)
    x, y = np.divmod(rest, RADIX)
    return np.column_stack([x, y, z]) - RADIX // 2


def recompute(camera, frames, settings):
    """Every voxel (sorted coordinates) with its pixel count, mean objectness and colour, and the rows (voxel
    code, frame, patch, pixel count) of every (voxel, frame, patch) the pixels fell in."""
    pair_parts, colour_parts = [], []
    for index, (depth, rgb, pose) in enumerate(frames):
        xyz = back_project(depth.astype(np.float32), camera, settings.max_depth_m).reshape(3, -1)
        valid = np.flatnonzero(np.isfinite(xyz[2]) & (xyz[2] > 0))
        points = xyz[:, valid].T.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
        voxels = np.floor(points / settings.voxel_size).astype(np.int64)
        codes = encode(voxels)
        pairs, counts = np.unique(codes * GRID.shape[0] * GRID.shape[1] + patch_of_pixels(valid), return_counts=True)
        voxel_codes, patches = np.divmod(pairs, GRID.shape[0] * GRID.shape[1])
        pair_parts.append(np.column_stack([voxel_codes, np.full(len(pairs), index), patches, counts]))
        seen, inverse = np.unique(codes, return_inverse=True)
        sums = [np.bincount(inverse, weights=rgb.reshape(-1, 3)[valid, c].astype(np.float64)) for c in range(3)]
        colour_parts.append(np.column_stack([seen.astype(np.float64), *sums]))
    pairs = np.concatenate(pair_parts)
    codes, pair_voxel = np.unique(pairs[:, 0], return_inverse=True)
    coords = decode(codes)
    colours = np.concatenate(colour_parts)
    colour_voxel = np.unique(colours[:, 0].astype(np.int64), return_inverse=True)[1]
    colour = np.stack([np.bincount(colour_voxel, weights=colours[:, 1 + c]) for c in range(3)], axis=1)
    pixels = np.bincount(pair_voxel, weights=pairs[:, 3])
    objectness = np.zeros(len(coords))
    for index in range(len(frames)):
        mine = pairs[:, 1] == index
        frame_objectness = random_features(index)[1].reshape(-1)[pairs[mine, 2]]
        objectness += np.bincount(pair_voxel[mine], weights=pairs[mine, 3] * frame_objectness, minlength=len(coords))
    return coords, pixels, objectness / pixels, colour / pixels[:, None], pairs, pair_voxel


def expected_features(voxel_ids, pairs, pair_voxel, frame_count):
    """Pixel-weighted mean of the features of the patches each of ``voxel_ids``' pixels fell in."""
    sums = np.zeros((len(voxel_ids), 512))
    counts = np.zeros(len(voxel_ids))
    position = {voxel: slot for slot, voxel in enumerate(voxel_ids)}
    wanted = np.isin(pair_voxel, voxel_ids)
    for index in range(frame_count):
        mine = wanted & (pairs[:, 1] == index)
        slots = np.array([position[v] for v in pair_voxel[mine]], dtype=np.int64)
        flat = random_features(index)[0].reshape(512, -1)
        np.add.at(sums, slots, pairs[mine, 3][:, None] * flat[:, pairs[mine, 2]].T)
        np.add.at(counts, slots, pairs[mine, 3])
    return sums / counts[:, None]


def build(camera, frames, settings):
    voxel_map = VoxelMap(settings)
    for index, (depth, rgb, pose) in enumerate(frames):
        features, objectness = random_features(index)
        voxel_map.integrate(depth, camera, pose, features, objectness, rgb, GRID, float(index))
    return voxel_map


@pytest.mark.parametrize("loader", [redwood, tum_cabinet], ids=["redwood", "tum_cabinet"])
def test_the_map_equals_a_recomputation_of_its_voxels(loader):
    camera, frames = loader()
    settings = MapSettings(carve=False, budget=2_000_000)  # carving and eviction would change the sums
    voxel_map = build(camera, frames, settings)
    coords, pixels, objectness, colour, pairs, pair_voxel = recompute(camera, frames, settings)
    rows = voxel_map.rows
    slots = voxel_map.slots
    np.testing.assert_array_equal(unpack(slots["keys"][rows]), coords)
    np.testing.assert_array_equal(slots["pixels"][rows], pixels)
    np.testing.assert_allclose(slots["objectness"][rows], objectness, atol=1e-5)
    np.testing.assert_allclose(slots["colour"][rows], colour, atol=1e-3)
    assert slots["count"][rows].max() > 1  # voxels fused over several frames are among those checked
    sample = np.random.default_rng(0).choice(len(coords), size=min(3000, len(coords)), replace=False)
    want = expected_features(np.sort(sample), pairs, pair_voxel, len(frames))
    got = slots["features"][rows[np.sort(sample)]].astype(np.float64)
    np.testing.assert_allclose(got, want, atol=FP16_TOLERANCE)


def near_cuboid_distances(voxel_map):
    centre, yaw, half = cabinet_cuboid()
    distance = distance_to_cuboid_surface(voxel_map.centres(), centre, yaw, half)
    return distance[distance <= 0.10]


def test_the_cabinet_s_voxels_hug_its_measured_cuboid(record_property):
    camera, frames = tum_cabinet()
    full = build(camera, frames, MapSettings())
    near = near_cuboid_distances(full)
    median, p95 = 100 * np.median(near), 100 * np.percentile(near, 95)
    record_property("cuboid_median_cm", median)
    record_property("cuboid_p95_cm", p95)
    print(f"\ncabinet: {near.size} voxels within 10 cm of the cuboid; distance to its faces median {median:.2f} cm, "
          f"95th percentile {p95:.2f} cm")
    assert near.size > 800 and median < 3.0 and p95 < 8.0
    # the same frames with the pose taken the other way round (map-to-camera) land nowhere near it
    inverted = build(camera, [(d, c, np.linalg.inv(p)) for d, c, p in frames[::4]], MapSettings())
    assert near_cuboid_distances(inverted).size < near.size / 10

    half_map = build(camera, frames[::2], MapSettings())
    half_near = near_cuboid_distances(half_map)
    assert abs(100 * np.median(half_near) - median) < 1.0 and half_near.size > 0.7 * near.size
    shared = np.isin(half_map.slots["keys"][half_map.rows], full.slots["keys"][full.rows]).mean()
    print(f"every second keyframe: {half_near.size} voxels near the cuboid, median {100 * np.median(half_near):.2f} "
          f"cm; {100 * shared:.1f} % of its voxels are in the full map")
    assert shared > 0.85
