"""``play``: a bag published live at its recorded pace, optionally with /clock for ``use_sim_time`` nodes.

Messages are sent at ``start + (t - t0) / rate`` on the monotonic clock, so the pace does not drift
however long the bag. ROS 1 bags are converted to their ROS 2 types on the way.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from .conversion import message_class, to_rclpy
from .errors import BagError
from .reading import messages, open_bag, topic_types

ACK_TIMEOUT_S = 2.0
CLOCK_PERIOD_S = 0.01  # /clock at 100 Hz between messages, as rosbag2's --clock default does
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # matches reliable and best-effort readers


@dataclass(frozen=True)
class PlayOptions:
    rate: float
    loop: bool
    topics: Sequence[str]
    remaps: dict[str, str]
    clock: bool
    delay: float  # at most this long, seconds, for every topic to have a subscriber before the first message


def parse_remaps(remaps: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for remap in remaps:
        source, separator, target = remap.partition(":=")
        if not separator or not source or not target:
            raise BagError(f"--remap {remap!r}: write FROM:=TO")
        pairs[source] = target
    return pairs


class Player:
    def __init__(self, node: Node, bag: Path, options: PlayOptions) -> None:
        if options.rate <= 0:
            raise BagError(f"--rate {options.rate}: must be more than 0")
        self._bag, self._options, self._node = bag, options, node
        with open_bag(bag) as reader:
            types = topic_types(reader)
        missing = [topic for topic in options.topics if topic not in types]
        if missing:
            raise BagError(f"topics not in the bag: {', '.join(missing)}; it holds {', '.join(sorted(types))}")
        self._topics = list(options.topics) or sorted(types)
        self._publishers = {}
        for topic in self._topics:
            try:
                cls = message_class(types[topic])
            except ValueError as error:
                raise BagError(f"cannot play {topic}: {error}") from error
            self._publishers[topic] = node.create_publisher(cls, options.remaps.get(topic, topic), QOS)
        self._clock = node.create_publisher(Clock, "/clock", QOS) if options.clock else None
        self.published = 0

    def run(self, stop: threading.Event) -> None:
        self._wait_for_subscribers(stop)
        while not stop.is_set():
            self._play_once(stop)
            if not self._options.loop:
                break
        for publisher in self._publishers.values():  # the last messages reach reliable readers before exit
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))

    def _wait_for_subscribers(self, stop: threading.Event) -> None:
        """Up to ``delay`` seconds for every topic to be matched: frames sent before that are lost."""
        deadline = time.monotonic() + self._options.delay
        while time.monotonic() < deadline and not stop.is_set():
            if all(publisher.get_subscription_count() > 0 for publisher in self._publishers.values()):
                return
            stop.wait(0.05)

    def _play_once(self, stop: threading.Event) -> None:
        with open_bag(self._bag) as reader:
            started, first = time.monotonic(), None
            for item in messages(reader, self._topics):
                first = item.timestamp if first is None else first
                due = started + (item.timestamp - first) / 1e9 / self._options.rate
                if not self._wait_until(due, stop, first, started):
                    return
                self._publish_clock(item.timestamp)
                self._publishers[item.topic].publish(to_rclpy(item.message, item.msgtype))
                self.published += 1

    def _wait_until(self, due: float, stop: threading.Event, first: int, started: float) -> bool:
        """Sleep until ``due``, ticking /clock meanwhile; False when asked to stop."""
        while (left := due - time.monotonic()) > 0:
            if stop.wait(min(left, CLOCK_PERIOD_S) if self._clock else left):
                return False
            elapsed = (time.monotonic() - started) * self._options.rate
            self._publish_clock(first + int(elapsed * 1e9))
        return not stop.is_set()

    def _publish_clock(self, nanoseconds: int) -> None:
        if self._clock is not None:
            message = Clock()
            message.clock.sec, message.clock.nanosec = divmod(nanoseconds, 1_000_000_000)
            self._clock.publish(message)


def play(bag: Path, options: PlayOptions, stop: threading.Event) -> int:
    """Play until the end (or forever with loop) or until ``stop``; the number of messages published."""
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = Node("clip_dinoiser_bag_play")
        player = Player(node, bag, options)
        player.run(stop)
        return player.published
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
