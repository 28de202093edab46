"""A camera's camera_info and depth inputs, paired with its colour frames by message_filters.

Every colour frame goes to the mailbox at once, alone and held back for ``PAIR_WAIT_S``; when
message_filters pairs it with a depth image and a camera_info of its stamp (exact or approximate sync),
the complete frame takes its place. So a missing or late depth never holds up the mask by more than
that moment, and a frame is segmented once, complete when its pair came in time.
"""
from __future__ import annotations

import copy
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import message_filters
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image

from ..pipeline import topics
from ..pipeline.frame_geometry import SYNC_QUEUE, pairable
from .diagnostics import LOG_THROTTLE_S, WINDOW_S, diagnostic_status

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleNode
    from rclpy.qos import QoSProfile
    from rclpy.qos_overriding_options import QoSOverridingOptions


class DepthHealth:
    """Pairs made, colour frames that went alone, refused depth/camera_info; WARN while a problem is recent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.paired = self.unpaired = self.refused = 0
        self.last_error = ""
        self._last: dict[str, float] = {}

    def _seen(self, what: str) -> None:
        self._last[what] = time.monotonic()

    def _recent(self, what: str) -> bool:
        return time.monotonic() - self._last.get(what, float("-inf")) < WINDOW_S

    def on_camera_info(self) -> None:
        with self._lock:
            self._seen("camera_info")

    def on_frame(self, paired: bool) -> None:
        with self._lock:
            self._seen("frame")
            self._seen("paired" if paired else "unpaired")
            if paired:
                self.paired += 1
            else:
                self.unpaired += 1

    def on_refused(self, reason: str) -> None:
        with self._lock:
            self.refused += 1
            self.last_error = reason
            self._seen("refused")

    def status(self, name: str, depth_topic: str, info_topic: str, context: dict[str, str]) -> DiagnosticStatus:
        with self._lock:
            level, message = DiagnosticStatus.OK, "ok"
            if self._recent("frame") and not self._recent("camera_info"):
                level = DiagnosticStatus.WARN
                message = f"no camera_info on {info_topic} in the last {WINDOW_S:g} s: masks only, no points"
            elif self._recent("refused"):
                level, message = DiagnosticStatus.WARN, f"depth or camera_info refused: {self.last_error}"
            elif self._recent("unpaired") and not self._recent("paired"):
                level = DiagnosticStatus.WARN
                message = (f"no depth on {depth_topic} paired with a colour frame in the last {WINDOW_S:g} s "
                           "(stamps differ, or nothing arrives): masks only, no points")
            values = {"depth_topic": depth_topic, "camera_info_topic": info_topic, "frames_paired": str(self.paired),
                      "frames_unpaired": str(self.unpaired), "depth_refused": str(self.refused),
                      "last_error": self.last_error}
        return diagnostic_status(level, name, message, context.get("device", ""), values)


class RgbdInputs:
    """One camera's camera_info (latest kept) and, with a depth topic, its depth and the synchronizer.

    The subscriptions are the node's own, feeding message_filters' SimpleFilters, so that a message whose
    stamp message_filters cannot take (rclpy's Time refuses negative seconds, and TimeSynchronizer would
    raise while holding its lock) is refused and counted here instead of ending the executor.
    """

    def __init__(self, node: LifecycleNode, plan: topics.CameraTopics, qos: QoSProfile,
                 overrides: QoSOverridingOptions, sync: str, slop_s: float,
                 on_pair: Callable[[Image, Image, CameraInfo], None]) -> None:
        self.health = DepthHealth()
        self._node = node
        self._subscriptions: list[Any] = []
        self._info = self._input(CameraInfo, plan.camera_info, qos, overrides)
        self._info.registerCallback(lambda _: self.health.on_camera_info())
        self._latest_info = message_filters.Cache(self._info, 1)
        self._colour: Optional[message_filters.SimpleFilter] = None
        if plan.depth:
            self._colour = message_filters.SimpleFilter()
            inputs = [self._colour, self._input(Image, plan.depth, qos, overrides), self._info]
            synchronizer = (message_filters.TimeSynchronizer(inputs, SYNC_QUEUE) if sync == "exact" else
                            message_filters.ApproximateTimeSynchronizer(inputs, SYNC_QUEUE, slop_s))
            synchronizer.registerCallback(on_pair)

    def _input(self, message_type: type, topic: str, qos: QoSProfile,
               overrides: QoSOverridingOptions) -> message_filters.SimpleFilter:
        source = message_filters.SimpleFilter()
        self._subscriptions.append(self._node.create_subscription(
            message_type, topic, lambda message: self._offer(source, topic, message), copy.copy(qos),
            qos_overriding_options=overrides))
        return source

    def _offer(self, source: message_filters.SimpleFilter, topic: str, message: Any) -> None:
        if not pairable(message):
            self.health.on_refused(f"{topic}: stamp {message.header.stamp.sec} s is negative")
            self._node.get_logger().warning(f"{topic}: a message with a negative stamp is refused",
                                            throttle_duration_sec=LOG_THROTTLE_S)
            return
        source.signalMessage(message)

    @property
    def has_depth(self) -> bool:
        return self._colour is not None

    def on_colour(self, message: Any) -> None:
        """After the colour frame went to the mailbox alone: offer it to the synchronizer."""
        if self._colour is not None and pairable(message):
            self._colour.signalMessage(message)

    def latest_camera_info(self) -> Optional[CameraInfo]:
        return self._latest_info.getLast()

    def destroy(self, node: LifecycleNode) -> None:
        for subscription in self._subscriptions:
            node.destroy_subscription(subscription)
        self._subscriptions.clear()
