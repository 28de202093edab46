"""``record``: live topics into a rosbag2 file until Ctrl-C or ``--duration``; the bag is valid either way.

Topics may appear after the recorder starts: each is subscribed (serialised, no decoding) once its
type is known. Reliability and durability follow the publishers, as rosbag2 does, so latched topics
such as label_info are recorded too.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from .conversion import message_class
from .errors import BagError
from .writing import BagWriter

DISCOVERY_PERIOD_S = 0.2


class Recorder:
    def __init__(self, node: Node, topics: Sequence[str], writer: BagWriter) -> None:
        self._node, self._writer = node, writer
        self._wanted = [node.resolve_topic_name(topic) for topic in topics]
        self._subscriptions: dict[str, object] = {}
        self._lock = threading.Lock()
        self.counts = {topic: 0 for topic in self._wanted}
        node.create_timer(DISCOVERY_PERIOD_S, self.subscribe_new)

    def subscribe_new(self) -> None:
        known = dict(self._node.get_topic_names_and_types())
        for topic in self._wanted:
            if topic in self._subscriptions or topic not in known:
                continue
            msgtype = known[topic][0]
            try:
                cls = message_class(msgtype)
            except ValueError as error:
                raise BagError(f"cannot record {topic}: {error}") from error
            qos = self._qos(topic)
            self._subscriptions[topic] = self._node.create_subscription(
                cls, topic, lambda data, t=topic, m=msgtype: self._on_message(t, m, data), qos, raw=True
            )
            print(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()}, "
                  f"{qos.durability.name.lower()})", file=sys.stderr, flush=True)

    def _qos(self, topic: str) -> QoSProfile:
        offered = self._node.get_publishers_info_by_topic(topic)
        reliable = bool(offered) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in offered)
        latched = bool(offered) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
        return QoSProfile(
            depth=100,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def _on_message(self, topic: str, msgtype: str, data: bytes) -> None:
        with self._lock:
            self._writer.write_serialized(topic, msgtype, data, self._node.get_clock().now().nanoseconds)
            self.counts[topic] += 1


def record(topics: Sequence[str], out: Path, storage: str, overwrite: bool, duration: Optional[float],
           stop: threading.Event) -> dict[str, int]:
    """Record until ``stop`` or ``duration`` seconds; messages recorded per topic."""
    if not topics:
        raise BagError("--topics: name at least one topic")
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = Node("clip_dinoiser_bag_record")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with BagWriter(out, storage, overwrite) as writer:
            recorder = Recorder(node, topics, writer)
            recorder.subscribe_new()
            deadline = None if duration is None else time.monotonic() + duration
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
            node.destroy_node()  # no callback writes while the bag closes
            node = None
            return recorder.counts
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
