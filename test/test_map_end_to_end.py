"""The semantic map end to end, as users run it: ``ros2 launch clip_dinoiser_ros clip_dinoiser.launch.py
mapping:=true`` starts the segmentation node and the mapping node; the 5 real Redwood RGB-D frames are played
over real DDS as an RGB-D driver sends them (colour, registered 16UC1 depth and a calibrated camera_info whose P
differs from K, all with one stamp), each frame's pose (trajectory.log) on /tf (``map`` -> the optical frame) at
the frame's stamp, sent just before the frame. Every voxel seen in one frame only must then carry what that
frame's own outputs say about the pixels that made it.

Which comparison is exact. A voxel seen once holds the pixel-weighted mean of the features of the patches its
pixels fell in (the segmentation node's features message), stored in fp16; its label is the prompt whose
embedding (the segmentation node's ~/encode_texts) is nearest that mean, its confidence that prompt's softmax
probability at the message's logit scale. Recomputed here from the features messages, the embeddings and a
back-projection of our own (P, the pose sent, millimetres), the label must be the map's wherever the winning
margin exceeds what fp16 storage can move (2^-10 of a unit vector), and the confidence within 2e-3 (fp16
rounding of the stored mean moves it by ~1e-4): asserted voxel by voxel. The mask is another quantity: per
pixel, the argmax of the patch probabilities upsampled bilinearly to the image, so pixels near patch borders mix
neighbouring patches and a voxel's majority mask label may differ from its mean feature's label; that agreement
is measured, printed and bounded loosely, chance-corrected (Cohen's kappa: random weights give one label to most
of the scene, so raw agreement alone is no evidence).

Random weights (tiny model): the labels mean nothing; the plumbing (pose direction, optical frame, P not K,
depth scale, stamps, the patches' placement, one set of text embeddings for both nodes) is what must agree.
The prompts have no synonyms: ~/encode_texts averages a class's synonyms while the mask takes their best logit.
Voxels are 2 cm: the 5 frames are a slow sweep, so at 5 cm only ~300 voxels are seen once (~3,700 at 2 cm).
Inputs are reliable (``input_reliability: reliable`` on both nodes) and each frame waits for its mask and
features before the next goes: the comparison needs every frame in both nodes, which best effort does not promise.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from camera_driver import P_SCALE, Frames, calibration, image, time_of
from map_frames import need, quaternion_pose, redwood
from ros2_cli import Launch, stop_daemon, wait_for_state
from ros_harness import wait_until
from clip_dinoiser_ros.supervision import write_params_file

PROMPTS = ["floor", "wall", "sofa", "table", "lamp", "picture frame"]
VOXEL = 0.02
MAX_DEPTH_M = 5.0  # the mapping node's default
FP16_MARGIN = 2.0 ** -10  # |f16(m) - m| <= 2^-11 |m| per component: a dot-product margin above 2^-10 holds
FIRST_STAMP_NS = 1_700_000_000 * 10**9
PERIOD_NS = 10**9 // 30  # a 30 Hz camera's stamps
OPTICAL = "camera_color_optical_frame"
COLOUR, DEPTH, INFO = "/cam/color/image_raw", "/cam/aligned_depth_to_color/image_raw", "/cam/color/camera_info"
FEATURES, MASK = "/cam/color/segmentation/features", "/cam/color/segmentation/mask"
MAP_STATUS = "/clip_dinoiser_map: map"
STARTED = re.compile(r"\[(clip_dinoiser_node|clip-dinoiser-map-node)-\d+\]: process started with pid \[(\d+)\]")


@pytest.fixture(scope="module", autouse=True)
def daemon():
    yield
    stop_daemon()


def pose_transform(pose: np.ndarray, stamp_ns: int):
    """``map`` -> the optical frame at ``stamp_ns`` (the camera-to-map pose), and the matrix tf2 will rebuild."""
    from geometry_msgs.msg import TransformStamped
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(pose[:3, :3]).as_quat()
    transform = TransformStamped()
    transform.header.stamp, transform.header.frame_id, transform.child_frame_id = time_of(stamp_ns), "map", OPTICAL
    t, r = transform.transform.translation, transform.transform.rotation
    t.x, t.y, t.z = (float(v) for v in pose[:3, 3])
    r.x, r.y, r.z, r.w = float(x), float(y), float(z), float(w)
    return transform, quaternion_pose(*pose[:3, 3], x, y, z, w)


def diagnostics(collector) -> dict[str, str]:
    for array in reversed([m for m, _ in list(collector.messages)]):
        for status in array.status:
            if status.name == MAP_STATUS:
                return {kv.key: kv.value for kv in status.values}
    return {}


def play(probe, launch, frames: Frames, poses: list[np.ndarray]) -> dict:
    """Each frame's pose on /tf, then the frame; its mask and features awaited before the next (the node keeps
    only the latest frame: no frame is dropped this way). Returns what came back."""
    import tf2_ros
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from clip_dinoiser_ros.msg import SegmentationFeatures

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # input_reliability: reliable
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    masks, features = probe.collect(Image, MASK, reliable), probe.collect(SegmentationFeatures, FEATURES, reliable)
    status, clouds = probe.collect(DiagnosticArray, "/diagnostics"), probe.collect(PointCloud2, "/semantic_map/points",
                                                                                 latched)
    publishers = [probe.node.create_publisher(kind, topic, reliable)
                  for kind, topic in ((CameraInfo, INFO), (Image, DEPTH), (Image, COLOUR))]
    broadcaster = tf2_ros.TransformBroadcaster(probe.node)
    wait_until(lambda: launch.alive() and all(p.get_subscription_count() for p in publishers)
               and broadcaster.pub_tf.get_subscription_count() and probe.node.count_subscribers(FEATURES) >= 2,
               60, f"both nodes' subscriptions\n{launch.tail()}")
    matrices = []
    for index, (rgb, depth) in enumerate(zip(frames.rgb, frames.depth)):
        stamp_ns = FIRST_STAMP_NS + index * PERIOD_NS
        transform, matrix = pose_transform(poses[index], stamp_ns)
        matrices.append(matrix)
        broadcaster.sendTransform(transform)
        header = Header(stamp=time_of(stamp_ns), frame_id=OPTICAL)
        for publisher, message in zip(publishers, (calibration(header, 640, 480, frames.k), image(depth, header),
                                                   image(rgb, header))):
            publisher.publish(message)
        wait_until(lambda: launch.alive() and all(c.matching(lambda m: m.header.stamp == header.stamp)
                                                  for c in (masks, features)),
                   120, f"the mask and features of frame {index}\n{launch.tail()}")
    final = wait_until(lambda: (v := diagnostics(status)) and v["frames_integrated"] == str(len(frames.rgb)) and v,
                       60, f"every frame integrated\n{launch.tail()}")

    def final_cloud():  # the cloud of the whole map (its voxels), labelled once the prompts are embedded
        cloud = clouds.last()
        if cloud is None or cloud.width != int(final["voxels"]):
            return None
        labels = read_cloud(cloud)[1]
        return cloud if (labels != 65535).all() else None

    cloud = wait_until(final_cloud, 60, f"the labelled cloud of the final map\n{launch.tail()}")
    by_stamp = lambda collector, stamp: collector.matching(lambda m: m.header.stamp == stamp)[0]  # noqa: E731
    stamps = [time_of(FIRST_STAMP_NS + i * PERIOD_NS) for i in range(len(frames.rgb))]
    return {"masks": [by_stamp(masks, s) for s in stamps], "features": [by_stamp(features, s) for s in stamps],
            "poses": matrices, "cloud": cloud, "diagnostics": final}


def read_cloud(cloud) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) voxel coordinates, (N,) labels and (N,) confidences of semantic_map/points."""
    from sensor_msgs_py import point_cloud2

    points = point_cloud2.read_points(cloud, ["x", "y", "z", "label", "confidence"])
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)
    return (np.floor(xyz / VOXEL).astype(np.int64), np.asarray(points["label"], np.int64),
            np.asarray(points["confidence"], np.float64))


def encode(probe, texts: list[str]) -> np.ndarray:
    from clip_dinoiser_ros.srv import EncodeTexts

    client = probe.node.create_client(EncodeTexts, "/clip_dinoiser/encode_texts")
    answer = probe.call(client, EncodeTexts.Request(texts=texts), timeout=60)
    assert answer.success, answer.message
    return np.asarray(answer.embeddings, np.float64).reshape(len(texts), answer.dimension)


@pytest.fixture(scope="module")
def launched(probe, tmp_path_factory):
    """Both nodes started by the real launch file, with the tiny random model."""
    need("rgbd")
    directory = tmp_path_factory.mktemp("map_end_to_end")
    segmentation = write_params_file(directory / "segmentation", {
        "image_topics": [COLOUR], "camera_info_topics": [INFO], "input_reliability": "reliable", "prompts": PROMPTS,
        "clip_model": "ViT-Tiny-16-test", "random_weights": True, "device": "cpu"})
    mapping = write_params_file(directory / "mapping", {
        "feature_topics": [FEATURES], "depth_topics": [DEPTH], "camera_info_topics": [""], "image_topics": [COLOUR],
        "input_reliability": "reliable", "prompts": PROMPTS, "voxel_size": VOXEL, "max_depth_m": MAX_DEPTH_M,
        "publish_rate_hz": 5.0, "min_cluster_voxels": 1, "map_file": str(directory / "map.npz")})
    launch = Launch(directory, f"params_file:={segmentation}", "mapping:=true", f"map_params_file:={mapping}")
    try:
        wait_for_state("/clip_dinoiser", "active", launch)
        wait_for_state("/clip_dinoiser_map", "active", launch)
        yield launch
    finally:
        launch.stop()


@pytest.fixture(scope="module")
def played(launched, probe):
    frames = Frames.folder(need("rgbd"))
    poses = [pose for _, _, pose in redwood()[1]]
    return {**play(probe, launched, frames, poses), "frames": frames, "embeddings": encode(probe, PROMPTS)}


def frame_pixels(depth_mm: np.ndarray, k: tuple[float, float, float, float], pose: np.ndarray):
    """Our own back-projection with the camera model the camera_info's P gives (float32, as a depth image is
    read), posed and quantised: the valid pixels' flat indices and their (n, 3) voxel coordinates."""
    fx, fy, cx, cy = (np.float32(value * scale) for value, scale in zip(k, P_SCALE))
    z = (depth_mm.astype(np.float64) * 0.001).astype(np.float32)
    v, u = np.mgrid[0:z.shape[0], 0:z.shape[1]].astype(np.float32)
    valid = np.flatnonzero((z > 0) & (z <= MAX_DEPTH_M))
    z = z.reshape(-1)[valid]
    optical = np.stack([(u.reshape(-1)[valid] - cx) / fx * z, (v.reshape(-1)[valid] - cy) / fy * z, z], axis=1)
    points = optical.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    return valid, np.floor(points / VOXEL).astype(np.int64)


def pixel_patches(message) -> np.ndarray:
    """(H * W,) flat patch index of every pixel, from the message's own description of its grid: the patch
    holding the pixel's centre after the resize."""
    height, width = message.image_height, message.image_width
    rows = np.minimum(((np.arange(height) + 0.5) * message.resized_height / height).astype(np.int64),
                      message.resized_height - 1) // message.patch_size
    cols = np.minimum(((np.arange(width) + 0.5) * message.resized_width / width).astype(np.int64),
                      message.resized_width - 1) // message.patch_size
    return (rows[:, None] * message.grid_width + cols[None, :]).reshape(-1)


def patch_features(message) -> np.ndarray:
    """(patches, E) float64: the message's fp16 features, patch-major as it sends them."""
    return np.frombuffer(bytes(message.features), "<f2").reshape(-1, message.channels).astype(np.float64)


def group_max(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per group 0..G-1 (each present), its most frequent value (ties: the smallest)."""
    codes, counts = np.unique(groups * 1024 + values, return_counts=True)
    order = np.lexsort((-counts, codes // 1024))
    firsts = order[np.r_[True, np.diff(codes[order] // 1024) != 0]]
    return codes[firsts] % 1024


def rows_of(keys: np.ndarray) -> np.ndarray:
    """(n, 3) int64 voxel coordinates as (n,) records, for set operations on whole rows."""
    return np.ascontiguousarray(keys).view([("x", np.int64), ("y", np.int64), ("z", np.int64)]).ravel()


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def seen_once(played):
    """The voxels of the final map seen in one frame only (by our back-projection), each with the map's label and
    confidence; recomputed from its pixels: its mean feature's label, that label's margin and probability, its
    pixels' majority mask label, whether they lie in one patch; per pixel, its mask label and its voxel's map label."""
    from scipy.sparse import csr_matrix

    frames, embeddings = played["frames"], played["embeddings"]
    cloud_keys, cloud_labels, cloud_confidence = read_cloud(played["cloud"])
    per_frame = [frame_pixels(depth, frames.k, pose) for depth, pose in zip(frames.depth, played["poses"])]
    union, counts = np.unique(np.concatenate([np.unique(rows_of(keys)) for _, keys in per_frame]), return_counts=True)
    map_rows = rows_of(cloud_keys)
    map_order = np.argsort(map_rows)
    found: dict[str, list] = {name: [] for name in ("keys", "map", "confidence", "expected", "margin", "probability",
                                                    "majority", "one_patch", "pixel_mask", "pixel_map")}
    for (valid, keys), features, mask in zip(per_frame, played["features"], played["masks"]):
        records = rows_of(keys)
        keep = np.flatnonzero(np.isin(records, union[counts == 1]) & np.isin(records, map_rows))
        voxel_records, voxel = np.unique(records[keep], return_inverse=True)
        voxel = voxel.ravel()
        in_map = map_order[np.searchsorted(map_rows[map_order], voxel_records)]
        patches = pixel_patches(features)[valid[keep]]
        grid = features.grid_height * features.grid_width
        pairs, pixels = np.unique(voxel * grid + patches, return_counts=True)
        weights = csr_matrix((pixels.astype(np.float64), np.divmod(pairs, grid)), shape=(voxel_records.size, grid))
        mean = weights @ patch_features(features)  # pixel-weighted sums, then the means' directions
        cosine = (mean / np.linalg.norm(mean, axis=1, keepdims=True)) @ embeddings.T
        top = np.sort(cosine, axis=1)
        mask_labels = np.frombuffer(bytes(mask.data), np.uint8).reshape(-1)[valid[keep]].astype(np.int64)
        found["keys"].append(cloud_keys[in_map])
        found["map"].append(cloud_labels[in_map])
        found["confidence"].append(cloud_confidence[in_map])
        found["expected"].append(cosine.argmax(axis=1))
        found["margin"].append(top[:, -1] - top[:, -2])
        found["probability"].append(softmax(features.logit_scale * cosine).max(axis=1))
        found["majority"].append(group_max(voxel, mask_labels))
        found["one_patch"].append(np.bincount(pairs // grid) == 1)
        found["pixel_mask"].append(mask_labels)
        found["pixel_map"].append(cloud_labels[in_map][voxel])
    result = {name: np.concatenate(parts) for name, parts in found.items()}
    result["in_union"] = np.isin(map_rows, union).mean()
    return result


def test_every_frame_is_posed_and_lands_where_its_own_back_projection_puts_it(played, seen_once):
    values = played["diagnostics"]
    assert (values["frames_integrated"], values["tf_failures"], values["frames_refused"]) == ("5", "0", "0"), values
    print(f"\nmap: {values['voxels']} voxels of {VOXEL} m; {100 * seen_once['in_union']:.3f} % of them are voxels "
          f"of our own back-projection (P, the /tf pose, millimetres)")
    assert seen_once["in_union"] > 0.999


def test_a_voxel_seen_once_has_the_label_of_its_pixels_features(seen_once):
    found = seen_once
    clear = found["margin"] > FP16_MARGIN
    agree = found["map"] == found["expected"]
    error = np.abs(found["confidence"] - found["probability"])
    print(f"\n{found['map'].size} voxels seen once; the {clear.sum()} whose label fp16 cannot change: "
          f"{100 * agree[clear].mean():.3f} % agree, the {(~clear).sum()} others {agree[~clear].sum()}; labels "
          f"{np.bincount(found['map'], minlength=len(PROMPTS)).tolist()}; confidence vs recomputed probability: "
          f"largest difference {error.max():.2e}")
    assert found["map"].size > 1000 and clear.mean() > 0.9
    assert len(np.unique(found["expected"][clear])) >= 2  # not one label everywhere
    np.testing.assert_array_equal(found["map"][clear], found["expected"][clear])
    np.testing.assert_allclose(found["confidence"], found["probability"], atol=2e-3)


def test_a_voxel_seen_once_mostly_has_its_pixels_majority_mask_label(seen_once):
    """Loose: the mask's labels come from probabilities upsampled between patches (see the module's docstring)."""
    found = seen_once
    agree = found["map"] == found["majority"]
    by_pixel = (found["pixel_map"] == found["pixel_mask"]).mean()
    shares = [np.bincount(found[name], minlength=256)[:len(PROMPTS)] / found[name].size for name in ("map", "majority")]
    chance = float(shares[0] @ shares[1])
    kappa = (agree.mean() - chance) / (1.0 - chance)
    print(f"\nthe map's label vs the mask's: {100 * agree.mean():.1f} % of the voxels seen once take their pixels' "
          f"majority mask label ({100 * agree[found['one_patch']].mean():.1f} % of the {found['one_patch'].sum()} "
          f"within one patch), {100 * by_pixel:.1f} % of their pixels; chance {100 * chance:.1f} %, kappa {kappa:.2f}")
    assert agree.mean() > 0.8 and kappa > 0.5


def boxes(detections) -> np.ndarray:
    """(n, 2, 3) lowest and highest corners of a Detection3DArray's boxes."""
    corners = []
    for detection in detections.detections:
        centre, size = detection.bbox.center.position, detection.bbox.size
        middle, half = np.array([centre.x, centre.y, centre.z]), np.array([size.x, size.y, size.z]) / 2
        corners.append((middle - half, middle + half))
    return np.array(corners).reshape(-1, 2, 3)


def test_query_for_the_prompts_places_each_voxel_seen_once_in_a_cluster_of_its_label(launched, played, seen_once,
                                                                                      probe):
    from clip_dinoiser_ros.srv import QueryMap

    client = probe.node.create_client(QueryMap, "/clip_dinoiser_map/query")
    answer = probe.call(client, QueryMap.Request(texts=PROMPTS, with_background=False, min_score=0.0), timeout=60)
    assert answer.success, answer.message
    assert answer.message.startswith(f"{played['diagnostics']['voxels']} voxels:"), answer.message
    assert [d.header.frame_id for d in answer.detections] == ["map"] * len(PROMPTS)
    centres = (seen_once["keys"] + 0.5) * VOXEL
    for index, (text, detections) in enumerate(zip(PROMPTS, answer.detections)):
        mine = centres[seen_once["map"] == index]
        corners = boxes(detections)
        assert (len(corners) > 0) == (len(mine) > 0), f"{text}: {len(corners)} places, {len(mine)} voxels seen once"
        assert all(d.results[0].hypothesis.class_id == text for d in detections.detections)
        inside = np.zeros(len(mine), bool)
        for low, high in corners:
            inside |= np.all((mine > low - 1e-6) & (mine < high + 1e-6), axis=1)
        assert inside.all(), f"{text}: {(~inside).sum()} of its {len(mine)} voxels seen once are in none of its places"


def gone(pid: int) -> bool:
    """No such process any more (an unreaped child would show as a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigint_to_the_launch_stops_both_nodes(launched):
    pids = {name: int(pid) for name, pid in STARTED.findall(launched.log())}
    assert set(pids) == {"clip_dinoiser_node", "clip-dinoiser-map-node"}, launched.log()
    assert launched.stop() == 0, launched.log()  # SIGINT to the launch's PID, which passes it on
    log = launched.log()
    for name, pid in pids.items():
        assert f"[{name}-" in log and f"process has finished cleanly [pid {pid}]" in log, log[-3000:]
        assert gone(pid), f"{name} (pid {pid}) still runs"
    assert "Traceback" not in log, log[-3000:]
