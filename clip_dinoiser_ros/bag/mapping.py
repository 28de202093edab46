"""``map``: a recorded RGB-D camera's frames fused into the open-vocabulary voxel map, offline.

The same steps as live: colour frames paired with their registered depth and camera_info by stamp
(rgbd_pairing, the node's message_filters), depth decoded and brought to the colour frame with the node's
depth_scale and intrinsics from P (pipeline.frame_geometry), the pose of the depth's optical frame in
``map_frame`` from a real tf2_ros.Buffer, and the features of the engine's one pass per frame fused by
mapping.VoxelMap. The buffer is filled from every /tf and /tf_static message first (its cache spans the whole
bag), so a frame is posed from the transforms on both sides of its stamp. A frame with no transform, no depth or
camera_info, or a refused one is counted and skipped, never fatal.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..mapping import MapSettings, VoxelMap
from ..model import ClipDinoiser
from ..pipeline.frame_geometry import GeometryError, PairingOptions, frame_geometry
from ..pipeline.messages import stamp_ns
from ..pipeline.transforms import transform_matrix
from .conversion import to_rclpy
from .errors import BagError
from .reading import MAX_PIXELS, messages, open_bag, to_rgb, topic_types
from .rgbd_pairing import BagPairing, CameraInputs, PairedFrame
from .segment import check_inputs

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
CACHE_MARGIN_NS = 10 * 10**9  # the buffer keeps the whole bag and this much more


@dataclass(frozen=True)
class BagMapOptions:
    cameras: tuple[CameraInputs, ...]  # each with its depth topic
    pairing: PairingOptions
    depth_scale: float  # metres per 16UC1 unit, as the node's parameter
    short_side: int
    map_frame: str
    settings: MapSettings  # its feature_dim is the engine's


@dataclass
class BagMapResult:
    voxel_map: VoxelMap
    frames: int = 0  # colour frames read
    integrated: int = 0
    no_transform: int = 0  # no transform from the depth's frame to the map frame at its stamp
    no_depth: int = 0  # no depth image or camera_info paired with the frame
    refused: int = 0  # a depth image or camera_info that cannot be used (a note says why)
    interrupted: bool = False
    transform_errors: dict[str, int] = field(default_factory=dict)  # tf2's reason, how many frames


def transform_buffer(reader: Any) -> Any:
    """A tf2_ros.Buffer holding every transform of the bag's /tf and /tf_static, its cache spanning the bag."""
    try:
        import tf2_ros
        from rclpy.duration import Duration
    except ImportError as error:
        raise BagError(f"map needs tf2_ros (ros-<distro>-tf2-ros): {error}") from error
    buffer = tf2_ros.Buffer(cache_time=Duration(nanoseconds=reader.duration + CACHE_MARGIN_NS))
    present = set(topic_types(reader))
    for item in messages(reader, [topic for topic in (TF_TOPIC, TF_STATIC_TOPIC) if topic in present]):
        for recorded in item.message.transforms:
            transform = to_rclpy(recorded, "geometry_msgs/msg/TransformStamped")
            if item.topic == TF_STATIC_TOPIC:
                buffer.set_transform_static(transform, "bag")
            else:
                buffer.set_transform(transform, "bag")
    return buffer


def check_cameras(reader: Any, cameras: Sequence[CameraInputs]) -> None:
    """Every camera has a registered depth topic and the bag holds its three topics (BagError)."""
    missing = [camera.colour for camera in cameras if not camera.depth]
    if missing:
        raise BagError(f"map needs a registered depth topic (--depth-topic) for each camera; none for "
                       f"{', '.join(missing)}")
    check_inputs(reader, [camera.colour for camera in cameras], cameras)


def map_bag(bag: Path, engine: ClipDinoiser, options: BagMapOptions, stop: threading.Event) -> BagMapResult:
    """Fuse every paired frame of the cameras until done or ``stop`` is set (the engine has a vocabulary: any)."""
    with open_bag(bag) as reader:
        check_cameras(reader, options.cameras)
        buffer = transform_buffer(reader)
        dimension = engine.vocabulary.text_embeddings.shape[1]  # the features' width: the text embeddings'
        result = BagMapResult(VoxelMap(replace(options.settings, feature_dim=dimension)))
        pairing = BagPairing(list(options.cameras), options.pairing)
        colours = {camera.colour for camera in options.cameras}
        total = sum(c.msgcount for c in reader.connections if c.topic in colours)
        with tqdm(total=total, unit="frame", desc="map", dynamic_ncols=True) as progress:
            def fuse(ready: list[PairedFrame]) -> None:
                for frame in ready:
                    _fuse_one(frame, engine, buffer, options, result)
                    progress.update()

            for item in messages(reader, pairing.topics()):
                if stop.is_set():
                    result.interrupted = True
                    break
                if item.topic in colours:
                    result.frames += 1
                    header = to_rclpy(item.message.header, "std_msgs/msg/Header")
                    fuse(pairing.add_colour(item.topic, header, item, item.timestamp))
                else:
                    fuse(pairing.add(item.topic, to_rclpy(item.message, item.msgtype), item.timestamp))
            if not result.interrupted:
                fuse(pairing.flush())
        return result


def _fuse_one(frame: PairedFrame, engine: ClipDinoiser, buffer: Any, options: BagMapOptions,
              result: BagMapResult) -> None:
    import tf2_ros
    from rclpy.time import Time

    if frame.depth is None or frame.camera_info is None:
        result.no_depth += 1
        return
    where = f"{frame.item.topic} at {stamp_ns(frame) / 1e9:.9f} s"
    try:
        transform = buffer.lookup_transform(options.map_frame, frame.depth.header.frame_id,
                                            Time.from_msg(frame.depth.header.stamp))
        pose = transform_matrix(transform.transform)
    except (tf2_ros.TransformException, ValueError) as error:
        result.no_transform += 1
        reason = type(error).__name__
        if reason not in result.transform_errors:
            tqdm.write(f"note: {where}: no pose of {frame.depth.header.frame_id!r} in {options.map_frame!r}: "
                       f"{error} (such frames are counted and skipped)")
        result.transform_errors[reason] = result.transform_errors.get(reason, 0) + 1
        return
    rgb = to_rgb(frame.item)
    try:
        geometry = frame_geometry(frame.camera_info, frame.depth, rgb.shape[0], rgb.shape[1], MAX_PIXELS,
                                  options.depth_scale)
    except GeometryError as error:
        result.refused += 1
        tqdm.write(f"note: {where}: {error}; the frame is not mapped")
        return
    features = engine.segment(rgb, short_side=options.short_side, probs=False, features=True).features
    result.voxel_map.integrate(geometry.depth, geometry.camera, pose, features.features, features.objectness, rgb,
                               features.grid, stamp_ns(frame) / 1e9)
    result.integrated += 1
