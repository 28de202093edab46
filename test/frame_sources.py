"""Real frames for tests: CamVid photos and the Spot bag images as rclpy message objects.

Shared by several test modules; the data lives outside the repo (it must not be redistributed),
so every accessor skips the calling test with a clear reason when it is absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from PIL import Image as PILImage
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

CAMVID_IMAGES = Path("camvid") / "0016E5" / "images"
SPOT_RAW_BAG = Path("bags") / "spot_raw.bag"
SPOT_COMPRESSED_BAG = Path("bags") / "spot_compressed.bag"


def shared_data_dir() -> Path:
    """The read-only data folder next to the repository (../shared/data)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def require_shared_data(subpath: str | Path) -> Path:
    """Path of a file or folder under the shared data folder; skips the test when it is absent."""
    path = shared_data_dir() / subpath
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (it is never copied into the repository)")
    return path


def camvid_frames(n: int) -> list[np.ndarray]:
    """The first n CamVid 0016E5 frames in file-name (time) order, as HxWx3 uint8 RGB arrays."""
    paths = sorted(require_shared_data(CAMVID_IMAGES).glob("*.png"))
    if len(paths) < n:
        raise ValueError(f"asked for {n} CamVid frames, only {len(paths)} exist")
    frames = []
    for path in paths[:n]:
        with PILImage.open(path) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return frames


def _header(bag_header) -> Header:
    stamp = Time(sec=int(bag_header.stamp.sec), nanosec=int(bag_header.stamp.nanosec))
    return Header(stamp=stamp, frame_id=bag_header.frame_id)


def _to_rclpy(bag_msg, compressed: bool) -> Image | CompressedImage:
    data = bag_msg.data.tobytes()
    if compressed:
        return CompressedImage(header=_header(bag_msg.header), format=bag_msg.format, data=data)
    return Image(
        header=_header(bag_msg.header),
        height=int(bag_msg.height),
        width=int(bag_msg.width),
        encoding=bag_msg.encoding,
        is_bigendian=int(bag_msg.is_bigendian),
        step=int(bag_msg.step),
        data=data,
    )


def spot_messages(compressed: bool) -> dict[str, Image | CompressedImage]:
    """Every image of the Spot ROS 1 bag (raw or compressed), keyed by topic, as rclpy messages.

    Raw topics: /spot/camera/hand_color/image (rgb8 640x480), /spot/camera/frontleft/image and
    /spot/camera/hand_mono/image (mono8), /spot/depth/frontleft/image (16UC1); the compressed bag
    has the same frames on <topic>/compressed (JPEG, depth as PNG).
    """
    bag = require_shared_data(SPOT_COMPRESSED_BAG if compressed else SPOT_RAW_BAG)
    messages = {}
    with AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            bag_msg = reader.deserialize(raw, connection.msgtype)
            messages[connection.topic] = _to_rclpy(bag_msg, compressed)
    return messages
