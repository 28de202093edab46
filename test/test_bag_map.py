"""``clip-dinoiser-bag map`` and ``query`` on a bag of the 5 real Redwood frames (../shared/data/rgbd), posed on
/tf (map -> odom on /tf_static, odom -> the camera's optical frame on /tf, from trajectory.log).

The map's voxels (keys, pixel counts, colours) must equal test_mapping_real's recomputation written without the
library, and its features those of the library fed the same frames directly with the same engine's features:
so what is checked is the bag plumbing (pairing, depth decoding, intrinsics from P, the TF direction and chain).
Random weights (tiny model): the features and the query's clusters carry no meaning; their plumbing is checked.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from clip_dinoiser_ros.bag.writing import BagWriter
from clip_dinoiser_ros.mapping import MapSettings, VoxelMap, load_map
from clip_dinoiser_ros.mapping.keys import unpack
from map_frames import need, redwood
from test_mapping_real import recompute

tf2_ros = pytest.importorskip("tf2_ros", reason="map needs tf2_ros")

TINY = ["--clip-model", "ViT-Tiny-16-test", "--random-weights", "--short-side", "32"]
SETTINGS = MapSettings(carve=False, budget=2_000_000)  # as test_mapping_real: carving would change the sums
START_S = 100
PERIOD_NS = 10**8
OPTICAL = "camera_color_optical_frame"


def quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (the largest of the four first, for accuracy)."""
    trace = np.trace(rotation)
    candidates = [trace, rotation[0, 0], rotation[1, 1], rotation[2, 2]]
    best = int(np.argmax(candidates))
    if best == 0:
        w = np.sqrt(1.0 + trace) / 2.0
        x, y, z = (rotation[2, 1] - rotation[1, 2]) / (4 * w), (rotation[0, 2] - rotation[2, 0]) / (4 * w), \
            (rotation[1, 0] - rotation[0, 1]) / (4 * w)
    else:
        i, j, k = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][best - 1]
        q = np.zeros(3)
        q[i] = np.sqrt(1.0 + rotation[i, i] - rotation[j, j] - rotation[k, k]) / 2.0
        q[j] = (rotation[j, i] + rotation[i, j]) / (4 * q[i])
        q[k] = (rotation[k, i] + rotation[i, k]) / (4 * q[i])
        w = (rotation[k, j] - rotation[j, k]) / (4 * q[i])
        x, y, z = q
    return float(x), float(y), float(z), float(w)


def redwood_bag(path: Path) -> tuple:
    """The 5 frames at 10 Hz with their camera_info and poses, and a 6th (frame 0 again) 1 s after the last
    transform: it has no pose."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    camera, frames = redwood()
    root = need("rgbd")

    def header(ns: int, frame_id: str) -> Header:
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame_id)

    def transform(ns: int, parent: str, child: str, pose: np.ndarray) -> TransformStamped:
        message = TransformStamped(header=header(ns, parent), child_frame_id=child)
        t, r = message.transform.translation, message.transform.rotation
        t.x, t.y, t.z = (float(v) for v in pose[:3, 3])
        r.x, r.y, r.z, r.w = quaternion(pose[:3, :3])
        return message

    k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    p = [camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    odom = np.eye(4)
    odom[:3, 3] = (1.5, -2.0, 0.25)  # map -> odom: the poses below are odom's, so the chain matters
    start = START_S * 10**9
    with BagWriter(path) as writer:
        writer.write("/tf_static", TFMessage(transforms=[transform(start, "map", "odom", odom)]), start - 1)
        for index, slot in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (0, 14)]:
            ns = start + PERIOD_NS * slot
            rgb = cv2.cvtColor(cv2.imread(str(root / "color" / f"{index:05d}.jpg")), cv2.COLOR_BGR2RGB)
            depth = cv2.imread(str(root / "depth" / f"{index:05d}.png"), cv2.IMREAD_UNCHANGED)
            if slot == index:
                pose = np.linalg.inv(odom) @ frames[index][2]
                writer.write("/tf", TFMessage(transforms=[transform(ns, "odom", OPTICAL, pose)]), ns - 1)
            writer.write("/camera/color/camera_info", CameraInfo(header=header(ns, OPTICAL), width=640, height=480,
                                                                  distortion_model="plumb_bob", d=[0.0] * 5, k=k, p=p,
                                                                  r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]), ns)
            writer.write("/camera/color/image_raw", Image(header=header(ns, OPTICAL), height=480, width=640,
                                                          encoding="rgb8", step=640 * 3, data=rgb.tobytes()), ns)
            writer.write("/camera/depth/image_raw", Image(header=header(ns, OPTICAL), height=480, width=640,
                                                          encoding="16UC1", step=640 * 2, data=depth.tobytes()), ns)
    return camera, frames


def bag_cli(*args) -> subprocess.CompletedProcess:
    """The command as a user runs it, in a process of its own (the working tree's sources)."""
    return subprocess.run([sys.executable, "-m", "clip_dinoiser_ros.cli.bag", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def redwood_map(tmp_path_factory):
    root = tmp_path_factory.mktemp("redwood")
    camera, frames = redwood_bag(root / "bag")
    out = root / "map.npz"
    run = bag_cli("map", root / "bag", "--topic", "/camera/color/image_raw", "--depth-topic",
                  "/camera/depth/image_raw", "--camera-info-topic", "/camera/color/camera_info", "--out", out,
                  "--no-carve", "--budget", SETTINGS.budget, *TINY)
    assert run.returncode == 0, run.stderr
    return camera, frames, out, run.stderr


def engine_features(rgb_frames):
    """The tiny engine's features for each frame, computed here as the command computes them."""
    from clip_dinoiser_ros.model.build import EngineSettings, build_engine

    engine = build_engine(EngineSettings(clip_model="ViT-Tiny-16-test", random_weights=True))
    engine.set_prompts(["object"])
    return [engine.segment(rgb, short_side=32, probs=False, features=True).features for rgb in rgb_frames]


def test_the_bag_s_map_equals_the_recomputation_and_counts_the_frame_without_a_pose(redwood_map):
    camera, frames, out, printed = redwood_map
    assert "from 5 of 6 frames; skipped: 1 without a transform to map (ExtrapolationException 1)" in printed, printed
    assert "RANDOM WEIGHTS" in printed
    built = load_map(out)
    # depth as the node decodes 16UC1 (float32 units times the float32 depth_scale)
    decoded = [((depth * 1000).round().astype(np.float32) * np.float32(0.001), rgb, pose)
               for depth, rgb, pose in frames]
    coords, pixels, _, colour, _, _ = recompute(camera, decoded, SETTINGS)
    rows = built.rows
    np.testing.assert_array_equal(unpack(built.slots["keys"][rows]), coords)
    np.testing.assert_array_equal(built.slots["pixels"][rows], pixels)
    np.testing.assert_allclose(built.slots["colour"][rows], colour, atol=1e-3)
    assert built.slots["count"][rows].max() == 5

    features = engine_features([rgb for _, rgb, _ in decoded])
    assert built.settings.feature_dim == features[0].features.shape[0]  # the engine's width (32 for the tiny model)
    direct = VoxelMap(built.settings)  # the library fed directly: the features' plumbing
    for (depth, rgb, pose), found in zip(decoded, features):
        direct.integrate(depth, camera, pose, found.features, found.objectness, rgb, found.grid, 0.0)
    np.testing.assert_array_equal(direct.slots["keys"][direct.rows], built.slots["keys"][rows])
    np.testing.assert_allclose(built.slots["features"][rows].astype(np.float32),
                               direct.slots["features"][direct.rows].astype(np.float32), atol=2.5e-4)
    np.testing.assert_allclose(built.slots["objectness"][rows], direct.slots["objectness"][direct.rows], atol=1e-4)


def test_query_prints_where_each_text_wins(redwood_map):
    _, _, out, _ = redwood_map
    run = bag_cli("query", out, "--text", "sofa", "--text", "lamp|light", "--json", *TINY[:3])
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    voxels = len(load_map(out))
    assert answer["random_weights"] is True and answer["voxels"] == voxels
    assert [text["text"] for text in answer["texts"]] == ["sofa", "lamp"]
    clusters = [c for text in answer["texts"] for c in text["clusters"]]
    assert sum(c["voxels"] for c in clusters) == voxels  # every voxel wins for one text, in one cluster
    assert all(min(c["size"]) >= 0.05 - 1e-9 and 0.5 <= c["score"] <= 1.0 for c in clusters)
    printed = bag_cli("query", out, "--text", "sofa", "--text", "lamp", "--background", *TINY[:3])
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("sofa: ") and "\nlamp: " in printed.stdout and "background" not in printed.stdout
    assert "RANDOM WEIGHTS" in printed.stderr
