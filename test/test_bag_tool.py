"""clip-dinoiser-bag without a ROS graph: from-images, segment, eval, info, the errors, Ctrl-C.

Bags are built at test time, from generated frames or from ../shared/data (skipped when absent).
Random weights: the numbers mean nothing, so the tests check structure, stamps and files.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from clip_dinoiser_ros.bag.reading import messages, mono_labels, open_bag, topic_types
from clip_dinoiser_ros.bag.writing import BagWriter
from clip_dinoiser_ros.cli.bag import main
from clip_dinoiser_ros.pipeline.messages import stamp_ns
from frame_sources import shared_data_dir
from node_frames import synthetic_rgb

TINY = ["--clip-model", "ViT-Tiny-16-test", "--random-weights", "--short-side", "32"]
CAMVID = shared_data_dir() / "camvid" / "0016E5"
SPOT = shared_data_dir() / "bags"
CAMVID_CLASSES = "sky\nbuilding\npole\nroad\nsidewalk, pavement\ntree\nsign symbol\nfence\ncar\npedestrian\nbicyclist\n"
REPORTS = ["metrics.md", "metrics.csv", "metrics.json", "confusion.png", "iou_per_class.png", "miou_over_time.png"]


def bag_cli(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


def write_frames(directory: Path, count: int, size=(64, 48), labels: bool = True) -> Path:
    """``count`` generated frames (and 3-class label images with the same names)."""
    (directory / "images").mkdir(parents=True)
    if labels:
        (directory / "labels").mkdir()
    for index in range(count):
        name = f"frame_{index:04d}.png"
        PILImage.fromarray(synthetic_rgb(*size, seed=index)).save(directory / "images" / name)
        if labels:
            label = np.zeros(size[::-1], np.uint8)
            label[:, size[0] // 3:] = 1
            label[:, 2 * size[0] // 3:] = 2
            label[0, :] = 255
            PILImage.fromarray(label).save(directory / "labels" / name)
    return directory


def bag_messages(path: Path, topic: str) -> list:
    with open_bag(path) as reader:
        return list(messages(reader, [topic]))


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory) -> Path:
    """12 generated frames at 15 Hz with ground truth on /gt."""
    root = write_frames(tmp_path_factory.mktemp("frames"), 12)
    out = root / "camera"
    assert bag_cli("from-images", root / "images", "--topic", "/cam/image_raw", "--rate", "15", "--labels",
                   root / "labels", "--label-topic", "/gt", "--start", "100", "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def segmented_bag(camera_bag, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segmented") / "segmented"
    assert bag_cli("segment", camera_bag, "--topic", "/cam/image_raw", "--prompts", "road", "grass", "car",
                   "--overlay", "--out", out, *TINY) == 0
    return out


def test_from_images_stamps_frames_and_labels_alike(camera_bag):
    frames, labels = bag_messages(camera_bag, "/cam/image_raw"), bag_messages(camera_bag, "/gt")
    assert len(frames) == len(labels) == 12
    stamps = [stamp_ns(item.message) for item in frames]
    assert stamps == [stamp_ns(item.message) for item in labels] == [item.timestamp for item in frames]
    assert stamps[0] == 100 * 10**9 and np.allclose(np.diff(stamps), 1e9 / 15, atol=1)
    assert frames[0].message.encoding == "rgb8" and labels[0].message.encoding == "mono8"
    assert set(np.unique(mono_labels(labels[0]))) == {0, 1, 2, 255}


def test_segment_writes_the_node_topics_in_step_with_the_input(segmented_bag):
    with open_bag(segmented_bag) as reader:
        types = topic_types(reader)
    assert types == {
        "/cam/image_raw": "sensor_msgs/msg/Image", "/gt": "sensor_msgs/msg/Image",
        "/cam/segmentation/mask": "sensor_msgs/msg/Image", "/cam/segmentation/confidence": "sensor_msgs/msg/Image",
        "/cam/segmentation/overlay": "sensor_msgs/msg/Image",
        "/cam/segmentation/class_confidences": "clip_dinoiser_ros/msg/ClassConfidences",
        "/cam/segmentation/label_info": "vision_msgs/msg/LabelInfo",
        "/cam/segmentation/detections": "vision_msgs/msg/Detection2DArray",  # no depth: no cloud, no 3D
    }
    frames = bag_messages(segmented_bag, "/cam/image_raw")
    assert [stamp_ns(item.message) for item in bag_messages(segmented_bag, "/cam/segmentation/detections")] == \
        [stamp_ns(item.message) for item in frames]
    for output, encoding in [("mask", "mono8"), ("confidence", "32FC1"), ("overlay", "rgb8")]:
        written = bag_messages(segmented_bag, f"/cam/segmentation/{output}")
        assert [(item.timestamp, stamp_ns(item.message)) for item in written] == \
               [(item.timestamp, stamp_ns(item.message)) for item in frames]
        assert {item.message.encoding for item in written} == {encoding}
        assert {item.message.header.frame_id for item in written} == {"camera"}
    assert (mono_labels(bag_messages(segmented_bag, "/cam/segmentation/mask")[0]) < 3).all()
    (info,) = bag_messages(segmented_bag, "/cam/segmentation/label_info")
    assert [c.class_name for c in info.message.class_map] == ["road", "grass", "car"]
    # as the node publishes it: with the first frame, stamped like it
    assert (info.timestamp, stamp_ns(info.message)) == (frames[0].timestamp, stamp_ns(frames[0].message))
    confidences = bag_messages(segmented_bag, "/cam/segmentation/class_confidences")
    assert confidences[0].message.labels == ["road", "grass", "car"]
    assert sum(confidences[0].message.coverage) == pytest.approx(1.0)


def test_written_bags_decode_with_the_mcap_librarys_own_ros2_decoder(segmented_bag):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (path,) = segmented_bag.glob("*.mcap")
    seen: dict[str, list] = {}
    with open(path, "rb") as stream:
        for schema, channel, _, decoded in make_reader(stream, decoder_factories=[DecoderFactory()]) \
                .iter_decoded_messages():
            seen.setdefault(channel.topic, []).append((schema.name, decoded))
    assert len(seen["/cam/segmentation/mask"]) == 12
    schema, mask = seen["/cam/segmentation/mask"][0]
    assert schema == "sensor_msgs/msg/Image" and mask.encoding == "mono8" and len(mask.data) == 64 * 48
    schema, info = seen["/cam/segmentation/label_info"][0]
    assert schema == "vision_msgs/msg/LabelInfo" and [c.class_name for c in info.class_map] == ["road", "grass", "car"]
    schema, statistics = seen["/cam/segmentation/class_confidences"][0]
    assert schema == "clip_dinoiser_ros/msg/ClassConfidences" and statistics.vocabulary_version == 1


def test_sqlite3_storage_on_request(camera_bag, tmp_path):
    out = tmp_path / "sqlite"
    assert bag_cli("segment", camera_bag, "--topic", "/cam/image_raw", "--prompts", "a", "b", "--storage", "sqlite3",
                   "--out", out, *TINY) == 0
    assert list(out.glob("*.db3")) and len(bag_messages(out, "/cam/segmentation/mask")) == 12


def test_eval_with_the_engine_and_with_recorded_masks(segmented_bag, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("road\ngrass, lawn\ncar\n")
    assert bag_cli("eval", segmented_bag, "--topic", "/cam/image_raw", "--label-topic", "/gt", "--classes", classes,
                   "--out", tmp_path / "engine", *TINY) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "matched 12 frames; 0 frames without ground truth" in printed
    assert all((tmp_path / "engine" / name).stat().st_size > 0 for name in REPORTS)
    assert bag_cli("eval", segmented_bag, "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt",
                   "--classes", classes, "--out", tmp_path / "masks") == 0
    report = json.loads((tmp_path / "masks" / "metrics.json").read_text())
    assert [c["name"] for c in report["classes"]] == ["road", "grass", "car"]
    assert report["meta"]["frames_matched"] == 12 and np.array(report["confusion"]).sum() == 12 * (64 * 47)


def mask_bag(path: Path, class_maps: dict[int, list[str]], masks: dict[int, np.ndarray],
             labels: dict[int, np.ndarray]) -> Path:
    """A bag as the live node's recording would be: label_info, masks, and ground truth by stamp."""
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time

    from clip_dinoiser_ros.pipeline import messages as outputs

    def header(stamp: int) -> Header:
        return Header(stamp=Time(sec=stamp, nanosec=0), frame_id="cam")

    with BagWriter(path) as writer:
        for stamp, names in class_maps.items():  # as the node: stamped like the first mask of the map
            writer.write("/cam/segmentation/label_info", outputs.label_info(names, 0.0, header(stamp)),
                         stamp * 10**9 - 1)
        for stamp, mask in masks.items():
            writer.write("/cam/segmentation/mask", outputs.mask_image(mask, header(stamp)), stamp * 10**9)
        for stamp, label in labels.items():
            writer.write("/gt", outputs.mask_image(label, header(stamp)), stamp * 10**9 + 5)
    return path


def test_eval_maps_mask_values_through_label_info_and_counts_unmatched_frames(tmp_path, capsys):
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)  # 0 sky, 1 car in the classes file
    as_node = np.where(truth == 0, 1, 0).astype(np.uint8)  # the node's prompt order was [car, sky]
    bag = mask_bag(tmp_path / "recorded", {1: ["car", "sky"]}, masks={10: as_node, 11: as_node, 12: as_node},
                   labels={10: truth, 11: truth, 13: truth})
    classes = tmp_path / "classes.txt"
    classes.write_text("sky\ncar, automobile\n")
    assert bag_cli("eval", bag, "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt", "--classes",
                   classes, "--out", tmp_path / "out") == 0
    assert "matched 2 frames; 1 frames without ground truth; 1 ground-truth frames without a frame" in \
           capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["miou"] == 1.0 and report["pixel_accuracy"] == 1.0 and report["pixels"] == 2 * 7


def test_eval_reads_each_mask_with_the_class_map_in_effect_for_it(tmp_path, capsys):
    """Prompts changed mid-recording: the masks before stamp 11 use [car, sky], from 11 on [tree, sky, car]."""
    truth = np.array([[0, 0, 1, 1], [2, 2, 1, 255]], np.uint8)  # classes file: sky, car, tree
    before = np.choose(truth.clip(0, 2), [1, 0, 0]).astype(np.uint8)  # car=0, sky=1 (tree: drawn as car)
    after = np.choose(truth.clip(0, 2), [1, 2, 0]).astype(np.uint8)  # tree=0, sky=1, car=2
    bag = mask_bag(tmp_path / "recorded", {10: ["car", "sky"], 11: ["tree", "sky", "car"]},
                   masks={10: before, 11: after, 12: after}, labels={10: truth, 11: truth, 12: truth})
    classes = tmp_path / "classes.txt"
    classes.write_text("sky\ncar\ntree\n")
    assert bag_cli("eval", bag, "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt", "--classes",
                   classes, "--out", tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    confusion = np.array(report["confusion"])
    # frames 11 and 12 are exact; frame 10 only misses the two tree pixels, taken as car by its old map
    assert confusion[2, 2] == 4 and confusion[2, 1] == 2 and np.trace(confusion) == 3 * 7 - 2


def test_eval_refuses_a_mask_id_its_class_map_does_not_define(tmp_path, capsys):
    truth = np.array([[0, 1]], np.uint8)
    bag = mask_bag(tmp_path / "recorded", {10: ["car", "sky"]}, masks={10: np.array([[0, 2]], np.uint8)},
                   labels={10: truth})
    classes = tmp_path / "classes.txt"
    classes.write_text("sky\ncar\n")
    assert bag_cli("eval", bag, "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt", "--classes",
                   classes, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "ids [2]" in error and "does not define" in error, error
    assert not (tmp_path / "out").exists()


def test_errors_are_one_line_exit_2_and_leave_nothing(camera_bag, segmented_bag, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.bag"
    corrupt.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 8)
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\n")
    short_labels = tmp_path / "short"
    short_labels.mkdir()
    PILImage.fromarray(np.zeros((48, 64), np.uint8)).save(short_labels / "only.png")
    existing = tmp_path / "existing"
    existing.mkdir()
    out = tmp_path / "out"
    cases = [
        (["info", tmp_path / "missing"], "no such bag"),
        (["info", corrupt], "not a readable bag"),
        (["segment", camera_bag, "--topic", "/nope", "--prompts", "a", "--out", out, *TINY],
         "topic /nope is not in the bag; its sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage topics: "
         "/cam/image_raw, /gt"),
        (["segment", segmented_bag, "--topic", "/cam/segmentation/class_confidences", "--prompts", "a", "--out", out,
          *TINY], "holds clip_dinoiser_ros/msg/ClassConfidences, not sensor_msgs/msg/Image"),
        (["eval", camera_bag, "--topic", "/cam/image_raw", "--labels", short_labels, "--classes", classes,
          "--out", out, *TINY], "label/frame mismatch: 12 frames but 1 label files"),
        (["segment", camera_bag, "--topic", "/cam/image_raw", "--prompts", "a", "--out", existing, *TINY],
         "exists: choose another --out or pass --overwrite"),
        (["from-images", short_labels, "--topic", "/c/image_raw", "--rate", "10", "--labels", camera_bag,
          "--label-topic", "/gt", "--out", out], "holds no images"),
    ]
    for arguments, expected in cases:
        assert bag_cli(*arguments) == 2, arguments
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and expected in error, (arguments, error)
    assert not out.exists()


def test_a_failure_midway_removes_the_bag(tmp_path, capsys):
    root = write_frames(tmp_path, 3, labels=False)
    (root / "images" / "frame_0002.png").write_bytes(b"not a png")
    assert bag_cli("from-images", root / "images", "--topic", "/c/image_raw", "--rate", "10", "--out",
                   tmp_path / "bag") == 2
    assert "frame_0002.png: not a readable image" in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


def test_ctrl_c_leaves_a_valid_bag_up_to_the_last_frame(tmp_path):
    root = write_frames(tmp_path, 400, size=(320, 240), labels=False)
    source = tmp_path / "long"
    assert bag_cli("from-images", root / "images", "--topic", "/cam/image_raw", "--rate", "30", "--out", source) == 0
    out = tmp_path / "interrupted"
    command = [str(Path(sys.executable).parent / "clip-dinoiser-bag"), "segment", str(source), "--topic",
               "/cam/image_raw", "--prompts", "a", "b", "--out", str(out), *TINY[:-1], "224"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.mcap")) and time.monotonic() < deadline:
            time.sleep(0.02)
        (written,) = out.glob("*.mcap")
        opened = written.stat().st_size
        while written.stat().st_size == opened and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the first chunk of frames is on disk: Ctrl-C in the middle of the bag, however fast
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 130, errors
    assert "interrupted: the bag is valid and holds the first" in errors
    frames, masks = bag_messages(out, "/cam/image_raw"), bag_messages(out, "/cam/segmentation/mask")
    assert 0 < len(masks) == len(frames) < 400
    assert [stamp_ns(m.message) for m in masks] == [stamp_ns(f.message) for f in frames]


def test_info_names_topics_types_counts_and_rate(camera_bag, capsys):
    assert bag_cli("info", camera_bag) == 0
    printed = capsys.readouterr().out
    assert "messages:  24" in printed and "duration:  0.733 s" in printed
    assert any(line.split() == ["/cam/image_raw", "sensor_msgs/msg/Image", "12", "15.00"]
               for line in printed.splitlines())


camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} is absent (real data, not in the repository)")
spot = pytest.mark.skipif(not SPOT.is_dir(), reason=f"{SPOT} is absent (real data, not in the repository)")


@camvid
def test_camvid_from_images_segment_eval_end_to_end(tmp_path, capsys):
    camera = tmp_path / "camvid"
    assert bag_cli("from-images", CAMVID / "images", "--topic", "/camvid/image_raw", "--rate", "15",
                   "--labels", CAMVID / "labels", "--label-topic", "/camvid/labels", "--out", camera) == 0
    segmented = tmp_path / "segmented"
    prompts = [line.split(",")[0] for line in CAMVID_CLASSES.splitlines()]
    assert bag_cli("segment", camera, "--topic", "/camvid/image_raw", "--prompts", *prompts, "--out", segmented,
                   *TINY) == 0
    classes = tmp_path / "camvid.txt"
    classes.write_text(CAMVID_CLASSES)
    capsys.readouterr()
    assert bag_cli("eval", segmented, "--mask-topic", "/camvid/segmentation/mask", "--label-topic",
                   "/camvid/labels", "--classes", classes, "--ignore-index", "11", "--out", tmp_path / "eval") == 0
    assert "matched 101 frames; 0 frames without ground truth; 0 ground-truth frames without a frame" in \
           capsys.readouterr().out
    assert all((tmp_path / "eval" / name).stat().st_size > 0 for name in REPORTS)
    assert bag_cli("eval", camera, "--topic", "/camvid/image_raw", "--labels", CAMVID / "labels", "--classes",
                   classes, "--ignore-index", "11", "--out", tmp_path / "eval_engine", *TINY) == 0
    report = json.loads((tmp_path / "eval_engine" / "metrics.json").read_text())
    assert report["meta"]["frames_matched"] == 101 and len(report["classes"]) == 11


@spot
def test_spot_ros1_bags_raw_and_compressed_several_cameras(tmp_path):
    cameras = ["/spot/camera/hand_color/image", "/spot/camera/frontleft/image", "/spot/camera/hand_mono/image"]
    out = tmp_path / "raw"
    assert bag_cli("segment", SPOT / "spot_raw.bag", *(a for c in cameras for a in ("--topic", c)),
                   "--prompts", "floor", "wall", "--out", out, *TINY) == 0
    with open_bag(out) as reader:
        types = topic_types(reader)
    for camera in cameras:
        namespace = camera.rsplit("/", 1)[0]
        (mask,) = bag_messages(out, f"{namespace}/segmentation/mask")
        (frame,) = bag_messages(out, camera)
        assert (mask.timestamp, stamp_ns(mask.message)) == (frame.timestamp, stamp_ns(frame.message))
        assert (mask.message.width, mask.message.height) == (frame.message.width, frame.message.height)
    assert types["/spot/depth/frontleft/image"] == "sensor_msgs/msg/Image"  # other topics are copied
    compressed = tmp_path / "compressed"
    assert bag_cli("segment", SPOT / "spot_compressed.bag", "--topic", "/spot/camera/hand_color/image/compressed",
                   "--prompts", "floor", "wall", "--out", compressed, *TINY) == 0
    (mask,) = bag_messages(compressed, "/spot/camera/hand_color/segmentation/mask")
    assert (mask.message.width, mask.message.height) == (640, 480)


def test_from_images_compressed_writes_jpeg_that_segment_reads(tmp_path, capsys):
    root = write_frames(tmp_path, 3, labels=False)
    assert bag_cli("from-images", root / "images", "--topic", "/cam/image_raw", "--rate", "10", "--compressed",
                   "--out", tmp_path / "refused") == 2
    assert "compressed images go on a topic ending in /compressed" in capsys.readouterr().err
    out = tmp_path / "jpeg"
    assert bag_cli("from-images", root / "images", "--topic", "/cam/image_raw/compressed", "--rate", "10",
                   "--compressed", "--out", out) == 0
    (first, *_) = bag_messages(out, "/cam/image_raw/compressed")
    assert first.msgtype == "sensor_msgs/msg/CompressedImage" and bytes(first.message.data[:2]) == b"\xff\xd8"
    assert bag_cli("segment", out, "--topic", "/cam/image_raw/compressed", "--prompts", "a", "b",
                   "--out", tmp_path / "segmented", *TINY) == 0
    masks = bag_messages(tmp_path / "segmented", "/cam/segmentation/mask")
    assert len(masks) == 3 and (masks[0].message.width, masks[0].message.height) == (64, 48)


def test_segment_with_depth_writes_the_nodes_3d_outputs_in_step(tmp_path):
    """Recorded colour, depth (half resolution, one frame missing) and camera_info: the paired frames get the
    node's cloud, camera_info and detections_3d, the unpaired one its mask alone, all in the input's order."""
    from node_frames import camera_info_message, depth_message, rgb_message

    source = tmp_path / "rgbd"
    depth = np.full((24, 32), 1500, np.uint16)
    depth[:, :8] = 0
    stamps = []
    with BagWriter(source) as writer:
        for index in range(3):
            colour = rgb_message(synthetic_rgb(64, 48, seed=index), "colour")
            stamps.append(stamp_ns(colour))
            time_ns = 1_000_000_000 + index * 100_000_000
            if index != 1:  # the depth of frame 1 was lost; the depth arrives after the colour in the bag
                writer.write("/cam/depth/image_raw", depth_message(depth, colour.header, "depth"), time_ns + 2)
            writer.write("/cam/color/camera_info", camera_info_message(colour.header, 64, 48, 60.0, 31.5, 23.5),
                         time_ns)
            writer.write("/cam/color/image_raw", colour, time_ns + 1)
    out = tmp_path / "out"
    assert bag_cli("segment", source, "--topic", "/cam/color/image_raw", "--depth-topic", "/cam/depth/image_raw",
                   "--prompts", "a", "b", "--out", out, *TINY) == 0
    with open_bag(out) as reader:
        written = {}
        for item in messages(reader, list(topic_types(reader))):
            written.setdefault(item.topic, []).append(item.message)
    assert [stamp_ns(m) for m in written["/cam/color/segmentation/mask"]] == stamps
    assert [stamp_ns(m) for m in written["/cam/color/segmentation/points"]] == [stamps[0], stamps[2]]
    assert [stamp_ns(m) for m in written["/cam/color/segmentation/detections_3d"]] == [stamps[0], stamps[2]]
    assert len(written["/cam/color/segmentation/camera_info"]) == 3 and len(written["/cam/depth/image_raw"]) == 2
    cloud = written["/cam/color/segmentation/points"][0]
    assert (cloud.height, cloud.width, cloud.header.frame_id) == (48, 64, "depth")
    z = np.frombuffer(cloud.data.tobytes(), np.float32).reshape(48, 64, 6)[:, :, 2]
    assert np.isnan(z[:, :16]).all() and np.allclose(z[:, 16:], 1.5)


def test_segment_refuses_depth_topics_that_do_not_pair_with_the_cameras(camera_bag, tmp_path, capsys):
    assert bag_cli("segment", camera_bag, "--topic", "/cam/image_raw", "--depth-topic", "/a", "--depth-topic", "/b",
                   "--prompts", "a", "--out", tmp_path / "out", *TINY) == 2
    assert "--depth-topic has 2 entries for 1 --topic" in capsys.readouterr().err


def test_pairing_takes_negative_stamps_without_pairing_them():
    """rclpy's Time, inside message_filters, refuses negative seconds: such frames go alone, in order."""
    from builtin_interfaces.msg import Time

    from clip_dinoiser_ros.bag.rgbd_pairing import BagPairing, CameraInputs
    from clip_dinoiser_ros.pipeline.frame_geometry import PairingOptions
    from node_frames import camera_info_message, depth_message, rgb_message

    pairing = BagPairing([CameraInputs("/c/image_raw", "/c/depth", "/c/camera_info")], PairingOptions(0.1, 10))
    ready = []
    for index, sec in enumerate((5, -3, 6)):
        colour = rgb_message(synthetic_rgb(32, 24), "colour")
        colour.header.stamp = Time(sec=sec, nanosec=0)
        logged = index * 33_000_000
        ready += pairing.add("/c/camera_info", camera_info_message(colour.header, 32, 24, 30.0, 15.5, 11.5), logged)
        ready += pairing.add("/c/depth", depth_message(np.ones((24, 32), np.uint16), colour.header), logged)
        ready += pairing.add_colour("/c/image_raw", colour.header, sec, logged)
    ready += pairing.flush()
    assert [(frame.item, frame.depth is not None) for frame in ready] == [(5, True), (-3, False), (6, True)]


def write_rgbd_30_hz(path: Path, count: int, exact_every: int, depth_delay_ns: int, units: int) -> list[int]:
    """A RealSense-like recording at 30 Hz: camera_info, colour, then depth ``depth_delay_ns`` later, stamped as
    the colour only for every ``exact_every``-th frame and 1 ms off for the others; the colour stamps."""
    from node_frames import camera_info_message, depth_message, rgb_message

    stamps = []
    with BagWriter(path) as writer:
        for index in range(count):
            colour = rgb_message(synthetic_rgb(32, 24, seed=index), "camera_color_optical_frame")
            stamps.append(stamp_ns(colour))
            logged = 1_000_000_000 + index * 33_333_333
            writer.write("/cam/color/camera_info", camera_info_message(colour.header, 32, 24, 30.0, 15.5, 11.5),
                         logged)
            writer.write("/cam/color/image_raw", colour, logged + 1)
            depth = depth_message(np.full((24, 32), units, np.uint16), colour.header, "camera_color_optical_frame")
            if index % exact_every:
                depth.header.stamp.nanosec += 1_000_000
            writer.write("/cam/depth/image_raw", depth, logged + depth_delay_ns)
    return stamps


def test_a_30_hz_recording_whose_depth_is_1_ms_off_segments_every_colour_frame(tmp_path):
    """Every colour frame gets its mask, in order; those whose depth is 1 ms off go alone (no cloud), the others
    get theirs, in metres of --depth-scale (5000 units per metre, as TUM RGB-D)."""
    source = tmp_path / "rgbd30"
    stamps = write_rgbd_30_hz(source, 30, exact_every=3, depth_delay_ns=5_000_000, units=5000)
    out = tmp_path / "out"
    assert bag_cli("segment", source, "--topic", "/cam/color/image_raw", "--depth-topic", "/cam/depth/image_raw",
                   "--depth-scale", "0.0002", "--prompts", "a", "b", "--out", out, *TINY) == 0
    masks = bag_messages(out, "/cam/color/segmentation/mask")
    clouds = bag_messages(out, "/cam/color/segmentation/points")
    assert [stamp_ns(item.message) for item in masks] == stamps
    assert [stamp_ns(item.message) for item in clouds] == stamps[::3]
    z = np.frombuffer(clouds[0].message.data.tobytes(), np.float32).reshape(24, 32, 6)[:, :, 2]
    assert np.allclose(z, 1.0)


def test_depth_later_than_sync_wait_s_is_not_paired_in_a_bag_either(tmp_path):
    """The node's sync_wait_s, in the bag's recorded time: depth logged 5 ms after its colour frame pairs
    within a 0.1 s wait and not within 1 ms (the frame has gone alone by then)."""
    source = tmp_path / "late"
    stamps = write_rgbd_30_hz(source, 6, exact_every=1, depth_delay_ns=5_000_000, units=1000)
    clouds = {}
    for wait in ("0.1", "0.001"):
        out = tmp_path / f"wait{wait}"
        assert bag_cli("segment", source, "--topic", "/cam/color/image_raw", "--depth-topic", "/cam/depth/image_raw",
                       "--sync-wait-s", wait, "--prompts", "a", "b", "--out", out, *TINY) == 0
        assert len(bag_messages(out, "/cam/color/segmentation/mask")) == len(stamps)
        with open_bag(out) as reader:  # messages() of a topic not in the bag gives every message
            written = "/cam/color/segmentation/points" in topic_types(reader)
            clouds[wait] = len(list(messages(reader, ["/cam/color/segmentation/points"]))) if written else 0
    assert clouds == {"0.1": len(stamps), "0.001": 0}


def test_the_bag_tool_refuses_what_the_node_refuses(camera_bag, tmp_path, capsys):
    for flag, value, reason in (("--sync-wait-s", "-1", "sync_wait_s: -1.0 is refused"),
                                ("--sync-queue-size", "0", "sync_queue_size: 0 is refused"),
                                ("--depth-scale", "0", "depth_scale: 0.0 is refused")):
        with pytest.raises(SystemExit) as exited:
            bag_cli("segment", camera_bag, "--topic", "/cam/image_raw", flag, value, "--prompts", "a",
                    "--out", tmp_path / "x", *TINY)
        assert exited.value.code == 2 and reason in capsys.readouterr().err
