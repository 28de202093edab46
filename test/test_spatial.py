"""3D outputs from one RGB-D frame, without a ROS graph: the real Redwood frames of ../shared/data/rgbd
against an independent back-projection, the detections of a mask with known regions, and the refusals."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs_py import point_cloud2
from std_msgs.msg import Header

from clip_dinoiser_ros.pipeline.frame_geometry import GeometryError, frame_geometry
from clip_dinoiser_ros.ros.frame_mailbox import FrameMailbox
from clip_dinoiser_ros.pipeline.messages import Wanted
from clip_dinoiser_ros.pipeline.spatial_outputs import spatial_outputs
from node_frames import camera_info_message, depth_message, rgb_message

RGBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"
FX = FY = 525.0
CX, CY = 319.5, 239.5  # ../shared/data/rgbd/camera_primesense.json
ALL_3D = Wanted(False, False, False, False, points=True, detections=True, detections_3d=True)
NAMES = ("left", "middle", "right", "bottom")


@pytest.fixture(scope="module")
def frame():
    if not RGBD.is_dir():
        pytest.skip(f"{RGBD} is missing (the real RGB-D frames)")
    rgb = cv2.cvtColor(cv2.imread(str(RGBD / "color" / "00000.jpg")), cv2.COLOR_BGR2RGB)
    depth = cv2.imread(str(RGBD / "depth" / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (480, 640) and (depth == 0).any()
    return rgb, depth


def a_mask(height=480, width=640):
    """Four classes in vertical bands and a bottom strip, some pixels unlabelled (255), a known confidence."""
    labels = np.repeat((np.arange(width) * 3 // width).astype(np.uint8)[None, :], height, axis=0)
    labels[height * 3 // 4:, :] = 3
    labels[:10, :10] = 255
    confidence = np.linspace(0.2, 1.0, height * width, dtype=np.float32).reshape(height, width)
    return labels, confidence


def outputs(rgb, depth, labels, confidence, info_size=None, max_depth_m=10.0):
    header = rgb_message(rgb, "colour").header
    width, height = info_size or (rgb.shape[1], rgb.shape[0])
    sx, sy = width / rgb.shape[1], height / rgb.shape[0]
    info = camera_info_message(header, width, height, fx=FX * sx, cx=CX * sx, cy=CY * sy, fy=FY * sy)
    geometry = frame_geometry(info, depth_message(depth, header, "depth_optical"), *rgb.shape[:2], 1 << 24)
    produced = spatial_outputs(geometry, rgb, labels, confidence, NAMES, 255, header, ALL_3D,
                               max_depth_m=max_depth_m, min_object_pixels=50)
    return header, produced


def expected_points(metres):
    """The independent back-projection: ((u - cx) z / fx, (v - cy) z / fy, z) at every pixel (u, v)."""
    v, u = np.mgrid[0:metres.shape[0], 0:metres.shape[1]].astype(np.float64)
    return np.stack([(u - CX) * metres / FX, (v - CY) * metres / FY, metres], axis=-1)


def cloud_fields(cloud):
    points = point_cloud2.read_points(cloud, skip_nans=False)
    return {name: points[name].reshape(cloud.height, cloud.width) for name in points.dtype.names}


def test_the_cloud_is_the_back_projection_of_every_pixel(frame):
    rgb, depth = frame
    labels, confidence = a_mask()
    header, produced = outputs(rgb, depth, labels, confidence)
    cloud = produced["points"]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (480, 640, 24, False)
    assert cloud.header.stamp == header.stamp and cloud.header.frame_id == "depth_optical"
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("confidence", 16, 7), ("label", 20, 4)]
    fields = cloud_fields(cloud)
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=-1)
    valid = depth > 0
    assert (np.isfinite(xyz).all(axis=-1) == valid).all() and np.isnan(xyz[~valid]).all()
    np.testing.assert_allclose(xyz[valid], expected_points(depth / 1000.0)[valid], rtol=1e-6, atol=1e-6)
    assert (fields["label"] == np.where(labels == 255, 65535, labels.astype(np.uint16))).all()
    assert (fields["confidence"] == confidence).all()
    packed = fields["rgb"].view(np.uint32)
    unpacked = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1)
    assert (unpacked == rgb).all()


def test_max_depth_and_32fc1_depth_in_metres(frame):
    rgb, depth = frame
    labels, confidence = a_mask()
    metres = (depth / 1000.0).astype(np.float32)
    metres[depth == 0] = np.nan
    metres[:5, :] = np.inf
    _, produced = outputs(rgb, metres, labels, confidence, max_depth_m=2.0)
    z = cloud_fields(produced["points"])["z"]
    kept = (depth > 0) & (depth <= 2000)
    kept[:5, :] = False
    assert (np.isfinite(z) == kept).all()
    np.testing.assert_allclose(z[kept], metres[kept], rtol=1e-6)


def test_depth_at_half_resolution_is_brought_to_the_mask_nearest(frame):
    rgb, depth = frame
    labels, confidence = a_mask()
    half = depth[::2, ::2].copy()
    _, produced = outputs(rgb, half, labels, confidence)
    fields = cloud_fields(produced["points"])
    upsampled = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1) / 1000.0
    valid = upsampled > 0
    assert (np.isfinite(fields["z"]) == valid).all()
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=-1)
    np.testing.assert_allclose(xyz[valid], expected_points(upsampled)[valid], rtol=1e-6, atol=1e-6)


def test_the_mask_camera_info_has_the_mask_stamp_and_size(frame):
    rgb, depth = frame
    labels, confidence = a_mask()
    header, produced = outputs(rgb, depth, labels, confidence, info_size=(1280, 960))
    info = produced["camera_info"]
    assert info.header == header and (info.width, info.height) == (640, 480)
    assert list(info.k) == pytest.approx([FX, 0, CX, 0, FY, CY, 0, 0, 1])
    assert info.p[0] == pytest.approx(FX) and info.p[6] == pytest.approx(CY)


def test_the_boxes_of_a_mask_with_known_regions():
    labels = np.full((120, 160), 255, np.uint8)
    labels[10:30, 20:60] = 0  # 20 x 40
    labels[50:100, 100:110] = 1  # 50 x 10
    labels[50:60, 10:20] = 0  # a second region of class 0
    labels[0:3, 150:153] = 1  # 9 pixels: below min_object_pixels
    confidence = np.full((120, 160), 0.5, np.float32)
    confidence[10:30, 20:60] = 0.75
    header = Header(frame_id="colour")
    produced = spatial_outputs(None, np.zeros((120, 160, 3), np.uint8), labels, confidence, ("road", "car"), 255,
                               header, ALL_3D, max_depth_m=10.0, min_object_pixels=50)
    assert set(produced) == {"detections"}  # no camera_info, no depth: nothing else
    boxes = sorted((d.results[0].hypothesis.class_id, d.bbox.center.position.x, d.bbox.center.position.y,
                    d.bbox.size_x, d.bbox.size_y, round(d.results[0].hypothesis.score, 6))
                   for d in produced["detections"].detections)
    assert boxes == [("car", 104.5, 74.5, 10.0, 50.0, 0.5), ("road", 14.5, 54.5, 10.0, 10.0, 0.5),
                     ("road", 39.5, 19.5, 40.0, 20.0, 0.75)]
    assert all(d.header == header for d in produced["detections"].detections)


def test_the_3d_boxes_hold_their_regions_points(frame):
    rgb, depth = frame
    labels, confidence = a_mask()
    _, produced = outputs(rgb, depth, labels, confidence)
    fields = cloud_fields(produced["points"])
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=-1)
    detections = produced["detections_3d"].detections
    assert len(detections) == 4 and all(d.header.frame_id == "depth_optical" for d in detections)
    for detection in detections:
        class_id = NAMES.index(detection.results[0].hypothesis.class_id)
        points = xyz[(labels == class_id) & (depth > 0)]
        center = np.array([detection.bbox.center.position.x, detection.bbox.center.position.y,
                           detection.bbox.center.position.z])
        size = np.array([detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z])
        inside = (np.abs(points - center) <= size / 2 + 1e-3).all(axis=1)
        assert inside.mean() >= 0.85, f"{detection.id}: {inside.mean():.2f} of its points in the box"
        assert (center >= points.min(axis=0)).all() and (center <= points.max(axis=0)).all()
        assert (size <= points.max(axis=0) - points.min(axis=0) + 1e-6).all()  # never wider than min..max


def _wrong_encoding(depth, info):
    depth.encoding = "rgb8"


def _zero_intrinsics(depth, info):
    info.k = [0.0] * 9


def _other_aspect(depth, info):
    depth.width, depth.step, depth.data = 100, 200, bytes(120 * 200)


@pytest.mark.parametrize("spoil, reason", [
    (_wrong_encoding, "depth refused: depth encoding 'rgb8' is not supported"),
    (_zero_intrinsics, "camera_info refused: camera_info K has fx=0"),
    (_other_aspect, "depth refused: depth is 100x120 but the colour image is 160x120: another aspect ratio"),
])
def test_bad_depth_and_camera_info_are_refused_with_the_reason(spoil, reason):
    header = Header(frame_id="colour")
    depth = depth_message(np.ones((120, 160), np.uint16), header)
    info = camera_info_message(header, 160, 120, fx=100.0, cx=79.5, cy=59.5)
    spoil(depth, info)
    with pytest.raises(GeometryError, match=reason):
        frame_geometry(info, depth, 120, 160, 1 << 24)


def test_a_complete_frame_takes_its_alone_twins_place_and_never_the_reverse():
    mailbox = FrameMailbox(["cam"])
    assert mailbox.put("cam", "alone 1", key=1, complete=False, hold_s=10.0)
    assert mailbox.take_one(timeout=0.05) == []  # held back, waiting for its depth
    assert mailbox.put("cam", "complete 1", key=1)
    assert not mailbox.put("cam", "alone 1 again", key=1, complete=False, hold_s=10.0)
    (taken,) = mailbox.take_one(timeout=0.05)
    assert taken.message == "complete 1" and mailbox.dropped("cam") == 0
    assert not mailbox.put("cam", "complete 1, late", key=1)  # that stamp was segmented already
    assert mailbox.put("cam", "alone 2", key=2, complete=False, hold_s=0.0)
    assert mailbox.put("cam", "alone 3", key=3, complete=False, hold_s=0.0)
    assert mailbox.dropped("cam") == 1
    assert [f.message for f in mailbox.take_one(timeout=0.05)] == ["alone 3"]
    assert mailbox.put("cam", "a bag played again", key=3 - 2_000_000_000)
    mailbox.take_one(timeout=0.05)
    assert mailbox.put("cam", "a stuck clock: the same stamp again", key=3 - 2_000_000_000, complete=False)
