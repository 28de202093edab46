"""Recorded colour frames paired with their depth and camera_info, as the node pairs them live.

The same message_filters synchronizer as the node (``sync: exact``, ``queue_size`` messages per input)
over the bag's messages in order. A colour frame waits until its pair is complete, or, as the node's
``sync_wait_s``, until a message logged more than ``wait_s`` after it comes (or ``queue_size`` newer frames of
its camera: its depth is not in the bag); then it goes alone. Frames leave in their arrival order, so the
output bag's masks keep the input's order whatever the recorder's interleaving of the three topics. Colour
frames sharing a stamp (a driver fault) all wait and all leave: the pair message_filters makes for that
stamp goes to each of them still waiting, and ``duplicates`` counts them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

import message_filters
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..pipeline.frame_geometry import PairingOptions, pairable
from ..pipeline.messages import stamp_ns
from .reading import BagMessage


@dataclass(frozen=True)
class CameraInputs:
    """A camera's topics in the bag: its colour images, registered depth ("" = none) and camera_info."""

    colour: str
    depth: str
    camera_info: str


@dataclass
class PairedFrame:
    """A colour frame (its bag entry; message_filters reads the header) and what was paired with it."""

    item: BagMessage
    header: Header
    logged_ns: int  # when the colour frame was recorded: its wait counts from there
    depth: Optional[Image] = None
    camera_info: Optional[CameraInfo] = None


@dataclass
class _Camera:
    inputs: CameraInputs
    colour: message_filters.SimpleFilter = field(default_factory=message_filters.SimpleFilter)
    depth: message_filters.SimpleFilter = field(default_factory=message_filters.SimpleFilter)
    info: message_filters.SimpleFilter = field(default_factory=message_filters.SimpleFilter)
    pending: "OrderedDict[int, PairedFrame]" = field(default_factory=OrderedDict)  # by arrival number
    stamps: set[int] = field(default_factory=set)  # every colour stamp seen, for counting duplicates
    latest_info: Optional[CameraInfo] = None


class BagPairing:
    def __init__(self, cameras: list[CameraInputs], options: PairingOptions) -> None:
        self._options = options
        self._cameras = {camera.colour: _Camera(camera) for camera in cameras}
        self._by_topic: dict[str, tuple[_Camera, str]] = {}
        self._arrivals = 0
        self.duplicates = 0  # colour frames whose stamp an earlier frame of their camera had
        for camera in self._cameras.values():
            self._by_topic[camera.inputs.colour] = (camera, "colour")
            self._by_topic[camera.inputs.camera_info] = (camera, "info")
            if camera.inputs.depth:
                self._by_topic[camera.inputs.depth] = (camera, "depth")
                inputs = [camera.colour, camera.depth, camera.info]
                synchronizer = options.synchronizer(inputs)
                synchronizer.registerCallback(lambda colour, depth, info, c=camera: self._paired(c, colour, depth, info))

    def topics(self) -> list[str]:
        return list(self._by_topic)

    def add(self, topic: str, message: Any, logged_ns: int) -> list[PairedFrame]:
        """Take one depth image or camera_info (ROS 2 classes) recorded at ``logged_ns``; the frames now ready."""
        camera, role = self._by_topic[topic]
        ready = self._ready(camera, flush=False, now_ns=logged_ns)  # who waited long enough leaves first, alone
        paired = pairable(message)  # a negative stamp: no pair (message_filters cannot take it)
        if role == "info":
            camera.latest_info = message
            if paired:
                camera.info.signalMessage(message)
        elif paired:
            camera.depth.signalMessage(message)
        return ready + self._ready(camera, flush=False, now_ns=logged_ns)

    def add_colour(self, topic: str, header: Header, item: BagMessage, logged_ns: int) -> list[PairedFrame]:
        """Take one colour frame recorded at ``logged_ns``, by its header (it is decoded only when it is
        segmented); the frames now ready."""
        camera, _ = self._by_topic[topic]
        frame = PairedFrame(item, header, logged_ns, camera_info=camera.latest_info)
        stamp = stamp_ns(frame)
        self.duplicates += stamp in camera.stamps
        camera.stamps.add(stamp)
        if not camera.inputs.depth or not pairable(frame):
            return [*self._ready(camera, flush=True, now_ns=logged_ns), frame]
        self._arrivals += 1
        camera.pending[self._arrivals] = frame
        camera.colour.signalMessage(frame)
        return self._ready(camera, flush=False, now_ns=logged_ns)

    def flush(self) -> list[PairedFrame]:
        """At the bag's end: every frame still waiting, alone."""
        return [frame for camera in self._cameras.values() for frame in self._ready(camera, flush=True, now_ns=0)]

    def _paired(self, camera: _Camera, colour: PairedFrame, depth: Image, info: CameraInfo) -> None:
        stamp = stamp_ns(colour)  # the frames of that stamp still waiting (none once they have left alone)
        for frame in camera.pending.values():
            if frame.depth is None and stamp_ns(frame) == stamp:
                frame.depth, frame.camera_info = depth, info

    def _ready(self, camera: _Camera, flush: bool, now_ns: int) -> list[PairedFrame]:
        ready = []
        wait_ns = round(self._options.wait_s * 1e9)
        while camera.pending:
            arrival, frame = next(iter(camera.pending.items()))
            waited = now_ns - frame.logged_ns > wait_ns
            if not (flush or frame.depth is not None or waited or len(camera.pending) > self._options.queue_size):
                break
            ready.append(camera.pending.pop(arrival))
        return ready
