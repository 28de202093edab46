"""Frame messages for node tests: real photos as sensor_msgs, with unique stamps to match outputs."""
from __future__ import annotations

import itertools
from typing import Sequence

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

_stamps = itertools.count(1)


def unique_header(frame_id: str) -> Header:
    """A stamp no other test frame has, so an output can be matched to the frame it came from."""
    return Header(stamp=Time(sec=1_000_000 + next(_stamps), nanosec=123), frame_id=frame_id)


def rgb_message(rgb: np.ndarray, frame_id: str = "camera") -> Image:
    height, width = rgb.shape[:2]
    return Image(header=unique_header(frame_id), height=height, width=width, encoding="rgb8",
                 step=width * 3, data=np.ascontiguousarray(rgb).tobytes())


def jpeg_message(rgb: np.ndarray, frame_id: str = "camera") -> CompressedImage:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=unique_header(frame_id), format="jpeg", data=encoded.tobytes())


def restamped(message, frame_id: str | None = None):
    """The same image with a fresh unique stamp (bag frames are sent several times)."""
    message.header = unique_header(frame_id or message.header.frame_id)
    return message


def same_header(a: Header, b: Header) -> bool:
    return (a.stamp.sec, a.stamp.nanosec, a.frame_id) == (b.stamp.sec, b.stamp.nanosec, b.frame_id)


def synthetic_rgb(width: int = 480, height: int = 360, seed: int = 0) -> np.ndarray:
    """A frame the tests make themselves (no shared data needed): colour gradients, shapes and noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1),
                    (xs + ys) * 255 // max(width + height - 2, 1)], axis=-1).astype(np.int32)
    for _ in range(6):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(10, max(11, min(width, height) // 3)))
        inside = (xs - x0) ** 2 + (ys - y0) ** 2 < radius ** 2
        rgb[inside] = rng.integers(0, 256, size=3)
    rgb += rng.integers(-12, 13, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def mono_message(gray: np.ndarray, frame_id: str = "camera") -> Image:
    height, width = gray.shape
    return Image(header=unique_header(frame_id), height=height, width=width, encoding="mono8",
                 step=width, data=np.ascontiguousarray(gray).tobytes())


def depth_message(depth: np.ndarray, header: Header, frame_id: str = "depth") -> Image:
    """A depth image with the colour frame's stamp: uint16 as 16UC1 (mm), float32 as 32FC1 (m); uint8 gives
    mono8, which is no depth encoding."""
    encoding = {np.dtype(np.uint16): "16UC1", np.dtype(np.float32): "32FC1", np.dtype(np.uint8): "mono8"}[depth.dtype]
    height, width = depth.shape
    return Image(header=Header(stamp=header.stamp, frame_id=frame_id), height=height, width=width,
                 encoding=encoding, step=width * depth.dtype.itemsize, data=np.ascontiguousarray(depth).tobytes())


def camera_info_message(header: Header, width: int, height: int, fx: float, cx: float, cy: float,
                        fy: float | None = None, *, p: Sequence[float] | None = None,
                        d: Sequence[float] = (0.0,) * 5) -> CameraInfo:
    """K from ``fx``, ``fy``, ``cx``, ``cy``; P (row-major 3x4) is ``p``, or K's terms with Tx = Ty = 0 (an ideal,
    undistorted camera); plumb_bob distortion ``d``. A calibrated camera sends K != P and a non-zero ``d``."""
    fy = fx if fy is None else fy
    p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0] if p is None else [float(v) for v in p]
    return CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob", d=list(d),
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=p)
