"""One camera's paired messages (features, registered depth, camera_info, optional colour) and its TF pose,
turned into what VoxelMap.integrate takes, with one error that says which input is unusable (no rclpy).

Depth and the camera model come through frame_geometry, exactly as the segmentation node reads them: the
camera model from P (image_geometry's rule), scaled with the depth to the image the features describe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..spatial import Intrinsics
from ..spatial.patch_grid import FrameFeatures
from . import topics
from .feature_messages import frame_features
from .frame_geometry import GeometryError, frame_geometry
from .image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from .messages import stamp_ns

GREY = 128  # the colour of voxels of a camera without a colour topic


class MapFrameError(ValueError):
    """A paired frame cannot be mapped; the message names the input and why."""


@dataclass(frozen=True)
class MapFrame:
    features: FrameFeatures
    camera: Intrinsics  # at the features' image size
    depth_m: np.ndarray  # (H, W) metres at that size, NaN = none
    colour: np.ndarray  # (H, W, 3) uint8
    depth_frame_id: str
    stamp: float  # seconds, the depth's stamp


@dataclass(frozen=True)
class MapCamera:
    """One camera's resolved input topics; ``image`` is '' without a colour topic."""

    features: str
    depth: str
    camera_info: str
    image: str = ""


def plan_map_cameras(features: Sequence[str], depth: Sequence[str], camera_info: Sequence[str],
                     images: Sequence[str]) -> list[MapCamera]:
    """Cameras from the parameter lists; ValueError when the lists do not describe the same cameras."""
    count = len(features)

    def entries(name: str, values: Sequence[str], may_default: bool) -> list[str]:
        if may_default and list(values) == [""]:
            return [""] * count
        if len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries, feature_topics {count}: one per camera")
        return list(values)

    infos = [info or features_camera_info(topic)
             for topic, info in zip(features, entries("camera_info_topics", camera_info, True))]
    return [MapCamera(*row) for row in zip(features, entries("depth_topics", depth, False), infos,
                                           entries("image_topics", images, True))]


FEATURES_SUFFIX = f"/{topics.OUTPUT_NAMESPACE}/features"


def features_camera_info(features_topic: str) -> str:
    """``/front/segmentation/features`` -> ``/front/camera_info`` (the segmented camera's camera_info, which
    registered depth shares); ValueError for a topic not named so."""
    if not features_topic.endswith(FEATURES_SUFFIX):
        raise ValueError(f"{features_topic!r} does not end in {FEATURES_SUFFIX}: give its camera_info_topics entry")
    return f"{features_topic[:-len(FEATURES_SUFFIX)]}/camera_info"


def _colour(image: Any, height: int, width: int, max_pixels: int) -> np.ndarray:
    if image is None:
        return np.full((height, width, 3), GREY, np.uint8)
    try:
        rgb = (compressed_to_rgb if isinstance(image, CompressedImage) else image_to_rgb)(image, max_pixels)
    except ImageDecodeError as error:
        raise MapFrameError(f"colour image refused: {error}") from error
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return rgb


def map_frame(features: Any, depth: Image, info: CameraInfo, image: Optional[Any], max_pixels: int,
              depth_scale: float) -> MapFrame:
    """Decode one paired frame; raises MapFrameError."""
    try:
        decoded = frame_features(features)
    except ValueError as error:
        raise MapFrameError(f"features refused: {error}") from error
    height, width = decoded.grid.image_size
    try:
        geometry = frame_geometry(info, depth, height, width, max_pixels, depth_scale)
    except GeometryError as error:
        raise MapFrameError(str(error)) from error
    return MapFrame(decoded, geometry.camera, geometry.depth, _colour(image, height, width, max_pixels),
                    depth.header.frame_id, stamp_ns(depth) * 1e-9)
