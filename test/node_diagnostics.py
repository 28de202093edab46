"""The node's own figures from /diagnostics, read once it is idle: what a test derives its expectations from
(frames received, published, dropped; latency), instead of assuming how fast this CPU segments."""
from __future__ import annotations

import time
from typing import Callable

from ros_harness import Collector, wait_until

NODE_NAME = "/clip_dinoiser"


def camera_figures(array, cameras: list[str]) -> dict[str, dict[str, float]]:
    """Per camera, every numeric value of its status (nan where the node reports no figure yet)."""
    figures = {}
    for camera in cameras:
        values = next((s.values for s in array.status if s.name == f"{NODE_NAME}: {camera}"), [])
        figures[camera] = {kv.key: float(kv.value) for kv in values if _numeric(kv.value)}
    return figures


def idle_figures(diagnostics: Collector, cameras: list[str], alive: Callable[[], bool],
                 busy: Callable[[], bool] = lambda: False, timeout: float = 60.0) -> dict[str, dict[str, float]]:
    """The figures of two reports in a row whose frame counters agree, both received after this call began
    and after ``busy`` (a frame in progress) was last true: every frame sent has been published or dropped."""
    since = time.time()

    def counters(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {c: {k: v for k, v in f.items() if k.startswith("frames_")} for c, f in figures.items()}

    def idle():
        nonlocal since
        assert alive(), "the node died"
        if busy():
            since = time.time()
            return None
        arrays = [array for array, arrival in list(diagnostics.messages) if arrival >= since]
        if len(arrays) < 2:
            return None
        last, before = camera_figures(arrays[-1], cameras), camera_figures(arrays[-2], cameras)
        settled = counters(last) == counters(before) and all("frames_received" in f for f in last.values())
        return last if settled else None

    return wait_until(idle, timeout, "the node's counters settling", interval=0.2)


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
