"""A depth camera's pairing health for /diagnostics: pairs made, pairs that came too late, frames segmented
with and without depth, refused depth/camera_info, and how long no frame has been segmented with its depth.

WARN while a problem is recent (``WINDOW_S``), and while no frame has been segmented with its depth for longer
than that, also when no colour frame comes at all: silence is not health. A pair that message_filters makes
after its colour frame went out alone (depth later than ``sync_wait_s``, as a slow aligner sends it) is no
health either: it is counted as late and the warning says to raise ``sync_wait_s``. Times are monotonic.
"""
from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus

from .diagnostics import WINDOW_S, diagnostic_status, since


class DepthHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pairs = self.late = self.paired = self.unpaired = self.refused = 0
        self.last_error = ""
        self._started = time.monotonic()
        self._last: dict[str, float] = {}

    def _seen(self, what: str) -> None:
        self._last[what] = time.monotonic()

    def _recent(self, what: str) -> bool:
        return time.monotonic() - self._last.get(what, float("-inf")) < WINDOW_S

    def _quiet(self, what: str) -> bool:
        """Nothing of ``what`` for longer than the window, counting from the activation when never."""
        return time.monotonic() - self._last.get(what, self._started) >= WINDOW_S

    def on_camera_info(self) -> None:
        with self._lock:
            self._seen("camera_info")

    def on_pair(self) -> None:
        """message_filters paired a colour frame with its depth and camera_info."""
        with self._lock:
            self.pairs += 1
            self._seen("pair")

    def on_late_pair(self) -> None:
        """A pair came after its colour frame had been segmented alone."""
        with self._lock:
            self.late += 1
            self._seen("late")

    def on_frame(self, paired: bool) -> None:
        """A colour frame is segmented, with its depth or alone."""
        with self._lock:
            self._seen("frame")
            if paired:
                self.paired += 1
                self._seen("with_depth")
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
            # frames kept coming for a whole window after the last camera_info (not: the camera stopped)
            info_behind = self._last.get("frame", float("-inf")) - self._last.get("camera_info", self._started)
            if self._recent("frame") and info_behind >= WINDOW_S:
                level = DiagnosticStatus.WARN
                message = f"no camera_info on {info_topic} in the last {WINDOW_S:g} s: masks only, no points"
            elif self._recent("refused"):
                level, message = DiagnosticStatus.WARN, f"depth or camera_info refused: {self.last_error}"
            elif self._quiet("with_depth") and self._recent("late"):
                level = DiagnosticStatus.WARN
                message = (f"depth on {depth_topic} pairs only after its colour frame went out alone ({self.late} "
                           "late pairs): it comes later than sync_wait_s; raise sync_wait_s")
            elif self._quiet("with_depth"):
                level = DiagnosticStatus.WARN
                message = (f"no frame segmented with depth from {depth_topic} "
                           f"{since(self._last.get('with_depth'), self._started)} (stamps differ, or nothing "
                           "arrives): masks only, no points")
            values = {"depth_topic": depth_topic, "camera_info_topic": info_topic, "pairs_made": str(self.pairs),
                      "pairs_late": str(self.late),
                      "frames_paired": str(self.paired), "frames_unpaired": str(self.unpaired),
                      "depth_refused": str(self.refused), "last_error": self.last_error}
        return diagnostic_status(level, name, message, context.get("device", ""), values)
