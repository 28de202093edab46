"""One RGB-D frame's 3D outputs as standard messages: the mask's camera_info, an organized labelled
PointCloud2, and vision_msgs detections in 2D and 3D (no rclpy here, as in messages.py)."""
from __future__ import annotations

import array
import sys
from typing import Sequence

import cv2
import numpy as np
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3D, Detection3DArray, ObjectHypothesisWithPose

from ..spatial import Box3D, Intrinsics, Region

UNLABELLED_POINT = 65535  # the cloud's label field is uint16 whatever the mask's encoding

# x y z rgb as depth_image_proc's point_cloud_xyzrgb lays them (rgb: float32 holding 0x00RRGGBB), then ours.
CLOUD_FIELDS = (("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
                ("rgb", 12, PointField.FLOAT32), ("confidence", 16, PointField.FLOAT32),
                ("label", 20, PointField.UINT16))
POINT_STEP = 24  # 22 bytes of fields, padded to 4-byte alignment


def intrinsics(info: CameraInfo) -> Intrinsics:
    """The pinhole model of the images a camera_info describes, from P (K when P is all zero), with its binning
    and roi applied as image_geometry does (raises CameraModelError for zeros and the like)."""
    roi = info.roi
    return Intrinsics.from_camera_info(tuple(info.k), tuple(info.p), info.width, info.height,
                                       (info.binning_x, info.binning_y),
                                       (roi.x_offset, roi.y_offset, roi.width, roi.height))


def mask_camera_info(info: CameraInfo, camera: Intrinsics, header: Header) -> CameraInfo:
    """``info`` for the mask (``camera``: the model at the mask's size): its header and size, K and P in the
    mask's pixels (binning and roi folded in, so none is left to apply: binning 0, an all-zero roi), the same
    distortion and R."""
    return CameraInfo(header=header, width=camera.width, height=camera.height,
                      distortion_model=info.distortion_model, d=info.d, k=camera.reframe(info.k), r=info.r,
                      p=camera.reframe(info.p))


def point_cloud(xyz: np.ndarray, rgb: np.ndarray, labels: np.ndarray, confidence: np.ndarray, unlabelled: int,
                header: Header) -> PointCloud2:
    """An organized cloud, one point per mask pixel (NaN x/y/z without depth), label 65535 = unlabelled;
    ``xyz``: back_project's planes."""
    height, width = labels.shape
    colour = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)  # bytes b g r a: 0xAARRGGBB as a little-endian uint32
    colour[:, :, 3] = 0
    packed = colour.view(np.uint32)[:, :, 0]
    label = labels.astype(np.uint32)
    label[labels == unlabelled] = UNLABELLED_POINT
    if sys.byteorder == "big":
        packed, label = packed.byteswap(), label << 16  # the uint16 at offset 20 is the word's high half
    # The message's own buffer, filled in place by one interleaving pass: (H, W, 6) 4-byte words, one point each.
    data = array.array("B", [0]) * (height * width * POINT_STEP)
    cv2.merge([xyz[0], xyz[1], xyz[2], packed.view(np.float32), np.ascontiguousarray(confidence, np.float32),
               label.view(np.float32)], dst=np.frombuffer(data, np.float32).reshape(height, width, 6))
    cloud = PointCloud2(
        check_fields=True, header=header, height=height, width=width,
        fields=[PointField(name=name, offset=offset, datatype=kind, count=1) for name, offset, kind in CLOUD_FIELDS],
        is_bigendian=sys.byteorder == "big", point_step=POINT_STEP, row_step=POINT_STEP * width, is_dense=False,
    )
    cloud.data = data
    return cloud


# Detections are built by setting the leaves of default-constructed messages: a generated message builds
# every field's default even when the field is passed in, so passing sub-messages builds them twice.

def _hypothesis(name: str, score: float) -> ObjectHypothesisWithPose:
    result = ObjectHypothesisWithPose()
    result.hypothesis.class_id, result.hypothesis.score = name, score
    return result


def detections_2d(found: Sequence[Region], names: Sequence[str], header: Header) -> Detection2DArray:
    """One Detection2D per region; the box in pixel coordinates (pixel u covers u-0.5..u+0.5)."""
    array = Detection2DArray(header=header)
    for index, region in enumerate(found):
        detection = Detection2D()
        detection.header, detection.id = header, f"{names[region.class_id]}/{index}"
        detection.results.append(_hypothesis(names[region.class_id], region.score))
        detection.bbox.center.position.x = region.x + (region.width - 1) / 2.0
        detection.bbox.center.position.y = region.y + (region.height - 1) / 2.0
        detection.bbox.size_x, detection.bbox.size_y = float(region.width), float(region.height)
        array.detections.append(detection)
    return array


def _place(pose: Pose, center: tuple[float, float, float]) -> None:
    pose.position.x, pose.position.y, pose.position.z = center
    pose.orientation.w = 1.0


def detections_3d(boxes: Sequence[Box3D], names: Sequence[str], header: Header) -> Detection3DArray:
    """One Detection3D per region with depth, in the cloud's frame: center and size from its points."""
    array = Detection3DArray(header=header)
    for index, box in enumerate(boxes):
        name = names[box.region.class_id]
        detection = Detection3D()
        detection.header, detection.id = header, f"{name}/{index}"
        result = _hypothesis(name, box.region.score)
        _place(result.pose.pose, box.center)
        detection.results.append(result)
        _place(detection.bbox.center, box.center)
        detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = box.size
        array.detections.append(detection)
    return array
