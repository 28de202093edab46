"""A segmented frame's camera_info, labelled cloud and detections, each made only when wanted."""
from __future__ import annotations

import copy
import threading
from typing import Any, Callable, Optional, Sequence

import numpy as np
from std_msgs.msg import Header

from ..spatial import back_project, boxes_3d, regions
from . import spatial_messages
from .frame_geometry import FrameGeometry
from .messages import Wanted


def depth_header(header: Header, geometry: FrameGeometry) -> Header:
    """The colour frame's stamp in the depth's optical frame (the colour frame when the depth names none)."""
    placed = copy.copy(header)
    placed.frame_id = geometry.depth_frame_id or header.frame_id
    return placed


def spatial_outputs(geometry: Optional[FrameGeometry], rgb: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
                    names: Sequence[str], unlabelled: int, header: Header, wanted: Wanted, *,
                    max_depth_m: float, min_object_pixels: int) -> dict[str, Any]:
    """By output name: camera_info whenever the frame has one; points and detections_3d with depth."""
    produced: dict[str, Any] = {}
    if geometry is not None:
        produced["camera_info"] = spatial_messages.mask_camera_info(geometry.camera_info, geometry.camera, header)
    with_depth = geometry is not None and geometry.depth is not None
    xyz = None
    if with_depth and (wanted.points or wanted.detections_3d):
        xyz = back_project(geometry.depth, geometry.camera, max_depth_m)
    cloud = None
    if xyz is not None and wanted.points:
        # Memory-bound (a 7 MB buffer per 640x480 frame) while the regions below are compute-bound, and both
        # run in numpy/cv2 without the GIL: side by side they use the second core (measured: bench_spatial).
        cloud = _Beside(spatial_messages.point_cloud, xyz, rgb, labels, confidence, unlabelled,
                        depth_header(header, geometry))
    if wanted.detections or (xyz is not None and wanted.detections_3d):
        found = regions(labels, confidence, len(names), min_object_pixels)
        if wanted.detections:
            produced["detections"] = spatial_messages.detections_2d(found, names, header)
        if xyz is not None and wanted.detections_3d:
            produced["detections_3d"] = spatial_messages.detections_3d(boxes_3d(found, xyz), names,
                                                                       depth_header(header, geometry))
    if cloud is not None:
        produced["points"] = cloud.result()
    return {name: produced[name] for name in ORDER if name in produced}


ORDER = ("camera_info", "points", "detections", "detections_3d")  # the order they are published in


class _Beside:
    """``function(*arguments)`` on a thread of its own, started now; ``result`` joins it (and re-raises)."""

    def __init__(self, function: Callable[..., Any], *arguments: Any) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(function, arguments), name="cloud", daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., Any], arguments: tuple[Any, ...]) -> None:
        try:
            self._outcome.append((True, function(*arguments)))
        except BaseException as error:  # noqa: BLE001 - handed to the caller by result()
            self._outcome.append((False, error))

    def result(self) -> Any:
        self._thread.join()
        succeeded, value = self._outcome[0]
        if not succeeded:
            raise value
        return value
