"""An RGB-D camera as RealSense, ZED and Orbbec drivers publish it, for node tests over real DDS.

Colour (rgb8), registered depth (16UC1 millimetres) and camera_info at 30 Hz with identical stamps, from a
frame folder (../shared/data/rgbd: color/*.jpg, depth/*.png, looped) or generated frames. The camera_info is a
real calibration: plumb_bob distortion that is not zero, and rectified images described by P, whose fx, fy,
cx, cy are a few per cent off K's (as a rectified camera's are). The faults drivers show are options
(``Faults``). Frames go out from a thread of the driver's own, paced on the monotonic clock (each frame at
``start + n / rate``, so a late frame does not delay the ones after it), and everything sent is recorded.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from node_frames import synthetic_rgb

RGBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"
REDWOOD_K = (525.0, 525.0, 319.5, 239.5)  # camera_primesense.json: fx, fy, cx, cy
P_SCALE = (1.04, 1.03, 0.98, 1.02)  # P's fx, fy, cx, cy over K's: a rectified camera's projection differs
DISTORTION = [0.08, -0.17, 0.001, -0.0015, 0.05]  # plumb_bob k1, k2, t1, t2, k3


@dataclass(frozen=True)
class Faults:
    """What goes wrong; the defaults are a healthy camera."""

    depth_offset_ns: int = 0  # depth stamped this far from its colour frame
    depth_every: int = 1  # depth with every n-th colour frame only (2: 15 Hz beside 30 Hz colour)
    depth_stops_after: Optional[int] = None  # no depth after this many frames
    camera_info: str = "with"  # "with" the colour (just before it), "late" (just after it), "missing"
    duplicate_stamps: bool = False  # each stamp is sent twice (a driver whose clock is stuck for a frame)
    backwards_after: Optional[int] = None  # after this many frames the stamps jump back (a bag played in a loop)
    backwards_s: float = 0.5


@dataclass
class Sent:
    """What the driver sent: the colour stamps (ns) in order, and counts."""

    colour_stamps: list[int] = field(default_factory=list)
    depth: int = 0
    paired_depth: int = 0  # depth whose stamp equals its colour frame's: what an exact sync can pair
    camera_info: int = 0


@dataclass(frozen=True)
class Frames:
    """Colour frames (RGB) with their registered depth (uint16 mm), and the K they were taken with."""

    rgb: list[np.ndarray]
    depth: list[np.ndarray]
    k: tuple[float, float, float, float]

    @staticmethod
    def folder(path: Path = RGBD) -> "Frames":
        """color/*.jpg and depth/*.png in name order (Redwood's layout); K from camera_primesense.json's values."""
        colour = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((path / "color").glob("*"))]
        depth = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((path / "depth").glob("*.png"))]
        if not colour or len(colour) != len(depth):
            raise ValueError(f"{path}: expected as many color/ as depth/ images, found {len(colour)}, {len(depth)}")
        return Frames(colour, depth, REDWOOD_K)

    @staticmethod
    def synthetic(width: int = 160, height: int = 120, count: int = 3, millimetres: int = 1200) -> "Frames":
        k = (width * 0.9, width * 0.9, (width - 1) / 2, (height - 1) / 2)
        return Frames([synthetic_rgb(width, height, seed=i) for i in range(count)],
                      [np.full((height, width), millimetres, np.uint16) for _ in range(count)], k)


def calibration(header: Header, width: int, height: int, k: tuple[float, float, float, float]) -> CameraInfo:
    """A calibrated camera's camera_info: K with distortion, and P (of the rectified images) a few % off K."""
    fx, fy, cx, cy = k
    pfx, pfy, pcx, pcy = (value * scale for value, scale in zip(k, P_SCALE))
    return CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob", d=list(DISTORTION),
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[pfx, 0.0, pcx, 0.0, 0.0, pfy, pcy, 0.0, 0.0, 0.0, 1.0, 0.0])


def image(pixels: np.ndarray, header: Header) -> Image:
    encoding = "rgb8" if pixels.ndim == 3 else "16UC1"
    return Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                 step=pixels.shape[1] * pixels.itemsize * (3 if pixels.ndim == 3 else 1),
                 data=np.ascontiguousarray(pixels).tobytes())


class CameraDriver:
    """``<namespace>/color/image_raw``, ``<namespace>/color/camera_info`` and
    ``<namespace>/aligned_depth_to_color/image_raw`` (RealSense's names, or ``topics``: colour, depth,
    camera_info), sensor-data QoS, from ``node``."""

    def __init__(self, node: Any, namespace: str, frames: Frames, rate_hz: float = 30.0, faults: Faults = Faults(),
                 colour_frame: str = "camera_color_optical_frame", depth_frame: Optional[str] = None,
                 first_stamp_s: int = 1_700_000_000, topics: Optional[tuple[str, str, str]] = None) -> None:
        self.colour_topic, self.depth_topic, self.info_topic = topics or (
            f"{namespace}/color/image_raw", f"{namespace}/aligned_depth_to_color/image_raw",
            f"{namespace}/color/camera_info")
        self.frames, self.rate_hz, self.faults = frames, rate_hz, faults
        self.colour_frame, self.depth_frame = colour_frame, depth_frame or colour_frame  # registered: the same
        self.sent = Sent()
        self._node = node
        self._publishers = [node.create_publisher(kind, topic, qos_profile_sensor_data) for kind, topic in
                            ((Image, self.colour_topic), (Image, self.depth_topic), (CameraInfo, self.info_topic))]
        self._first_ns = first_stamp_s * 1_000_000_000
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "CameraDriver":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"driver {self.colour_topic}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        for publisher in self._publishers:
            self._node.destroy_publisher(publisher)

    def __enter__(self) -> "CameraDriver":
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.close()

    def snapshot(self) -> Sent:
        with self._lock:
            return Sent(list(self.sent.colour_stamps), self.sent.depth, self.sent.paired_depth, self.sent.camera_info)

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        start = time.monotonic()
        ticks = 0
        while not self._stop.is_set():
            self._send(self._count)
            self._count += 1
            ticks += 1
            self._stop.wait(max(0.0, start + ticks * period - time.monotonic()))

    def _stamp_ns(self, index: int) -> int:
        faults = self.faults
        frame = index // 2 if faults.duplicate_stamps else index
        stamp = self._first_ns + round(frame * 1e9 / self.rate_hz)
        if faults.backwards_after is not None and index >= faults.backwards_after:
            stamp -= round(faults.backwards_s * 1e9)
        return stamp

    def _send(self, index: int) -> None:
        faults = self.faults
        colour_pub, depth_pub, info_pub = self._publishers
        stamp = self._stamp_ns(index)
        rgb, depth = self.frames.rgb[index % len(self.frames.rgb)], self.frames.depth[index % len(self.frames.depth)]
        header = Header(stamp=time_of(stamp), frame_id=self.colour_frame)
        info = calibration(header, rgb.shape[1], rgb.shape[0], self.frames.k)
        with_depth = index % faults.depth_every == 0 and (faults.depth_stops_after is None
                                                          or index < faults.depth_stops_after)
        if faults.camera_info == "with":
            info_pub.publish(info)
        if with_depth:  # drivers send the depth of a frame about when its colour goes
            depth_pub.publish(image(depth, Header(stamp=time_of(stamp + faults.depth_offset_ns),
                                                  frame_id=self.depth_frame)))
        colour_pub.publish(image(rgb, header))
        if faults.camera_info == "late":
            info_pub.publish(info)
        with self._lock:
            self.sent.colour_stamps.append(stamp)
            self.sent.camera_info += faults.camera_info != "missing"
            self.sent.depth += with_depth
            self.sent.paired_depth += with_depth and faults.depth_offset_ns == 0


def time_of(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
