"""Alternating timed runs: A, B, A, B, ... so that load from other processes hits every side alike."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def alternating_medians(sides: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """The median wall time of each side over ``repeats`` interleaved runs, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for run in sides.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
