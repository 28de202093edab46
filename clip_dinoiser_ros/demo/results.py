"""What came back from the node, frame by frame, and how the demo reports it (per frame, then a summary).

The subscription callbacks run on the executor's thread and only record; the main thread prints, so a
report never interleaves with the streaming loop's own messages.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from clip_dinoiser_ros.visualization import RANDOM_NOTICE, RANDOM_STAMP

TOP_CLASSES = 3


@dataclass
class Frame:
    """One frame sent, and its outputs as they arrive (matched by the stamp it was sent with)."""

    index: int
    photo: str
    rgb: np.ndarray
    stamp_ns: int
    mask: Any = None
    overlay: Any = None
    confidences: Any = None
    latency_ms: Optional[float] = None
    reported: bool = False


@dataclass
class Results:
    """Frames by stamp, filled by the subscription callbacks (executor thread)."""

    frames: dict[int, Frame] = field(default_factory=dict)
    label_info: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: deque = field(default_factory=deque)  # answered frames to report, in arrival order

    def _frame(self, message: Any) -> Optional[Frame]:
        stamp = message.header.stamp
        return self.frames.get(stamp.sec * 1_000_000_000 + stamp.nanosec)

    def on_mask(self, message: Any) -> None:
        received_ns = time.time_ns()
        with self.lock:
            frame = self._frame(message)
            if frame is not None and frame.mask is None:
                frame.mask = message
                frame.latency_ms = (received_ns - frame.stamp_ns) / 1e6
                self._maybe_report(frame)

    def on_confidences(self, message: Any) -> None:
        with self.lock:
            frame = self._frame(message)
            if frame is not None:
                frame.confidences = message
                self._maybe_report(frame)

    def on_overlay(self, message: Any) -> None:
        with self.lock:
            frame = self._frame(message)
            if frame is not None:
                frame.overlay = message

    def on_label_info(self, message: Any) -> None:
        with self.lock:
            self.label_info = message

    def class_names(self) -> list[str]:
        """The class map of the answers (the node sends its LabelInfo before the first mask made with it)."""
        with self.lock:
            return [] if self.label_info is None else [c.class_name for c in self.label_info.class_map]

    def _maybe_report(self, frame: Frame) -> None:
        if frame.mask is not None and frame.confidences is not None and not frame.reported:
            frame.reported = True
            self.events.append(frame)

    def answered(self) -> list[Frame]:
        with self.lock:
            return sorted((f for f in self.frames.values() if f.mask is not None), key=lambda f: f.index)


def top_classes(confidences: Any, count: int = TOP_CLASSES) -> str:
    """The classes covering most of the image, e.g. ``cat 61%, background 30%``."""
    ranked = sorted(zip(confidences.labels, confidences.coverage), key=lambda item: -item[1])
    return ", ".join(f"{name} {coverage:.0%}" for name, coverage in ranked[:count] if coverage >= 0.005) or "(nothing labelled)"


def report(frame: Frame, random_weights: bool) -> None:
    suffix = "  [random weights]" if random_weights else ""
    print(f"frame {frame.index:3d} ({frame.photo}): latency {frame.latency_ms:7.0f} ms, "
          f"top classes: {top_classes(frame.confidences)}{suffix}", flush=True)


def drain_reports(results: Results, random_weights: bool) -> None:
    """Print the frames answered since the last call, in the order their answers came."""
    while results.events:
        report(results.events.popleft(), random_weights)


def summarise(args: argparse.Namespace, results: Results, answered: list[Frame], written: list[Path]) -> None:
    sent = len(results.frames)
    latencies = [f.latency_ms for f in answered if f.latency_ms is not None]
    dropped = sorted(f.index for f in results.frames.values() if f.mask is None)
    print("\n===== clip-dinoiser-demo summary =====")
    if args.random_weights:
        print(f"!!! {RANDOM_NOTICE} !!!")
    print(f"model: {args.clip_model} ({'random weights' if args.random_weights else args.clip_pretrained}), "
          f"prompts: {list(args.prompts)}")
    print(f"frames sent: {sent} at {args.rate:g} Hz, answered: {len(answered)}, dropped: {len(dropped)}"
          + (f" (frames {dropped})" if dropped else ""))
    if latencies:
        print(f"end-to-end latency: median {statistics.median(latencies):.0f} ms, "
              f"min {min(latencies):.0f} ms, max {max(latencies):.0f} ms")
    else:
        print("end-to-end latency: no frame was answered")
    if written:
        print(f"files: {len(written)} PNGs in {args.out.resolve()}/ (<n>_input.png, <n>_mask.png, <n>_overlay.png"
              f"{'; overlays stamped ' + repr(RANDOM_STAMP) if args.random_weights else ''}), "
              f"node log and params there too")
    else:
        print(f"files: node log and params in {args.out.resolve()}/")
    print("======================================", flush=True)
