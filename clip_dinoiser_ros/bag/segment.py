"""``segment``: the engine over every frame of a bag's cameras, written as the live node's topics.

The output bag holds each segmented camera's input images and, next to them, the node's outputs with
the same message types, encodings and topic names (``<camera namespace>/segmentation/...``). Outputs
carry the input's header and are logged at the input's receive time, so a player shows them in step.
Every other topic (camera_info, tf, ground truth, ...) is copied as its ROS 2 type, so the output can
replace the input; a topic whose type has no ROS 2 Python class here is dropped with a note.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..model import ClipDinoiser
from ..ros import outputs, topics
from .conversion import message_class, to_rclpy
from .reading import check_topics, is_rosbag2, messages, open_bag, to_rgb, topic_types
from .writing import BagWriter


@dataclass(frozen=True)
class SegmentOptions:
    mode: str
    short_side: int
    background: bool | None
    threshold: float
    confidence_encoding: str
    overlay: bool
    storage: str
    overwrite: bool


@dataclass(frozen=True)
class SegmentResult:
    frames: int
    total: int
    interrupted: bool


def _frame_count(reader, cameras: Sequence[str]) -> int:
    return sum(c.msgcount for c in reader.connections if c.topic in cameras)


def copied_topics(reader, cameras: Sequence[str]) -> list[str]:
    """The other topics that can be written as ROS 2 messages; the rest are named on stderr."""
    kept = []
    for topic, msgtype in sorted(topic_types(reader).items()):
        if topic in cameras:
            continue
        try:
            message_class(msgtype)
            kept.append(topic)
        except ValueError as error:
            tqdm.write(f"note: {topic} is not copied: {error}")
    return kept


def segment_bag(bag: Path, cameras: Sequence[str], out: Path, engine: ClipDinoiser, options: SegmentOptions,
                stop: threading.Event) -> SegmentResult:
    """Segment every frame until done or ``stop`` is set; the bag written so far is valid either way."""
    with open_bag(bag) as reader:
        check_topics(reader, cameras)
        total = _frame_count(reader, cameras)
        wanted = outputs.Wanted(confidence=True, class_confidences=True, overlay=options.overlay, class_maps=False)
        names = engine.vocabulary.names
        labelled: set[str] = set()
        copied = copied_topics(reader, cameras)
        copy_raw = is_rosbag2(reader)
        frames = 0
        with BagWriter(out, options.storage, options.overwrite) as writer, \
                tqdm(total=total, unit="frame", desc="segment", dynamic_ncols=True) as progress:
            for item in messages(reader, [*cameras, *copied]):
                if stop.is_set():
                    break
                if copy_raw:
                    writer.write_serialized(item.topic, item.msgtype, item.raw, item.timestamp)
                else:
                    writer.write(item.topic, to_rclpy(item.message, item.msgtype), item.timestamp)
                if item.topic not in cameras:
                    continue
                rgb = to_rgb(item)
                header = to_rclpy(item.message.header, "std_msgs/msg/Header")
                if item.topic not in labelled:
                    info = outputs.label_info(names, options.threshold, header)
                    writer.write(topics.output_topic(item.topic, "label_info"), info, item.timestamp)
                    labelled.add(item.topic)
                segmentation = engine.segment(rgb, mode=options.mode, short_side=options.short_side,
                                              background=options.background, probs=False)
                produced = outputs.camera_messages(
                    segmentation, rgb, header, version=1, threshold=options.threshold,
                    confidence_encoding=options.confidence_encoding, wanted=wanted,
                )
                for name, output in produced.items():
                    writer.write(topics.output_topic(item.topic, name), output, item.timestamp)
                frames += 1
                progress.update()
        return SegmentResult(frames, total, frames < total)
