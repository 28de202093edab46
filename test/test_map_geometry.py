"""The map's geometry on known voxel sets: connected clusters with their boxes (mapping.clusters) and the
projection onto the ground plane (mapping.projection), against answers worked out by hand or by scipy."""
import numpy as np
import pytest
from scipy import ndimage

from clip_dinoiser_ros.mapping.clusters import clusters, components
from clip_dinoiser_ros.mapping.keys import pack
from clip_dinoiser_ros.mapping.projection import project_max


def keys_of(*coords) -> np.ndarray:
    return pack(np.array(coords, np.int64).reshape(-1, 3))


def test_voxels_touching_by_a_face_an_edge_or_a_corner_are_one_cluster_others_not():
    block = [(x, y, 0) for x in (0, 1) for y in (0, 1)]
    corner_pair = [(10, 10, 10), (11, 11, 11)]  # a corner is all they share
    edge_pair = [(-5, -5, 3), (-4, -4, 3)]  # an edge (negative coordinates too)
    apart = [(0, 0, 2)]  # one empty voxel above the block
    keys = keys_of(*block, *corner_pair, *edge_pair, *apart)
    order = np.argsort(keys)
    component = np.empty(keys.size, np.int64)
    component[order] = components(keys[order])
    groups = [component[0:4], component[4:6], component[6:8], component[8:9]]
    assert all(len(set(group)) == 1 for group in groups)
    assert len({group[0] for group in groups}) == 4
    assert sorted(set(component)) == [0, 1, 2, 3]


def test_a_long_chain_in_any_order_is_one_component():
    chain = [(i, i % 2, (i // 2) % 2) for i in range(60)]  # each voxel touches the next by a face or an edge
    keys = np.sort(keys_of(*chain))
    assert (components(keys) == 0).all()


def test_components_equal_scipy_s_26_connected_labelling_of_random_voxels():
    rng = np.random.default_rng(3)
    occupied = rng.random((14, 12, 10)) < 0.12
    expected, count = ndimage.label(occupied, structure=np.ones((3, 3, 3), int))
    coords = np.argwhere(occupied) - 6  # around the origin: negative coordinates too
    keys = pack(coords)
    order = np.argsort(keys)
    found = components(keys[order])
    theirs = expected[tuple((coords[order] + 6).T)]
    assert found.max() + 1 == count > 10
    pairs = set(zip(found.tolist(), theirs.tolist()))
    assert len(pairs) == count  # the same partition: one of ours for each of theirs and back


def test_clusters_report_each_group_s_box_mean_score_and_size_best_first():
    block = [(x, y, z) for x in (2, 3, 4) for y in (-1, 0) for z in (0,)]  # 3 x 2 x 1 voxels
    lone = [(20, 0, 0)]
    pair = [(-3, 5, 7), (-3, 5, 8)]
    keys = keys_of(*pair, *block, *lone)  # any order
    scores = np.array([0.9, 0.7] + [0.5] * 6 + [0.95], np.float32)
    found = clusters(keys, scores, 0.1)
    assert [c.voxels for c in found] == [1, 2, 6]  # best mean score first
    lone_cluster, pair_cluster, block_cluster = found
    assert lone_cluster.score == pytest.approx(0.95) and pair_cluster.score == pytest.approx(0.8)
    assert block_cluster.centre == pytest.approx((0.35, 0.0, 0.05))  # cubes from x 0.2 to 0.5, y -0.1 to 0.1
    assert block_cluster.size == pytest.approx((0.3, 0.2, 0.1))
    assert pair_cluster.centre == pytest.approx((-0.25, 0.55, 0.8))
    assert pair_cluster.size == pytest.approx((0.1, 0.1, 0.2))
    assert lone_cluster.centre == pytest.approx((2.05, 0.05, 0.05)) and lone_cluster.size == pytest.approx((0.1,) * 3)
    assert [c.voxels for c in clusters(keys, scores, 0.1, min_voxels=2)] == [2, 6]
    assert clusters(keys[:0], scores[:0], 0.1) == []


def test_equal_scores_put_the_larger_cluster_first():
    keys = keys_of((0, 0, 0), (5, 0, 0), (6, 0, 0))
    found = clusters(keys, np.full(3, 0.5, np.float32), 0.05)
    assert [c.voxels for c in found] == [2, 1]


def test_projection_keeps_each_column_s_largest_value_and_leaves_empty_cells_unknown():
    coords = [(-2, 1, 0), (-2, 1, 3), (0, 1, -1), (1, 3, 2), (1, 3, 5)]
    values = np.array([0.2, 0.9, 0.4, 0.1, 0.3], np.float32)
    ground = project_max(keys_of(*coords), values, 0.05)
    assert ground.values.shape == (3, 4)  # rows: y 1..3; columns: x -2..1
    assert ground.origin == pytest.approx((-0.10, 0.05)) and ground.z == pytest.approx(-0.05)
    assert ground.resolution == 0.05
    expected = np.full((3, 4), np.nan, np.float32)
    expected[0, 0], expected[0, 2], expected[2, 3] = 0.9, 0.4, 0.3
    np.testing.assert_array_equal(ground.values, expected)


def test_projection_of_no_voxels_is_an_empty_grid():
    ground = project_max(np.zeros(0, np.int64), np.zeros(0, np.float32), 0.1)
    assert ground.values.shape == (0, 0) and ground.resolution == 0.1


def test_projection_equals_a_dense_max_over_z_of_random_voxels():
    rng = np.random.default_rng(5)
    coords = np.unique(rng.integers(-8, 8, size=(300, 3)), axis=0)
    values = rng.random(len(coords)).astype(np.float32)
    ground = project_max(pack(coords), values, 0.1)
    low = coords.min(axis=0)
    dense = np.full((16, 16), np.nan, np.float32)  # [y, x]
    for (x, y, _), value in zip(coords - low, values):
        dense[y, x] = value if np.isnan(dense[y, x]) else max(dense[y, x], value)
    height, width = ground.values.shape
    np.testing.assert_array_equal(ground.values, dense[:height, :width])
    assert ground.origin == pytest.approx(tuple(low[:2] * 0.1)) and ground.z == pytest.approx(low[2] * 0.1)
