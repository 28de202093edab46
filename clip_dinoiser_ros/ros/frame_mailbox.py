"""Latest-frame-only hand-over from subscription callbacks to the inference worker.

Each camera has one slot: a new frame replaces the waiting one (counted as dropped), so the worker
always processes the newest frame and nothing queues up behind a slow model. The rate limit counts on
a clock the owner chooses (ROS time for the node, so a bag played with ``--clock`` is limited in its own
time); waiting and time-outs are always monotonic.

A camera with depth puts each colour frame twice: at once alone, held back for a moment (``hold_s``),
and again, complete, when its depth and camera_info have been paired with it. Both carry the frame's
stamp as ``key``: the complete one takes the alone one's place without counting a drop, the alone one
never replaces its complete twin, and a complete frame whose stamp was taken already (alone) is refused.
An alone frame is always a new frame, even with a stamp seen before (a camera whose clock is stuck).

The hold counts from the first alone frame still waiting: a newer alone frame takes its place but not a
fresh hold, so at any camera rate an unpaired frame leaves at most ``hold_s`` after the first of them came
(a fresh hold per frame never came due above 1 / ``hold_s`` Hz). A paired frame is used whenever there is
one: a newer alone frame does not displace it (that one is counted as dropped, and not any more if it
comes back paired).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Frame:
    camera: str
    message: Any
    received: float  # time.monotonic() at arrival
    key: Optional[int] = None  # the frame's stamp in ns, for cameras whose frames come twice
    complete: bool = True
    ready: float = 0.0  # time.monotonic() from which it may be taken


# A stamp this far behind the last one taken starts a new sequence (a bag played again, a camera restarted)
# instead of being refused as a latecomer.
RESTART_NS = 1_000_000_000
POLL_S = 0.05  # how often a wait for the rate limit looks at a clock that may not be monotonic
SET_ASIDE = 64  # alone frames remembered per camera as set aside behind a paired one (their pair may follow)


class FrameMailbox:
    def __init__(self, cameras: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cameras = list(cameras)
        self._slots: dict[str, Optional[Frame]] = {c: None for c in cameras}
        self._last_taken: dict[str, float] = {c: float("-inf") for c in cameras}
        self._dropped: dict[str, int] = {c: 0 for c in cameras}
        self._last_key: dict[str, float] = {c: float("-inf") for c in cameras}
        self._set_aside: dict[str, deque[int]] = {c: deque(maxlen=SET_ASIDE) for c in cameras}
        self._next = 0
        self._closed = False
        self._condition = threading.Condition()

    def put(self, camera: str, message: Any, key: Optional[int] = None, complete: bool = True,
            hold_s: float = 0.0) -> bool:
        """Offer a frame; False when refused: a complete frame whose stamp was taken already, or an alone frame
        while a complete one waits."""
        now = time.monotonic()
        frame = Frame(camera, message, now, key, complete, now + hold_s)
        with self._condition:
            waiting = self._slots[camera]
            twin_waits = waiting is not None and key is not None and waiting.key == key
            taken = key is not None and self._last_key[camera] - RESTART_NS < key <= self._last_key[camera]
            if complete and taken and not twin_waits:
                return False
            if not complete and waiting is not None and waiting.complete:
                if not twin_waits and key is not None:
                    self._dropped[camera] += 1
                    self._set_aside[camera].append(key)
                return False
            if complete and key in self._set_aside[camera]:
                self._set_aside[camera].remove(key)
                self._dropped[camera] -= 1  # back, paired: it was not lost
            if twin_waits:
                frame = Frame(camera, message, waiting.received, key, complete, min(frame.ready, waiting.ready))
            elif waiting is not None:
                self._dropped[camera] += 1
                if not complete and not waiting.complete:  # the hold counts from the first unpaired frame
                    frame = Frame(camera, message, now, key, complete, min(frame.ready, waiting.ready))
            self._slots[camera] = frame
            self._condition.notify()
            return True

    def take_one(self, min_interval: float = 0.0, timeout: Optional[float] = None) -> list[Frame]:
        """[the newest frame of the next camera in round-robin order that is due]; [] on timeout/close."""
        return self._wait_for_due(min_interval, timeout, every=False)

    def take_all(self, min_interval: float = 0.0, timeout: Optional[float] = None) -> list[Frame]:
        """Every camera's newest frame that is due, at least one (for a batched pass); [] on timeout/close."""
        return self._wait_for_due(min_interval, timeout, every=True)

    def _wait_for_due(self, min_interval: float, timeout: Optional[float], every: bool) -> list[Frame]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not self._closed:
                frame, wait = self._pop_due(self._clock(), min_interval)
                if frame is not None:
                    frames = [frame]
                    while every and (frame := self._pop_due(self._clock(), min_interval)[0]) is not None:
                        frames.append(frame)
                    return frames
                if wait is not None:
                    wait = min(wait, POLL_S)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    wait = left if wait is None else min(wait, left)
                self._condition.wait(wait)
        return []

    def _pop_due(self, now: float, min_interval: float) -> tuple[Optional[Frame], Optional[float]]:
        wait = None
        count = len(self._cameras)
        for offset in range(count):
            camera = self._cameras[(self._next + offset) % count]
            if self._slots[camera] is None:
                continue
            if self._last_taken[camera] > now:  # the clock went back: a bag played again from its start
                self._last_taken[camera] = float("-inf")
            due = max(self._last_taken[camera] + min_interval, now + self._slots[camera].ready - time.monotonic())
            if due <= now:
                frame, self._slots[camera] = self._slots[camera], None
                self._last_taken[camera] = now
                if frame.key is not None:
                    self._last_key[camera] = frame.key
                self._next = (self._cameras.index(camera) + 1) % count
                return frame, None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    @property
    def closed(self) -> bool:
        return self._closed

    def dropped(self, camera: str) -> int:
        with self._condition:
            return self._dropped[camera]

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
