"""A colour frame's camera_info and registered depth, checked and brought to the frame's resolution.

Done when the frame is decoded, so that a bad depth image or camera_info is refused there (logged and
counted, as a bad image is) and the frame still gets its mask; the pipeline only sees usable geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from ..spatial import CameraModelError, DepthError, Intrinsics, registered_depth, same_aspect
from .image_codec import REP118_DEPTH_SCALE, ImageDecodeError, image_to_depth
from .spatial_messages import intrinsics


@dataclass(frozen=True)
class PairingOptions:
    """How a depth camera's colour, depth and camera_info are paired, in the node and in recorded bags alike:
    the node's sync_wait_s, sync_queue_size, sync and sync_slop_s."""

    wait_s: float
    queue_size: int
    sync: str = "exact"  # or "approximate": stamps within slop_s
    slop_s: float = 0.02

    def synchronizer(self, inputs: Sequence[Any]) -> Any:
        """message_filters' synchronizer of ``inputs`` (colour, depth, camera_info) for these options.

        message_filters (which runs on rclpy) is imported here, when a synchronizer is made: importing the
        pipeline loads no rclpy."""
        import message_filters

        if self.sync == "exact":
            return message_filters.TimeSynchronizer(inputs, self.queue_size)
        return message_filters.ApproximateTimeSynchronizer(inputs, self.queue_size, self.slop_s)


def pairable(message: Any) -> bool:
    """Whether message_filters can order it by stamp: rclpy's Time refuses negative seconds."""
    return message.header.stamp.sec >= 0


class GeometryError(ValueError):
    """The camera_info or depth image of a frame cannot be used; the message says which and why."""


@dataclass(frozen=True)
class FrameGeometry:
    camera_info: CameraInfo  # as received
    camera: Intrinsics  # at the colour frame's (the mask's) resolution
    depth: Optional[np.ndarray] = None  # metres at the mask's resolution, NaN = no depth
    depth_frame_id: str = ""


def frame_geometry(info: CameraInfo, depth: Optional[Image], height: int, width: int,
                   max_pixels: int, depth_scale: float = REP118_DEPTH_SCALE) -> FrameGeometry:
    """The geometry of a ``height`` x ``width`` colour frame (16UC1 depth in units of ``depth_scale`` metres);
    raises GeometryError."""
    try:
        camera = intrinsics(info)
    except CameraModelError as error:
        raise GeometryError(f"camera_info refused: {error}") from error
    if not same_aspect(width, height, camera.width, camera.height):
        raise GeometryError(f"camera_info refused: it is for {camera.width}x{camera.height} images, the colour "
                            f"image is {width}x{height} (another aspect ratio)")
    camera = camera.scaled(width, height)
    if depth is None:
        return FrameGeometry(info, camera)
    try:
        metres = registered_depth(image_to_depth(depth, max_pixels, depth_scale), height, width)
    except (ImageDecodeError, DepthError) as error:
        raise GeometryError(f"depth refused: {error}") from error
    return FrameGeometry(info, camera, metres, depth.header.frame_id)


def geometry_or_none(info: Optional[CameraInfo], depth: Optional[Image], height: int, width: int, max_pixels: int,
                     refused: Callable[[GeometryError], None],
                     depth_scale: float = REP118_DEPTH_SCALE) -> Optional[FrameGeometry]:
    """The frame's geometry, or None without a camera_info or when it is refused (``refused`` is told why):
    the frame then gets its mask without the 3D outputs."""
    if info is None:
        return None
    try:
        return frame_geometry(info, depth, height, width, max_pixels, depth_scale)
    except GeometryError as error:
        refused(error)
        return None
