"""The mapping node over real DDS: features, registered depth, camera_info and /tf in; the map's cloud, query,
keep-out grid, diagnostics and files out. Text embeddings come from a fake ~/encode_texts in the test process
whose texts are known unit vectors, and so are the patches' features: the right label is known per voxel.

The camera looks along the map's +y at a wall 2 m away (optical z = map y, optical x = map x, optical y =
-map z); patch columns 0-1 show "floor", column 2 "box", column 3 "stairs". K and P differ: P is the model.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from map_frames import quaternion_pose
from ros_harness import LoggedProcess, Probe, parameter_client, set_parameter, wait_until
from clip_dinoiser_ros.supervision import installed_script, write_params_file

HEIGHT, WIDTH, PATCH = 48, 64, 16
DEPTH_M, VOXEL = 2.0, 0.1
P_FX, P_CX, P_CY = 40.0, 31.5, 23.5  # the model; K says fx 55: a node that used K would put voxels elsewhere
TEXTS = {"floor": 0, "box": 1, "stairs": 2, "background": 3, "wall": 4}
DIM = 8
COLUMN_TEXT = ("floor", "floor", "box", "stairs")  # per patch column
POSE = (1.0, 2.0, 0.5, -math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))  # map <- optical: translation, quaternion xyzw
OPTICAL, MAP = "cam_optical", "map"
TOPICS = {"features": "/cam/segmentation/features", "depth": "/cam/depth", "info": "/cam/camera_info"}


def unit(text: str) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[TEXTS[text]] = 1.0
    return vector


class FakeEncoder:
    """EncodeTexts in the probe: each known text's unit vector; an unknown text is refused."""

    def __init__(self, probe: Probe, name: str, callback_group=None) -> None:
        from clip_dinoiser_ros.srv import EncodeTexts

        self.calls: list[list[str]] = []
        self.service = probe.node.create_service(EncodeTexts, name, self._answer, callback_group=callback_group)

    def _answer(self, request, response):
        self.calls.append(list(request.texts))
        unknown = [text for text in request.texts if text not in TEXTS]
        if unknown:
            response.success, response.message = False, f"unknown texts {unknown}"
            return response
        response.success, response.dimension, response.logit_scale = True, DIM, 100.0
        response.embeddings = np.concatenate([unit(text) for text in request.texts]).tolist()
        return response


class StalledEncoder(FakeEncoder):
    """The fake encoder, but until ``release`` it takes each request and holds its answer back (in a reentrant
    callback group: a held answer must not hold back the probe's other callbacks)."""

    def __init__(self, probe: Probe, name: str) -> None:
        from rclpy.callback_groups import ReentrantCallbackGroup

        self.probe, self.held, self.held_texts = probe, [], []
        super().__init__(probe, name, ReentrantCallbackGroup())

    async def _answer(self, request, response):
        from rclpy.task import Future

        if self.held is not None:
            held = Future(executor=self.probe.executor)
            self.held.append(held)
            self.held_texts.append(list(request.texts))
            await held
        return super()._answer(request, response)

    def release(self) -> None:
        """Send every held answer now, late, and answer at once from now on."""
        held, self.held = self.held, None
        for future in held:
            future.set_result(None)


def map_node(directory, *ros_arguments: str, **parameters) -> LoggedProcess:
    values = {"feature_topics": [TOPICS["features"]], "depth_topics": [TOPICS["depth"]],
              "camera_info_topics": [TOPICS["info"]], "input_reliability": "reliable", "voxel_size": VOXEL,
              "prompts": ["floor", "box"], "publish_rate_hz": 5.0, "min_cluster_voxels": 1,
              "encode_texts_service": "/fake/encode_texts", "map_file": str(directory / "default_map.npz"),
              **parameters}
    params = write_params_file(directory, values)
    return LoggedProcess([installed_script("clip-dinoiser-map-node"), "--ros-args", "--params-file", params,
                          *ros_arguments],
                         directory / "node.log", name="the mapping node")


def frame_messages(stamp, frame_id: str):
    """(features, depth, camera_info) of the wall frame, all with ``stamp`` and ``frame_id``."""
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from clip_dinoiser_ros.pipeline.feature_messages import features_message
    from clip_dinoiser_ros.pipeline.image_codec import array_to_image
    from clip_dinoiser_ros.spatial import FrameFeatures, PatchGrid

    header = Header(stamp=stamp, frame_id=frame_id)
    grid = PatchGrid((HEIGHT, WIDTH), (HEIGHT, WIDTH), PATCH)
    features = np.stack([np.stack([unit(COLUMN_TEXT[col]) for col in range(grid.shape[1])], axis=1)] * grid.shape[0],
                        axis=1)  # (E, rows, cols)
    message = features_message(FrameFeatures(features, np.full(grid.shape, 0.9, np.float32), grid), header, 1, 100.0)
    depth = array_to_image(np.full((HEIGHT, WIDTH), int(DEPTH_M * 1000), np.uint16), "mono16", header)
    depth.encoding = "16UC1"  # millimetres, REP 118
    info = CameraInfo(header=header, width=WIDTH, height=HEIGHT, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[55.0, 0, P_CX, 0, 55.0, P_CY, 0, 0, 1], r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                      p=[P_FX, 0, P_CX, 0, 0, P_FX, P_CY, 0, 0, 0, 1, 0])
    return message, depth, info


def expected_voxels() -> dict[tuple[int, int, int], set[str]]:
    """Independently: each depth pixel back-projected with P, posed, quantised; the texts of its patches."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    optical = np.stack([(u - P_CX) / P_FX * DEPTH_M, (v - P_CY) / P_FX * DEPTH_M, np.full(u.shape, DEPTH_M)], -1)
    pose = quaternion_pose(*POSE)
    points = optical.reshape(-1, 3) @ pose[:3, :3].T + pose[:3, 3]
    voxels: dict[tuple[int, int, int], set[str]] = {}
    for key, column in zip(map(tuple, np.floor(points / VOXEL).astype(int)), (u // PATCH).ravel()):
        voxels.setdefault(key, set()).add(COLUMN_TEXT[column])
    return voxels


def cloud_voxels(cloud) -> dict[tuple[int, int, int], tuple[int, float]]:
    from sensor_msgs_py import point_cloud2

    points = point_cloud2.read_points(cloud, ["x", "y", "z", "label", "confidence"])
    return {tuple(np.floor(np.array([p[0], p[1], p[2]]) / VOXEL).astype(int)): (int(p[3]), float(p[4]))
            for p in points}


def diagnostics_values(collector) -> dict[str, str]:
    for array in reversed([m for m, _ in list(collector.messages)]):
        for status in array.status:
            if status.name == "/clip_dinoiser_map: map":
                return {kv.key: kv.value for kv in status.values}
    return {}


@pytest.fixture(scope="module")
def scene(probe, tmp_path_factory):
    """The node with one frame integrated (TF sent first), the fake encoder and the probe's outputs."""
    import tf2_ros
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TransformStamped
    from nav_msgs.msg import OccupancyGrid
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from clip_dinoiser_ros.msg import SegmentationFeatures

    encoder = FakeEncoder(probe, "/fake/encode_texts")
    node = map_node(tmp_path_factory.mktemp("map_node"))
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    outputs = {"points": probe.collect(PointCloud2, "/semantic_map/points", latched),
               "grid": probe.collect(OccupancyGrid, "/semantic_map/grid", latched),
               "diagnostics": probe.collect(DiagnosticArray, "/diagnostics")}
    publishers = {name: probe.node.create_publisher(kind, TOPICS[name], 10)
                  for name, kind in (("features", SegmentationFeatures), ("depth", Image), ("info", CameraInfo))}
    broadcaster = tf2_ros.TransformBroadcaster(probe.node)
    wait_until(lambda: node.alive() and all(p.get_subscription_count() for p in publishers.values())
               and broadcaster.pub_tf.get_subscription_count(), 60, "the mapping node's subscriptions")
    wait_until(lambda: diagnostics_values(outputs["diagnostics"]), 30, "the node's diagnostics")
    for attempt in range(1, 6):  # as a robot's TF and camera go on: a first /tf lost in discovery costs a frame
        stamp = probe.node.get_clock().now().to_msg()
        transform = TransformStamped()
        transform.header.stamp, transform.header.frame_id, transform.child_frame_id = stamp, MAP, OPTICAL
        t = transform.transform
        (t.translation.x, t.translation.y, t.translation.z, t.rotation.x, t.rotation.y, t.rotation.z,
         t.rotation.w) = POSE
        broadcaster.sendTransform(transform)
        for name, message in zip(("features", "depth", "info"), frame_messages(stamp, OPTICAL)):
            publishers[name].publish(message)
        done = wait_until(lambda: (v := diagnostics_values(outputs["diagnostics"])) and (
            v["frames_integrated"] == "1" or int(v["tf_failures"]) >= attempt) and v, 30,
            f"the frame integrated or skipped\n{node.tail()}")
        if done["frames_integrated"] == "1":
            break
    else:
        raise AssertionError(f"no frame integrated in 5 attempts\n{node.tail()}")
    yield {"node": node, "encoder": encoder, "publishers": publishers, "stamp": stamp, **outputs}
    assert node.stop() == 0, node.tail()


def labelled_cloud(scene):
    def found():
        cloud = scene["points"].last()
        return cloud if cloud is not None and cloud.width and all(
            label != 65535 for label, _ in cloud_voxels(cloud).values()) else None

    return wait_until(found, 30, f"a labelled semantic_map/points\n{scene['node'].tail()}")


def test_each_voxel_seen_once_has_the_label_of_the_patch_that_made_it(scene):
    cloud = labelled_cloud(scene)
    assert cloud.header.frame_id == MAP
    voxels, expected = cloud_voxels(cloud), expected_voxels()
    assert set(voxels) == set(expected)  # P, the pose and the depth scale put every voxel where it belongs
    prompts = ["floor", "box"]
    pure = {key: texts.pop() for key, texts in expected.items() if len(texts) == 1 and texts <= set(prompts)}
    assert len(pure) > 20 and {"floor", "box"} == set(pure.values())
    assert all(voxels[key][0] == prompts.index(text) and voxels[key][1] > 0.99 for key, text in pure.items())


def test_query_finds_the_box_where_its_patches_were(scene, probe):
    from clip_dinoiser_ros.srv import QueryMap

    labelled_cloud(scene)
    client = probe.node.create_client(QueryMap, "/clip_dinoiser_map/query")
    answer = probe.call(client, QueryMap.Request(texts=["floor", "box", "stairs"], min_score=0.5))
    assert answer.success, answer.message
    assert [len(a.detections) >= 1 for a in answer.detections] == [True] * 3
    best = answer.best[1]
    assert best.results[0].hypothesis.class_id == "box" and best.results[0].hypothesis.score > 0.99
    assert best.header.frame_id == MAP
    box_keys = np.array([key for key, texts in expected_voxels().items() if texts == {"box"}])
    low, high = box_keys.min(axis=0) * VOXEL, (box_keys.max(axis=0) + 1) * VOXEL
    centre, size = best.bbox.center.position, best.bbox.size
    lower = np.array([centre.x - size.x / 2, centre.y - size.y / 2, centre.z - size.z / 2])
    upper = np.array([centre.x + size.x / 2, centre.y + size.y / 2, centre.z + size.z / 2])
    assert np.all(lower <= low + 1e-6) and np.all(upper >= high - 1e-6)  # every voxel of the box inside
    assert np.all(upper - lower <= high - low + 2 * VOXEL + 1e-6)  # at most the boundary voxels beside it


def test_keepout_grid_is_the_stairs_probability_seen_from_above(scene, probe):
    from clip_dinoiser_ros.srv import SetKeepout

    labelled_cloud(scene)
    client = probe.node.create_client(SetKeepout, "/clip_dinoiser_map/set_keepout")
    answer = probe.call(client, SetKeepout.Request(query="stairs"))
    assert answer.success, answer.message
    assert ["floor", "box", "stairs"] in scene["encoder"].calls  # stairs competes with the prompts
    expected = expected_voxels()
    keys = np.array(list(expected))
    low = keys.min(axis=0)
    columns: dict[tuple[int, int], set[str]] = {}
    for key, texts in expected.items():
        columns.setdefault((key[0], key[1]), set()).update(texts)

    def stairs_grid():
        grid = scene["grid"].last()
        return grid if grid is not None and 100 in grid.data else None

    grid = wait_until(stairs_grid, 30, "a grid showing the stairs")
    assert grid.header.frame_id == MAP and grid.info.resolution == pytest.approx(VOXEL)
    assert (grid.info.origin.position.x, grid.info.origin.position.y) == pytest.approx(tuple(low[:2] * VOXEL))
    cells = np.array(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    for (x, y), texts in columns.items():
        value = cells[y - low[1], x - low[0]]
        if texts == {"stairs"}:
            assert value == 100
        elif "stairs" not in texts:
            assert value == 0
    seen = {(y - low[1], x - low[0]) for x, y in columns}
    assert all(cells[r, c] == -1 for r in range(cells.shape[0]) for c in range(cells.shape[1]) if (r, c) not in seen)


def test_a_frame_without_transform_is_counted_and_skipped(scene):
    from builtin_interfaces.msg import Time

    labelled_cloud(scene)
    before = wait_until(lambda: (v := diagnostics_values(scene["diagnostics"])) and v["frames_integrated"] == "1"
                        and v, 30, "the first frame integrated")
    stamp = Time(sec=scene["stamp"].sec + 1, nanosec=scene["stamp"].nanosec)
    for name, message in zip(("features", "depth", "info"), frame_messages(stamp, "nowhere_optical")):
        scene["publishers"][name].publish(message)
    failures = int(before["tf_failures"])  # frames the fixture lost to a /tf not yet delivered, if any
    after = wait_until(lambda: (v := diagnostics_values(scene["diagnostics"])) and int(v["tf_failures"]) == failures + 1
                       and v,
                       30, f"the frame counted as a TF failure\n{scene['node'].tail()}")
    assert after["frames_integrated"] == "1" and after["voxels"] == before["voxels"]
    assert "nowhere_optical" in after["last_tf_error"]


def test_save_and_load_round_trip_and_a_query_without_encoder_is_refused(scene, probe, tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from clip_dinoiser_ros.srv import MapFile, QueryMap

    cloud = labelled_cloud(scene)
    save = probe.node.create_client(MapFile, "/clip_dinoiser_map/save")
    path = tmp_path / "saved" / "map.npz"
    saved = probe.call(save, MapFile.Request(path=str(path)))
    assert saved.success and path.is_file(), saved.message
    by_default = probe.call(save, MapFile.Request(path=""))
    assert by_default.success and "default_map.npz" in by_default.message, by_default.message
    other = map_node(tmp_path / "other", "-r", "__ns:=/other", encode_texts_service="/absent/encode_texts")
    try:
        points = probe.collect(PointCloud2, "/other/semantic_map/points", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        loaded = probe.call(probe.node.create_client(MapFile, "/other/clip_dinoiser_map/load"),
                            MapFile.Request(path=str(path)), timeout=60)
        assert loaded.success, loaded.message
        copy = wait_until(lambda: points.last() if points.last() is not None and points.last().width else None, 30,
                          f"the loaded map's cloud\n{other.tail()}")
        assert set(cloud_voxels(copy)) == set(cloud_voxels(cloud))
        refused = probe.call(probe.node.create_client(QueryMap, "/other/clip_dinoiser_map/query"),
                             QueryMap.Request(texts=["box"]))
        assert not refused.success
        assert "/absent/encode_texts" in refused.message and "not available" in refused.message, refused.message
        missing = probe.call(probe.node.create_client(MapFile, "/other/clip_dinoiser_map/load"),
                             MapFile.Request(path=str(tmp_path / "none.npz")))
        assert not missing.success and "none.npz" in missing.message
    finally:
        assert other.stop() == 0, other.tail()


def test_a_query_the_encoder_does_not_answer_in_time_is_refused_and_the_late_answer_does_no_harm(probe, tmp_path):
    from clip_dinoiser_ros.srv import QueryMap

    encoder = StalledEncoder(probe, "/stalled/encode_texts")
    node = map_node(tmp_path, "-r", "__ns:=/slow", encode_texts_service="/stalled/encode_texts", encode_timeout_s=0.5)
    try:
        wait_until(lambda: encoder.held_texts, 60, "the node asking the encoder for its prompts (it found it)")
        client = probe.node.create_client(QueryMap, "/slow/clip_dinoiser_map/query")
        refused = probe.call(client, QueryMap.Request(texts=["box"]), timeout=60)
        assert not refused.success
        assert "/stalled/encode_texts did not answer within 0.5 s (encode_timeout_s)" in refused.message, \
            refused.message
        assert ["box"] in encoder.held_texts and not encoder.calls  # it was asked, and is still holding the answer
        encoder.release()
        wait_until(lambda: ["box"] in encoder.calls, 30, "the late answer sent")
        answer = set_parameter(parameter_client(probe, "/slow/clip_dinoiser_map"), "encode_timeout_s", 60.0)
        assert answer.successful, answer.reason
        answered = probe.call(client, QueryMap.Request(texts=["box"]), timeout=90)
        assert answered.success and "the map is empty" in answered.message, answered.message
        assert node.alive(), node.tail()
    finally:
        assert node.stop() == 0, node.tail()


def test_config_lists_every_mapping_parameter_with_its_default_and_comment():
    from pathlib import Path

    import yaml

    from clip_dinoiser_ros.ros.map_parameters import MAP_PARAMETERS

    path = Path(__file__).resolve().parents[1] / "config" / "clip_dinoiser_mapping.yaml"
    assert yaml.safe_load(path.read_text()) == {"/**": {"ros__parameters": {s.name: s.default for s in MAP_PARAMETERS}}}
    lines = path.read_text().splitlines()
    for spec in MAP_PARAMETERS:
        line = next(index for index, text in enumerate(lines) if text.strip().startswith(f"{spec.name}:"))
        assert lines[line - 1].strip() == f"# {spec.description}. Allowed: {spec.allowed()}. Applies: {spec.applies}."
