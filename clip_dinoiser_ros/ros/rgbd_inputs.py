"""A camera's camera_info and depth inputs, paired with its colour frames by message_filters.

Every colour frame goes to the mailbox at once, alone and held back for ``sync_wait_s`` (counted from
the first frame still unpaired); when message_filters pairs it with a depth image and a camera_info of its
stamp (exact or approximate sync, ``sync_queue_size`` messages per input), the complete frame takes its
place. So a missing or late depth never holds up the mask by more than that moment, and a frame is
segmented once, complete when its pair came in time. The geometry of a frame being segmented (its
camera_info and depth at its size) is made here too, counted and refused with a throttled log line.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable, Optional

import message_filters
from sensor_msgs.msg import CameraInfo, Image

from ..pipeline import topics
from ..pipeline.frame_geometry import FrameGeometry, GeometryError, PairingOptions, geometry_or_none, pairable
from .depth_health import DepthHealth
from .diagnostics import LOG_THROTTLE_S

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleNode
    from rclpy.qos import QoSProfile
    from rclpy.qos_overriding_options import QoSOverridingOptions


def stamped_input(node: LifecycleNode, message_type: type, topic: str, qos: QoSProfile,
                  overrides: Optional[QoSOverridingOptions],
                  refused: Callable[[str], None]) -> tuple[message_filters.SimpleFilter, Any]:
    """A subscription of ``node`` feeding a message_filters input, and the subscription: a message whose stamp
    message_filters cannot take (negative) is refused, ``refused`` told why, with a throttled log line."""
    source = message_filters.SimpleFilter()

    def offer(message: Any) -> None:
        if not pairable(message):
            refused(f"{topic}: stamp {message.header.stamp.sec} s is negative")
            node.get_logger().warning(f"{topic}: a message with a negative stamp is refused",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        source.signalMessage(message)

    subscription = node.create_subscription(message_type, topic, offer, copy.copy(qos),
                                            qos_overriding_options=overrides)
    return source, subscription


class RgbdInputs:
    """One camera's camera_info (latest kept) and, with a depth topic, its depth and the synchronizer.

    The subscriptions are the node's own, feeding message_filters' SimpleFilters, so that a message whose
    stamp message_filters cannot take (rclpy's Time refuses negative seconds, and TimeSynchronizer would
    raise while holding its lock) is refused and counted here instead of ending the executor.
    """

    def __init__(self, node: LifecycleNode, plan: topics.CameraTopics, qos: QoSProfile,
                 overrides: QoSOverridingOptions, pairing: PairingOptions,
                 on_pair: Callable[[Image, Image, CameraInfo], None]) -> None:
        self.health = DepthHealth()
        self._node = node
        self._topic = plan.input
        self._frames_differ_warned = False
        self._subscriptions: list[Any] = []
        self._info = self._input(CameraInfo, plan.camera_info, qos, overrides)
        self._info.registerCallback(lambda _: self.health.on_camera_info())
        self._latest_info = message_filters.Cache(self._info, 1)
        self._colour: Optional[message_filters.SimpleFilter] = None
        if plan.depth:
            self._colour = message_filters.SimpleFilter()
            inputs = [self._colour, self._input(Image, plan.depth, qos, overrides), self._info]
            synchronizer = pairing.synchronizer(inputs)
            synchronizer.registerCallback(lambda *pair: (self.health.on_pair(), on_pair(*pair)))

    def _input(self, message_type: type, topic: str, qos: QoSProfile,
               overrides: QoSOverridingOptions) -> message_filters.SimpleFilter:
        source, subscription = stamped_input(self._node, message_type, topic, qos, overrides, self.health.on_refused)
        self._subscriptions.append(subscription)
        return source

    @property
    def has_depth(self) -> bool:
        return self._colour is not None

    def on_colour(self, message: Any) -> None:
        """After the colour frame went to the mailbox alone: offer it to the synchronizer."""
        if self._colour is not None and pairable(message):
            self._colour.signalMessage(message)

    def geometry(self, colour: Any, size: tuple[int, int], depth: Optional[Image], info: Optional[CameraInfo],
                 max_pixels: int, depth_scale: float) -> Optional[FrameGeometry]:
        """The frame's camera_info and depth (paired), or the latest camera_info alone; refusals are logged."""
        if self.has_depth:
            self.health.on_frame(paired=depth is not None)
        if depth is not None:
            self._check_frames(colour.header.frame_id, depth.header.frame_id)

        def refused(error: GeometryError) -> None:
            self.health.on_refused(str(error))
            self._node.get_logger().warning(f"{self._topic}: {error}; the mask is published without it",
                                            throttle_duration_sec=LOG_THROTTLE_S)

        return geometry_or_none(info or self._latest_info.getLast(), depth, *size, max_pixels, refused, depth_scale)

    def _check_frames(self, colour_frame: str, depth_frame: str) -> None:
        """Registered depth has the colour camera's frame; another one is said once per activation (as
        depth_image_proc does), and the cloud keeps the depth's frame."""
        if colour_frame != depth_frame and not self._frames_differ_warned:
            self._frames_differ_warned = True
            self._node.get_logger().warning(
                f"{self._topic}: the depth's frame_id {depth_frame!r} is not the colour image's {colour_frame!r}: "
                "is the depth registered to the colour camera? The cloud and 3D boxes are in the depth's frame")

    def destroy(self, node: LifecycleNode) -> None:
        for subscription in self._subscriptions:
            node.destroy_subscription(subscription)
        self._subscriptions.clear()
