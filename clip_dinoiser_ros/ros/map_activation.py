"""What the mapping node does while active: each camera's paired frames, posed by TF at the depth's stamp,
integrated into the map; the latched outputs published at publish_rate_hz when something changed.

Everything runs on the node's executor thread, so the map needs no lock: a frame is integrated in its
subscription callback (the time is in /diagnostics), a query reads the map between two frames. A frame whose
transform is not in the TF buffer yet is skipped and counted (tf_failures): the lookup never waits.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from nav_msgs.msg import OccupancyGrid
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..pipeline.frame_geometry import PairingOptions
from ..pipeline.map_inputs import MapFrameError, map_frame, plan_map_cameras
from ..pipeline.transforms import transform_matrix
from .activation import LABEL_INFO_QOS, input_reliability
from .diagnostics import LOG_THROTTLE_S
from .map_cameras import MapCameraInputs

if TYPE_CHECKING:
    from .mapping_node import MappingNode

LATCHED = LABEL_INFO_QOS  # reliable, transient local, depth 1: a late subscriber gets the current map at once
POINTS_TOPIC = "semantic_map/points"
GRID_TOPIC = "semantic_map/grid"


@dataclass
class MapStats:
    """Counters for /diagnostics (executor thread only)."""

    received: int = 0  # features messages
    paired: int = 0
    integrated: int = 0
    tf_failures: int = 0
    refused: int = 0
    last_integration_ms: float = 0.0
    total_integration_ms: float = 0.0
    last_error: str = ""
    last_tf_error: str = ""

    @property
    def mean_integration_ms(self) -> float:
        return self.total_integration_ms / self.integrated if self.integrated else 0.0


@dataclass
class Published:
    """What the last published cloud and grid showed (map version, texts): they go out again only when it changed."""

    cloud: Optional[tuple[Any, ...]] = None
    grid: Optional[tuple[Any, ...]] = None


class MapActivation:
    def __init__(self, node: MappingNode, on_tick: Callable[[], None]) -> None:
        import tf2_ros

        self._node = node
        self._tf2 = tf2_ros
        self.stats = MapStats()
        self.published = Published()
        self._inputs: list[MapCameraInputs] = []
        self._timer = None
        self.buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self.buffer, node)
        self.points = node.create_publisher(PointCloud2, POINTS_TOPIC, LATCHED)
        self.grid = node.create_publisher(OccupancyGrid, GRID_TOPIC, LATCHED)
        try:
            cameras = plan_map_cameras(node.param("feature_topics"), node.param("depth_topics"),
                                       node.param("camera_info_topics"), node.param("image_topics"))
            qos = QoSProfile(depth=node.param("sync_queue_size"),
                             reliability=input_reliability(node.param("input_reliability")))
            pairing = PairingOptions(0.0, node.param("sync_queue_size"), node.param("sync"), node.param("sync_slop_s"))
            for camera in cameras:
                self._inputs.append(MapCameraInputs(node, camera, qos, pairing, self._on_frame, self._on_received,
                                                    self._on_refused))
            self._timer = node.create_timer(1.0 / node.param("publish_rate_hz"), on_tick)
        except Exception:
            self.stop()
            raise

    @property
    def cameras(self) -> list[str]:
        return [inputs.camera.features for inputs in self._inputs]

    def stop(self) -> None:
        node = self._node
        for inputs in self._inputs:
            inputs.destroy(node)
        self._inputs.clear()
        if self._timer is not None:
            node.destroy_timer(self._timer)
            self._timer = None
        self._listener.unregister()
        node.destroy_publisher(self.points)
        node.destroy_publisher(self.grid)

    def _on_received(self) -> None:
        self.stats.received += 1

    def _on_refused(self, reason: str) -> None:
        self.stats.refused += 1
        self.stats.last_error = reason

    def _on_frame(self, features: Any, depth: Image, info: CameraInfo, colour: Optional[Any]) -> None:
        stats, node = self.stats, self._node
        stats.paired += 1
        logger = node.get_logger()
        try:
            frame = map_frame(features, depth, info, colour, node.param("max_image_pixels"), node.param("depth_scale"))
        except MapFrameError as error:
            self._on_refused(f"{features.header.frame_id or 'a frame'}: {error}")
            logger.warning(f"frame refused: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        map_frame_id = node.param("map_frame")
        try:
            transform = self.buffer.lookup_transform(map_frame_id, frame.depth_frame_id,
                                                     Time.from_msg(depth.header.stamp))
        except self._tf2.TransformException as error:
            stats.tf_failures += 1
            stats.last_tf_error = str(error)
            logger.warning(f"frame skipped, no transform {frame.depth_frame_id!r} -> {map_frame_id!r} at its "
                           f"stamp: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        started = time.perf_counter()
        try:
            node.integrate(frame, transform_matrix(transform.transform))
        except ValueError as error:  # an unusable transform, or features of another length than the map's
            self._on_refused(str(error))
            logger.warning(f"frame refused by the map: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        stats.integrated += 1
        stats.last_integration_ms = elapsed_ms
        stats.total_integration_ms += elapsed_ms
