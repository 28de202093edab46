"""Health figures for /diagnostics: per-camera rates, drops and latency, and the vocabulary's state.

Levels describe the last ``WINDOW_S`` seconds, not the time since start: a WARN clears by itself once
its cause has stopped. A bad input (rejected) and a frame the model failed on (failed) are counted
apart; when every frame has failed for ``WINDOW_S`` the camera is in ERROR. A camera that sent nothing
for longer than ``WINDOW_S`` is WARN too, saying since when: silence is not health. Times are monotonic,
so levels behave the same under ``use_sim_time``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime
from dataclasses import dataclass
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

LATENCY_WINDOW = 200  # frames behind the latency percentiles
WINDOW_S = 5.0  # seconds a problem keeps its WARN after it was last seen
LOG_THROTTLE_S = 2.0  # a bad input is logged at most this often per place


@dataclass(frozen=True)
class CameraReport:
    """One camera's figures at one diagnostics tick."""

    input_hz: float
    output_hz: float
    received: int
    published: int
    rejected: int
    failed: int
    recently_received: int
    recently_published: int
    recently_rejected: int
    recently_failed: int
    failing_for_s: float  # since the first failure after the last published frame; 0 when not failing
    silent_for_s: float  # since the last frame received, or since the stats began when none came
    silence: str  # since when, in words
    last_error: str
    latency_p50_ms: float
    latency_p95_ms: float
    features_published: int = 0  # segmentation/features messages: made only while somebody subscribes


class CameraStats:
    """Counters updated by callbacks and the worker; ``report`` is called once per diagnostics tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received = self._published = self._rejected = self._failed = 0
        self._features_published = 0
        self._failing_since: Optional[float] = None
        self._started = time.monotonic()
        self._last_received: Optional[float] = None
        self._last_error = ""
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._history: deque[tuple[float, int, int, int, int]] = deque([(time.monotonic(), 0, 0, 0, 0)])

    def on_received(self) -> None:
        with self._lock:
            self._received += 1
            self._last_received = time.monotonic()

    def on_published(self, latency_s: float) -> None:
        with self._lock:
            self._published += 1
            self._failing_since = None
            self._latencies.append(latency_s)

    def on_features_published(self) -> None:
        with self._lock:
            self._features_published += 1

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self._rejected += 1
            self._last_error = reason

    def on_model_failed(self, reason: str) -> None:
        with self._lock:
            self._failed += 1
            self._last_error = reason
            if self._failing_since is None:
                self._failing_since = time.monotonic()

    def report(self) -> CameraReport:
        """Rates since the previous report, counts over the window, latency over the last frames."""
        with self._lock:
            now = time.monotonic()
            counts = (self._received, self._published, self._rejected, self._failed)
            features = self._features_published
            failing_for = 0.0 if self._failing_since is None else now - self._failing_since
            last_received = self._last_received
            previous_time, *previous = self._history[-1]
            while len(self._history) > 1 and now - self._history[1][0] >= WINDOW_S:
                self._history.popleft()
            _, *window_start = self._history[0]
            self._history.append((now, *counts))
            elapsed = max(now - previous_time, 1e-9)
            latencies = np.fromiter(self._latencies, float)
        p50, p95 = np.percentile(latencies, [50, 95]) * 1000.0 if latencies.size else (float("nan"),) * 2
        recent = [now_count - start for now_count, start in zip(counts, window_start)]
        return CameraReport(
            input_hz=(counts[0] - previous[0]) / elapsed,
            output_hz=(counts[1] - previous[1]) / elapsed,
            received=counts[0], published=counts[1], rejected=counts[2], failed=counts[3],
            recently_received=recent[0], recently_published=recent[1], recently_rejected=recent[2],
            recently_failed=recent[3], failing_for_s=failing_for,
            silent_for_s=now - (self._started if last_received is None else last_received),
            silence=since(last_received, self._started), last_error=self._last_error,
            latency_p50_ms=float(p50), latency_p95_ms=float(p95), features_published=features,
        )


def since(last: Optional[float], started: float) -> str:
    """How long ago (monotonic) ``last`` was, with its wall-clock time; from ``started`` when it never was."""
    now = time.monotonic()
    if last is None:
        return f"since the activation {now - started:.0f} s ago"
    wall = datetime.fromtimestamp(time.time() - (now - last)).strftime("%H:%M:%S")
    return f"for {now - last:.0f} s (since {wall})"


def camera_status(name: str, report: CameraReport, dropped: int, stale: int,
                  context: dict[str, str]) -> DiagnosticStatus:
    level, message = DiagnosticStatus.OK, "ok"
    if report.failing_for_s >= WINDOW_S:
        level = DiagnosticStatus.ERROR
        message = f"every frame failed in the model for {report.failing_for_s:.0f} s; last: {report.last_error}"
    elif report.silent_for_s >= WINDOW_S:
        level, message = DiagnosticStatus.WARN, f"no frame {report.silence}"
    elif report.recently_failed:
        level = DiagnosticStatus.WARN
        message = f"{report.recently_failed} frames failed in the model in the last {WINDOW_S:g} s; last: {report.last_error}"
    elif report.recently_rejected:
        level = DiagnosticStatus.WARN
        message = f"{report.recently_rejected} frames rejected in the last {WINDOW_S:g} s; last: {report.last_error}"
    elif report.recently_received and not report.recently_published:
        level, message = DiagnosticStatus.WARN, f"frames received but none published in the last {WINDOW_S:g} s"
    values = {
        "input_rate_hz": f"{report.input_hz:.2f}",
        "output_rate_hz": f"{report.output_hz:.2f}",
        "frames_received": str(report.received),
        "frames_published": str(report.published),
        "frames_dropped": str(dropped),
        "frames_rejected": str(report.rejected),
        "frames_failed": str(report.failed),
        "frames_stale": str(stale),
        "features_published": str(report.features_published),
        "seconds_since_last_frame": f"{report.silent_for_s:.1f}",
        "latency_p50_ms": f"{report.latency_p50_ms:.1f}",
        "latency_p95_ms": f"{report.latency_p95_ms:.1f}",
        **context,
    }
    return diagnostic_status(level, name, message, context.get("device", ""), values)


class VocabularyHealth:
    """The last vocabulary failure, WARN for ``WINDOW_S`` after it happened."""

    def __init__(self) -> None:
        self._failure: Optional[tuple[float, str]] = None

    def on_failed(self, reason: str) -> None:
        self._failure = (time.monotonic(), reason)

    def status(self, name: str, context: dict[str, str]) -> DiagnosticStatus:
        failure = self._failure
        if failure is not None and time.monotonic() - failure[0] < WINDOW_S:
            level, message = DiagnosticStatus.WARN, f"prompts refused by the model, kept the previous: {failure[1]}"
        else:
            level, message = DiagnosticStatus.OK, "ok"
        values = {**context, "last_failure": failure[1] if failure else ""}
        return diagnostic_status(level, name, message, context.get("device", ""), values)


def diagnostic_status(level: bytes, name: str, message: str, hardware_id: str, values: dict[str, str]) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
