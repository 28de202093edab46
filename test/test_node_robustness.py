"""Nothing a camera sends kills the node: after every bad frame a good frame still gets its output."""
import time

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from frame_sources import spot_messages
from node_frames import jpeg_message, restamped, rgb_message, same_header, synthetic_rgb, unique_header
from ros_harness import publish_until_answered, running_node, wait_until

RAW = "/robust_raw/image_raw"
JPEG = "/robust_jpeg/image_raw/compressed"


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("robustness"), {
        "image_topics": [RAW, JPEG],
        "prompts": ["road", "car"],
        "clip_model": "ViT-Tiny-16-test",
        "random_weights": True,
        "input_reliability": "reliable",
    }) as process:
        yield process


@pytest.fixture(scope="module")
def io(probe):
    return {
        RAW: (probe.node.create_publisher(Image, RAW, 10), probe.collect(Image, "/robust_raw/segmentation/mask")),
        JPEG: (probe.node.create_publisher(CompressedImage, JPEG, 10),
               probe.collect(Image, "/robust_jpeg/segmentation/mask")),
    }


def raw(height, width, encoding, data, step=None):
    return Image(header=unique_header("cam"), height=height, width=width, encoding=encoding,
                 step=step if step is not None else width * 3, data=data)


def jpeg(data: bytes):
    return CompressedImage(header=unique_header("cam"), format="jpeg", data=data)


def good_jpeg_bytes():
    ok, encoded = cv2.imencode(".jpg", synthetic_rgb())
    return encoded.tobytes()


def huge_png_bytes():
    ok, encoded = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))
    return encoded.tobytes()


BAD_FRAMES = {
    "unsupported 16UC1 depth": lambda: raw(48, 64, "16UC1", bytes(48 * 64 * 2), step=64 * 2),
    "unsupported 16UC1 depth (real Spot frame)": lambda: restamped(spot_messages(False)["/spot/depth/frontleft/image"]),
    "unknown encoding": lambda: raw(4, 4, "weird42", bytes(48)),
    "step smaller than a row": lambda: raw(10, 10, "rgb8", bytes(300), step=20),
    "data shorter than height*step": lambda: raw(100, 100, "rgb8", bytes(1000)),
    "zero-sized image": lambda: raw(0, 0, "rgb8", b""),
    "8000x8000 claim with tiny data": lambda: raw(8000, 8000, "rgb8", bytes(64)),
    "8000x8000 real mono8 frame": lambda: raw(8000, 8000, "mono8", bytes(8000 * 8000), step=8000),
    "corrupt jpeg": lambda: jpeg(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8),
    "truncated jpeg": lambda: jpeg(good_jpeg_bytes()[:2000]),
    "empty compressed": lambda: jpeg(b""),
    "8000x8000 png": lambda: CompressedImage(header=unique_header("cam"), format="png", data=huge_png_bytes()),
}


def assert_good_frame_still_served(node, io, topic):
    publisher, collector = io[topic]
    frame = synthetic_rgb(seed=1)
    message = rgb_message(frame) if topic == RAW else jpeg_message(frame)
    mask = publish_until_answered(node, publisher, collector, message)
    assert (mask.width, mask.height, mask.encoding) == (480, 360, "mono8")


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frame_is_rejected_and_the_next_good_frame_is_served(node, probe, io, case):
    bad = BAD_FRAMES[case]()
    topic = JPEG if isinstance(bad, CompressedImage) else RAW
    publisher, collector = io[topic]
    collector.clear()
    for _ in range(3):
        publisher.publish(bad)
    assert_good_frame_still_served(node, io, topic)
    assert not collector.matching(lambda m: same_header(m.header, bad.header)), "a bad frame produced an output"


def test_rejections_are_logged_with_the_reason_and_counted(node, probe, io):
    from diagnostic_msgs.msg import DiagnosticArray

    publisher, _ = io[RAW]
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    from clip_dinoiser_ros.ros.node import LOG_THROTTLE_S

    wait_until(lambda: publisher.get_subscription_count() > 0, 30, "the node subscribed to the raw camera")
    time.sleep(LOG_THROTTLE_S + 0.5)  # the warning is throttled: let the previous tests' warnings age out
    publisher.publish(raw(100, 100, "rgb8", bytes(1000)))
    assert_good_frame_still_served(node, io, RAW)
    wait_until(lambda: "frame rejected: data holds 1000 bytes" in node.log(), 10, "this frame's warning in the log")

    def rejected_count():
        statuses = [s for array in diagnostics.matching(lambda _: True) for s in array.status if s.name.endswith(RAW)]
        counts = [int(kv.value) for s in statuses for kv in s.values if kv.key == "frames_rejected"]
        return max(counts, default=0) or None

    assert wait_until(rejected_count, 10, "frames_rejected in diagnostics") >= 1
