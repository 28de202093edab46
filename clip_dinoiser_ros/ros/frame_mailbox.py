"""Latest-frame-only hand-over from subscription callbacks to the inference worker.

Each camera has one slot: a new frame replaces the waiting one (counted as dropped), so the worker
always processes the newest frame and nothing queues up behind a slow model.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Frame:
    camera: str
    message: Any
    received: float  # time.monotonic() at arrival


class FrameMailbox:
    def __init__(self, cameras: list[str]) -> None:
        self._cameras = list(cameras)
        self._slots: dict[str, Optional[Frame]] = {c: None for c in cameras}
        self._last_taken: dict[str, float] = {c: float("-inf") for c in cameras}
        self._dropped: dict[str, int] = {c: 0 for c in cameras}
        self._next = 0
        self._closed = False
        self._condition = threading.Condition()

    def put(self, camera: str, message: Any) -> None:
        frame = Frame(camera, message, time.monotonic())
        with self._condition:
            if self._slots[camera] is not None:
                self._dropped[camera] += 1
            self._slots[camera] = frame
            self._condition.notify()

    def take(self, min_interval: float = 0.0, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame of the next camera in round-robin order that is due; None on timeout/close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while not self._closed:
                now = time.monotonic()
                frame, wait = self._pop_due(now, min_interval)
                if frame is not None:
                    return frame
                if deadline is not None:
                    wait = min(wait, deadline - now) if wait is not None else deadline - now
                    if wait <= 0:
                        return None
                self._condition.wait(wait)
        return None

    def _pop_due(self, now: float, min_interval: float) -> tuple[Optional[Frame], Optional[float]]:
        wait = None
        count = len(self._cameras)
        for offset in range(count):
            camera = self._cameras[(self._next + offset) % count]
            if self._slots[camera] is None:
                continue
            due = self._last_taken[camera] + min_interval
            if due <= now:
                frame, self._slots[camera] = self._slots[camera], None
                self._last_taken[camera] = now
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
