"""Per-camera health figures for /diagnostics: rates, drops, latency percentiles."""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

LATENCY_WINDOW = 200


class CameraStats:
    """Counters updated by callbacks and the worker; read once a second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.published = 0
        self.rejected = 0
        self.last_error = ""
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._window_start = time.monotonic()
        self._window_counts = (0, 0)

    def on_received(self) -> None:
        with self._lock:
            self.received += 1

    def on_published(self, latency_s: float) -> None:
        with self._lock:
            self.published += 1
            self._latencies.append(latency_s)

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_error = reason

    def rates(self) -> tuple[float, float]:
        """Input and output rates (Hz) since the previous call."""
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._window_start, 1e-9)
            received, published = self._window_counts
            rates = ((self.received - received) / elapsed, (self.published - published) / elapsed)
            self._window_start, self._window_counts = now, (self.received, self.published)
            return rates

    def latency_percentiles_ms(self) -> tuple[float, float]:
        with self._lock:
            if not self._latencies:
                return float("nan"), float("nan")
            p50, p95 = np.percentile(np.fromiter(self._latencies, float), [50, 95])
            return 1000.0 * p50, 1000.0 * p95


def camera_status(node_name: str, topic: str, stats: CameraStats, dropped: int, context: dict[str, str]) -> DiagnosticStatus:
    input_hz, output_hz = stats.rates()
    p50, p95 = stats.latency_percentiles_ms()
    level, message = DiagnosticStatus.OK, "ok"
    if stats.rejected and stats.last_error:
        level, message = DiagnosticStatus.WARN, f"rejected frames; last: {stats.last_error}"
    elif input_hz > 0 and output_hz == 0:
        level, message = DiagnosticStatus.WARN, "receiving frames but not publishing yet"
    values = {
        "input_rate_hz": f"{input_hz:.2f}",
        "output_rate_hz": f"{output_hz:.2f}",
        "frames_received": str(stats.received),
        "frames_published": str(stats.published),
        "frames_dropped": str(dropped),
        "frames_rejected": str(stats.rejected),
        "latency_p50_ms": f"{p50:.1f}",
        "latency_p95_ms": f"{p95:.1f}",
        **context,
    }
    return DiagnosticStatus(
        level=level,
        name=f"{node_name}: {topic}",
        message=message,
        hardware_id=context.get("device", ""),
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
