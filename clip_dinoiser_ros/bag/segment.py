"""``segment``: the engine over every frame of a bag's cameras, written as the live node's topics.

The output bag holds each segmented camera's input images and, next to them, the node's outputs with
the same message types, encodings and topic names (``<camera namespace>/segmentation/...``), made by
the node's own FramePipeline: a camera's LabelInfo is written before its first mask, stamped like
that frame, exactly as the node publishes it. Outputs carry the input's header and are logged at the
input's receive time, so a player shows them in step. A camera with ``depth_topics`` gets its colour frames
paired with depth and camera_info by stamp (rgbd_pairing, message_filters as in the node, with the node's
sync_wait_s, sync_queue_size and depth_scale) and the node's 3D outputs too: points, camera_info, detections_3d. Every topic the run does not make (the
images, depth, camera_info, tf, ground truth, any custom type, ...) is copied from a rosbag2 input byte for byte
under its recorded connection (type, definition, type hash, QoS), needing no class for its type, so the output
can replace the input; a ROS 1 input's topics are converted to their ROS 2 types (a type without one is
dropped with a note).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from ..model import ClipDinoiser
from ..pipeline import topics
from ..pipeline.frame_geometry import FrameGeometry, GeometryError, PairingOptions, geometry_or_none
from ..pipeline.frame_pipeline import CameraFrame, FrameFailure, FramePipeline, FrameSettings, VersionedVocabulary
from ..pipeline.messages import Wanted
from .conversion import message_class, to_rclpy
from .errors import BagError
from .reading import BagMessage, check_topics, decode, is_rosbag2, open_bag, records, to_rgb, topic_types
from .rgbd_pairing import BagPairing, CameraInputs, PairedFrame
from .writing import BagWriter


VERSION = 1  # the bag's one vocabulary, numbered as the node numbers its first


@dataclass(frozen=True)
class SegmentOptions:
    frame: FrameSettings
    overlay: bool
    storage: str
    overwrite: bool
    pairing: PairingOptions
    depth_scale: float  # metres per 16UC1 unit
    cameras: tuple[CameraInputs, ...] = ()  # depth and camera_info of each camera (``camera_inputs``)


@dataclass(frozen=True)
class SegmentResult:
    frames: int  # colour frames segmented: every one of the bag's unless interrupted
    total: int  # the bag's colour frames, as its index counts them
    interrupted: bool  # a stop was requested before the bag's end, and nothing else
    duplicates: int = 0  # frames whose stamp an earlier frame of their camera had (segmented all the same)


def _frame_count(reader, cameras: Sequence[str]) -> int:
    return sum(c.msgcount for c in reader.connections if c.topic in cameras)


def made_topics(cameras: Sequence[str]) -> set[str]:
    """The topics this run writes: an input's own copies of them (a bag segmented before) are replaced."""
    return {topics.output_topic(camera, name) for camera in cameras for name in topics.OUTPUTS + topics.DEPTH_OUTPUTS}


def copied_topics(reader, writer: BagWriter, cameras: Sequence[str]) -> list[str]:
    """Every topic the run does not make, in the input's order. A rosbag2 input's connections are copied as
    recorded (``BagWriter.add_copy``); a ROS 1 input's topics need a ROS 2 class. What cannot be kept is
    named on stderr (a ROS 1 type without a ROS 2 class; an old rosbag2 bag without the definition of a type
    unknown here)."""
    made, kept = made_topics(cameras) - set(cameras), []
    for topic, msgtype in topic_types(reader).items():
        if topic in made:
            tqdm.write(f"note: {topic} of the input is replaced by this run's")
            continue
        try:
            if is_rosbag2(reader):
                for connection in (c for c in reader.connections if c.topic == topic):
                    writer.add_copy(connection)
            elif topic not in cameras:
                message_class(msgtype)
            kept.append(topic)
        except (ValueError, BagError) as error:
            tqdm.write(f"note: {topic} is not copied: {error}")
    return kept


def camera_inputs(cameras: Sequence[str], depth_topics: Sequence[str],
                  camera_info_topics: Sequence[str]) -> tuple[CameraInputs, ...]:
    """Each camera's depth ("" = none) and camera_info (default: its sibling), paired with ``--topic`` in order."""
    plans = topics.plan_cameras(cameras, lambda name: name, depth_topics or [""], camera_info_topics or [""])
    return tuple(CameraInputs(plan.input, plan.depth, plan.camera_info) for plan in plans)


def check_inputs(reader, cameras: Sequence[str], inputs: Sequence[CameraInputs]) -> None:
    """The cameras' images, and the depth and camera_info of those with depth, are in the bag (BagError)."""
    check_topics(reader, cameras)
    check_topics(reader, [camera.depth for camera in inputs if camera.depth], ("sensor_msgs/msg/Image",))
    check_topics(reader, [camera.camera_info for camera in inputs if camera.depth], ("sensor_msgs/msg/CameraInfo",))


def _geometry(frame: PairedFrame, rgb_shape: tuple[int, ...], depth_scale: float) -> FrameGeometry | None:
    def refused(error: GeometryError) -> None:
        tqdm.write(f"note: {frame.item.topic} at {frame.item.timestamp} ns: {error}; the mask is written without it")

    return geometry_or_none(frame.camera_info, frame.depth, rgb_shape[0], rgb_shape[1], 1 << 30, refused,
                            depth_scale)


def segment_bag(bag: Path, cameras: Sequence[str], out: Path, engine: ClipDinoiser, options: SegmentOptions,
                stop: threading.Event, progress: Optional[tqdm] = None) -> SegmentResult:
    """Segment every frame until done or ``stop`` is set; the bag written so far is valid either way.

    ``progress``: a bar over several bags to advance, instead of one of this bag's own.
    """
    with open_bag(bag) as reader:
        check_inputs(reader, cameras, options.cameras)
        total = _frame_count(reader, cameras)
        wanted = Wanted(confidence=True, class_confidences=True, overlay=options.overlay, class_maps=False,
                        points=True, detections=True, detections_3d=True)
        pipeline = FramePipeline(engine)
        active = VersionedVocabulary(VERSION, engine.vocabulary)
        pairing = BagPairing(list(options.cameras or camera_inputs(cameras, (), ())), options.pairing)
        paired = set(pairing.topics()) - set(cameras)
        copy_raw = is_rosbag2(reader)
        frames = 0
        bar = tqdm(total=total, unit="frame", desc="segment", dynamic_ncols=True) if progress is None \
            else nullcontext(progress)
        with BagWriter(out, options.storage, options.overwrite) as writer, bar as progress:

            def segment(ready: list[PairedFrame]) -> None:
                nonlocal frames
                for frame in ready:
                    _segment_one(frame, pipeline, active, options, wanted, writer)
                    frames += 1
                    progress.update()

            interrupted = False
            for connection, timestamp, raw in records(reader, copied_topics(reader, writer, cameras)):
                if stop.is_set():
                    interrupted = True
                    break
                used = connection.topic in cameras or connection.topic in paired
                item = decode(reader, connection, timestamp, raw) if used or not copy_raw else None
                if copy_raw:
                    writer.copy(connection, timestamp, raw)
                else:
                    writer.write(item.topic, to_rclpy(item.message, item.msgtype), item.timestamp)
                if connection.topic in cameras:
                    header = to_rclpy(item.message.header, "std_msgs/msg/Header")
                    segment(pairing.add_colour(item.topic, header, item, item.timestamp))
                elif connection.topic in paired:
                    segment(pairing.add(item.topic, to_rclpy(item.message, item.msgtype), item.timestamp))
            if not interrupted:
                segment(pairing.flush())
                if frames != total:  # raised inside the writer: the output is removed
                    raise BagError(f"{bag}: {frames} of the {total} frames its index counts on {', '.join(cameras)} "
                                   "could be read: the bag is damaged")
        if pairing.duplicates:
            tqdm.write(f"note: {bag}: {pairing.duplicates} frame(s) share their stamp with an earlier frame of their "
                       "camera; each was segmented (the output has a mask per input image)")
        return SegmentResult(frames, total, interrupted, pairing.duplicates)


def _segment_one(frame: PairedFrame, pipeline: FramePipeline, active: VersionedVocabulary, options: SegmentOptions,
                 wanted: Wanted, writer: BagWriter) -> None:
    item: BagMessage = frame.item
    rgb = to_rgb(item)
    camera_frame = CameraFrame(item.topic, frame.header, rgb, wanted, _geometry(frame, rgb.shape, options.depth_scale))
    for result in pipeline.run([camera_frame], active, options.frame):
        if isinstance(result, FrameFailure):
            raise BagError(f"{item.topic}, frame at {item.timestamp} ns: the model failed: "
                           f"{type(result.error).__name__}: {result.error}") from result.error
        for name, output in result.messages:
            writer.write(topics.output_topic(item.topic, name), output, item.timestamp)
