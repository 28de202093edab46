"""The voxel map on synthetic scenes: what moves goes away, the budget holds, queries follow the engine's rule,
a saved map comes back whole. Features here are chosen or random vectors: no model semantics is involved."""
import numpy as np
import pytest

from abandoned_parts import plant_abandoned
from clip_dinoiser_ros.mapping import MapSettings, VoxelMap, load_map, query, save_map
from clip_dinoiser_ros.mapping.carving import seen_through, view_box
from clip_dinoiser_ros.mapping.half import to_float16, to_float32
from clip_dinoiser_ros.mapping.query import CHUNK_ROWS, GROUP_ROWS, first_best, voxel_answers
from clip_dinoiser_ros.spatial import Intrinsics, PatchGrid
from map_frames import look_at, random_features, render_depth

CAMERA = Intrinsics(fx=100.0, fy=100.0, cx=79.5, cy=59.5, width=160, height=120)
GRID = PatchGrid((120, 160), (112, 149), 16)
BOX = (np.array([1.3, -0.2, -0.2]), np.array([1.7, 0.2, 0.2]))
RGB = np.full((120, 160, 3), 128, np.uint8)


def frame_features(seed=0, dim=512):
    features, objectness = random_features(seed, GRID)
    return features[:dim], objectness


def integrate(voxel_map, pose, boxes, stamp, wall_x=3.0, features=None):
    depth = render_depth(CAMERA, pose, boxes, wall_x)
    feats, objectness = features or frame_features(int(stamp))
    voxel_map.integrate(depth, CAMERA, pose, feats, objectness, RGB, GRID, stamp)


def box_voxels(voxel_map):
    centres = voxel_map.centres()
    inside = np.all((centres > BOX[0] - 0.03) & (centres < BOX[1] + 0.03), axis=1)
    return voxel_map.rows[inside]


@pytest.mark.parametrize("carve", [True, False])
def test_a_box_that_was_taken_away_leaves_the_map(carve):
    voxel_map = VoxelMap(MapSettings(max_weight=5.0, carve=carve))
    eyes = [np.array([0.0, y, 0.1]) for y in (-0.3, -0.15, 0.0, 0.15, 0.3)]
    for stamp, eye in enumerate(eyes[:3]):
        integrate(voxel_map, look_at(eye, [3.0, 0.0, 0.0]), [BOX], float(stamp))
    seen = box_voxels(voxel_map)
    assert seen.size > 50 and voxel_map.slots["weight"][seen].max() >= 2
    for stamp, eye in enumerate(eyes * 2, start=3):
        integrate(voxel_map, look_at(eye, [3.0, 0.0, 0.0]), [], float(stamp))
    remaining = box_voxels(voxel_map)
    if carve:
        assert remaining.size == 0, voxel_map.slots["weight"][remaining]
        wall = np.abs(voxel_map.centres()[:, 0] - 3.0) < 0.05
        assert wall.sum() > 500  # the wall behind it, seen all along, stays
    else:
        assert remaining.size == seen.size  # without carving nothing would remove it: the test can fail


@pytest.mark.parametrize("eviction", ["distance", "age"])
def test_a_long_trajectory_never_exceeds_the_voxel_budget(eviction):
    budget = 2500
    voxel_map = VoxelMap(MapSettings(budget=budget, eviction=eviction, carve=False))
    positions = [np.array([0.0, 0.4 * step, 0.0]) for step in range(40)]
    for stamp, eye in enumerate(positions):
        integrate(voxel_map, look_at(eye, eye + [1.0, 0.0, 0.0]), [], float(stamp), wall_x=2.0)
        assert len(voxel_map) <= budget and voxel_map.slots["keys"].shape[0] <= budget
    assert voxel_map.slots["last_seen"][voxel_map.rows].min() > 0  # the first frame's voxels were evicted
    distance = np.linalg.norm(voxel_map.centres() - positions[-1], axis=1)
    last_view = np.abs(voxel_map.centres()[:, 1] - positions[-1][1]) < 0.5
    assert last_view.sum() > 500  # what the camera sees now is kept
    assert distance.max() < np.linalg.norm([2.0, 0.4 * 40, 0.0]) / 2  # the far past is gone


def unit(vector):
    return vector / np.linalg.norm(vector)


def half_and_half_features(left, right, objectness):
    """Feature ``left`` on the left half of the patch grid, ``right`` on the right half."""
    features = np.empty((left.size, *GRID.shape), np.float32)
    half = GRID.shape[1] // 2
    features[:, :, :half], features[:, :, half:] = left[:, None, None], right[:, None, None]
    return features, np.full(GRID.shape, objectness, np.float32)


def test_a_query_gives_the_texts_where_their_features_were_seen():
    rng = np.random.default_rng(3)
    texts = np.stack([unit(rng.standard_normal(512)) for _ in range(3)]).astype(np.float32)
    voxel_map = VoxelMap(MapSettings(carve=False))
    pose = look_at(np.zeros(3), [1.0, 0.0, 0.0])
    integrate(voxel_map, pose, [], 0.0, wall_x=2.0, features=half_and_half_features(texts[1], texts[2], 0.9))
    answer = query(voxel_map, texts)
    camera_y = voxel_map.centres()[:, 1]  # optical x (image right) is world -y when looking along +x
    left, right = camera_y > 0.15, camera_y < -0.15
    assert left.sum() > 100 and right.sum() > 100
    assert (answer.labels[left] == 1).all() and (answer.labels[right] == 2).all()
    np.testing.assert_allclose(answer.probs.sum(axis=1), 1.0, atol=1e-5)
    centres, scores = answer.winners(2)
    assert centres.shape[0] == (answer.labels == 2).sum() and (scores >= 0.5).all()
    assert (answer.scores[left | right] > 0.99).all()  # mixed voxels lie on the seam only


@pytest.mark.parametrize("objectness,label", [(0.2, 0), (0.8, 1)])
def test_the_background_rule_uses_the_fused_objectness(objectness, label):
    rng = np.random.default_rng(4)
    texts = np.stack([unit(rng.standard_normal(512)) for _ in range(3)]).astype(np.float32)
    ambiguous = unit(texts[1] + texts[2] + 0.01 * texts[1])  # text 1 wins by a little: uncertain
    voxel_map = VoxelMap(MapSettings(carve=False))
    pose = look_at(np.zeros(3), [1.0, 0.0, 0.0])
    integrate(voxel_map, pose, [], 0.0, wall_x=2.0, features=half_and_half_features(ambiguous, ambiguous, objectness))
    assert (query(voxel_map, texts).labels == 1).all()
    assert (query(voxel_map, texts, background_index=0).labels == label).all()


def test_a_saved_map_loads_whole(tmp_path):
    voxel_map = VoxelMap(MapSettings(voxel_size=0.1, budget=50_000))
    for stamp, y in enumerate((-0.2, 0.0, 0.2)):
        integrate(voxel_map, look_at(np.array([0.0, y, 0.0]), [3.0, 0.0, 0.0]), [BOX], float(stamp))
    abandoned = plant_abandoned(tmp_path / "map.npz")  # by an earlier save killed outright
    save_map(voxel_map, tmp_path / "map.npz")
    loaded = load_map(tmp_path / "map.npz")
    assert not abandoned.exists() and not list(tmp_path.glob(".*.part"))
    assert loaded.settings == voxel_map.settings and len(loaded) == len(voxel_map)
    for name, values in voxel_map.slots.items():
        np.testing.assert_array_equal(loaded.slots[name][loaded.rows], values[voxel_map.rows], err_msg=name)
    texts = np.eye(512, dtype=np.float32)[:4]
    np.testing.assert_array_equal(query(loaded, texts).probs, query(voxel_map, texts).probs)
    (tmp_path / "other.npz").write_bytes(b"not a map")
    with pytest.raises(ValueError, match="not a saved voxel map"):
        load_map(tmp_path / "other.npz")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_each_voxel_keeps_the_norm_of_its_stored_feature(dtype, tmp_path):
    """Queries divide by the kept norms: they must follow every write (merges, evicted slots reused, a load)."""
    voxel_map = VoxelMap(MapSettings(voxel_size=0.1, budget=400, feature_dtype=dtype))
    for stamp, y in enumerate((-0.4, -0.2, 0.0, 0.2, 0.4)):
        integrate(voxel_map, look_at(np.array([0.0, y, 0.0]), [3.0, 0.0, 0.0]), [BOX], float(stamp))
    assert voxel_map.slots["last_seen"][voxel_map.rows].min() > 0  # the first frame's voxels were evicted
    save_map(voxel_map, tmp_path / "map.npz")
    unset = VoxelMap(MapSettings(feature_dtype=dtype))
    unset.add(np.array([0, 1]))  # voxels added, no feature set yet: their cosines are 0, not NaN
    assert np.isfinite(query(unset, np.eye(512, dtype=np.float32)[:3]).probs).all()
    for kept in (voxel_map, load_map(tmp_path / "map.npz")):
        stored = kept.slots["features"][kept.rows]
        assert stored.dtype == dtype and kept.slots["count"][kept.rows].max() > 1
        np.testing.assert_allclose(kept.slots["norm"][kept.rows], np.linalg.norm(stored.astype(np.float64), axis=1),
                                   rtol=1e-6)


@pytest.mark.parametrize("change,needle", [
    (dict(depth=np.zeros((100, 160), np.float32)), "depth is"),
    (dict(colour=np.zeros((120, 160), np.uint8)), "colour must be"),
    (dict(features=np.zeros((512, 3, 3), np.float32)), "features"),
    (dict(pose=np.zeros((4, 4))), "pose must be"),
])
def test_inputs_of_another_frame_are_refused_with_the_reason(change, needle):
    features, objectness = frame_features()
    inputs = dict(depth=np.ones((120, 160), np.float32), pose=np.eye(4), features=features, colour=RGB)
    inputs.update(change)
    with pytest.raises(ValueError, match=needle):
        VoxelMap().integrate(inputs["depth"], CAMERA, inputs["pose"], inputs["features"], objectness,
                             inputs["colour"], GRID, 0.0)
    with pytest.raises(ValueError, match="unit vectors"):
        query(VoxelMap(), np.ones((2, 512), np.float32))


def test_fp16_rows_convert_as_numpy_rounds_them_bit_for_bit():
    rng = np.random.default_rng(5)
    values = (rng.standard_normal((300, 512)) * np.exp(rng.uniform(-20, 10, (300, 512)))).astype(np.float32)
    values[0, :3] = 0.0, -0.0, 1e-8  # zeros and an fp16 subnormal
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    halves = to_float16(values)
    assert halves.dtype == np.float16 and halves.shape == values.shape
    np.testing.assert_array_equal(halves.view(np.uint16), expected.view(np.uint16))
    finite = np.isfinite(expected).all(axis=1)
    buffer = np.empty((finite.sum(), 512), np.float32)
    for rows, out in ((expected[finite], None), (expected[finite], buffer), (values[finite], buffer)):
        converted = to_float32(rows, out=out)
        assert out is None or converted is out
        np.testing.assert_array_equal(converted.view(np.uint32),  # bits: -0.0 stays -0.0
                                      rows.astype(np.float32).view(np.uint32))
    assert to_float32(np.zeros((0, 512), np.float16)).shape == (0, 512)


@pytest.mark.parametrize("threads", [1, 3])
def test_query_answers_equal_the_rule_recomputed_in_float64(threads):
    rng = np.random.default_rng(6)
    count = GROUP_ROWS + 3 * CHUNK_ROWS + 5  # several groups and blocks, short last ones
    features = (rng.standard_normal((count, 512)) * rng.uniform(0.2, 1.0, (count, 1)) / 22.6).astype(np.float16)
    objectness = rng.random(count).astype(np.float32)
    texts = np.stack([unit(rng.standard_normal(512)) for _ in range(5)]).astype(np.float32)
    texts[1] = unit(features[0].astype(np.float32))  # a confident voxel besides the uncertain ones
    mean = features.astype(np.float64)
    norms = np.linalg.norm(mean, axis=1)
    got = voxel_answers(features, norms.astype(np.float32), objectness, texts, background_index=0, threads=threads)
    logits = 100.0 * (mean / norms[:, None]) @ texts.T.astype(np.float64)
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    rule = (want.max(axis=1) < 0.99) & (objectness <= 0.5)
    want[rule, 0] = 1.0
    want /= want.sum(axis=1, keepdims=True)
    assert 0 < rule.sum() < count and want[0, 1] > 0.99
    np.testing.assert_allclose(got.probs, want, atol=2e-5)
    np.testing.assert_array_equal(got.labels, want.argmax(axis=1))
    np.testing.assert_allclose(got.scores, want.max(axis=1), atol=2e-5)


def test_the_winning_text_of_a_tie_is_the_first_as_argmax_gives_it():
    exps = np.random.default_rng(7).random((6, 500)).astype(np.float32)
    exps[[1, 4], :200] = exps.max(axis=0)[:200] + 1.0  # texts 1 and 4 tie for the best of 200 voxels
    exps /= exps.max(axis=0)
    labels = first_best(exps)
    assert (labels[:200] == 1).all()
    np.testing.assert_array_equal(labels, exps.argmax(axis=0))


def test_carving_projects_only_the_voxels_the_view_can_reach():
    voxel_map = VoxelMap(MapSettings(carve=False))
    for stamp, yaw in enumerate(np.linspace(-np.pi, np.pi, 8, endpoint=False)):
        integrate(voxel_map, look_at(np.zeros(3), [np.cos(yaw), np.sin(yaw), 0.0]), [BOX], float(stamp), wall_x=2.0)
    depth = render_depth(CAMERA, look_at(np.zeros(3), [1.0, 0.0, 0.0]), [], 3.0)  # the box is gone: free now
    pose = look_at(np.zeros(3), [1.0, 0.0, 0.0])
    everywhere = voxel_map.rows[seen_through(voxel_map.centres(), depth, CAMERA, pose, 5.0, 0.1)]
    candidates = voxel_map.rows_in_box(*view_box(CAMERA, pose, float(depth[depth > 0].max())))
    assert everywhere.size > 50 and np.isin(everywhere, candidates).all()
    assert candidates.size < len(voxel_map) / 2  # the wall seen from the other headings is not looked at
