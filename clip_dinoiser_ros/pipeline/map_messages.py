"""The semantic map as standard messages (no rclpy): its voxels as a labelled PointCloud2 (the same layout
as segmentation/points), a ground projection as a nav_msgs/OccupancyGrid for Nav2's costmap filters, and a
query's clusters as vision_msgs Detection3D."""
from __future__ import annotations

import array
from typing import Optional, Sequence

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3D, Detection3DArray

from ..mapping.clusters import VoxelCluster
from ..mapping.projection import GroundProjection
from .spatial_messages import _hypothesis, _place, point_cloud

UNKNOWN_CELL = -1  # nav_msgs/OccupancyGrid: no information; Nav2's keepout filter leaves such cells alone


def map_cloud(centres: np.ndarray, colours: np.ndarray, labels: Optional[np.ndarray], confidence: np.ndarray,
              header: Header) -> PointCloud2:
    """One point per voxel (``centres`` (N, 3), ``colours`` (N, 3) 0..255, ``labels`` (N,) prompt indices or
    None before the prompts are encoded: then every label is 65535, unlabelled), as a 1 x N cloud."""
    count = centres.shape[0]
    if count == 0:  # cv2 takes no empty image: a one-point cloud's layout, emptied
        cloud = map_cloud(np.zeros((1, 3)), np.zeros((1, 3)), None, np.zeros(1), header)
        cloud.width, cloud.row_step, cloud.data = 0, 0, b""
        return cloud
    xyz = np.ascontiguousarray(centres.T.reshape(3, 1, count), dtype=np.float32)
    rgb = np.clip(np.rint(colours), 0, 255).astype(np.uint8).reshape(1, count, 3)
    unlabelled = -1
    label_row = np.full((1, count), unlabelled, np.int64) if labels is None else labels.reshape(1, count)
    return point_cloud(xyz, rgb, label_row, confidence.reshape(1, count), unlabelled, header)


def occupancy_grid(projection: GroundProjection, header: Header) -> OccupancyGrid:
    """Cells 0..100 (round(100 * value), values 0..1), -1 where no voxel is; origin at the projection's
    corner and the map's lowest floor, not rotated."""
    grid = OccupancyGrid(header=header)
    height, width = projection.values.shape
    grid.info.map_load_time = header.stamp
    grid.info.resolution = float(projection.resolution)
    grid.info.width, grid.info.height = width, height
    grid.info.origin.position.x, grid.info.origin.position.y = projection.origin
    grid.info.origin.position.z = projection.z
    grid.info.origin.orientation.w = 1.0
    cells = np.full(projection.values.shape, UNKNOWN_CELL, np.int8)
    known = ~np.isnan(projection.values)
    cells[known] = np.clip(np.rint(100.0 * projection.values[known]), 0, 100).astype(np.int8)
    grid.data = array.array("b", cells.tobytes())
    return grid


def cluster_detection(cluster: VoxelCluster, text: str, index: int, header: Header) -> Detection3D:
    """A cluster as a Detection3D: its box, and the text with the cluster's mean probability."""
    detection = Detection3D()
    detection.header, detection.id = header, f"{text}/{index}"
    result = _hypothesis(text, cluster.score)
    _place(result.pose.pose, cluster.centre)
    detection.results.append(result)
    _place(detection.bbox.center, cluster.centre)
    detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = cluster.size
    return detection


def no_detection(text: str, header: Header) -> Detection3D:
    """The ``best`` of a text that wins nowhere: no box, the text with score 0."""
    detection = Detection3D()
    detection.header = header
    detection.results.append(_hypothesis(text, 0.0))
    return detection


def cluster_detections(found: Sequence[VoxelCluster], text: str, header: Header) -> Detection3DArray:
    """Every cluster of one text, in the order given (best first)."""
    return Detection3DArray(header=header,
                            detections=[cluster_detection(c, text, i, header) for i, c in enumerate(found)])
