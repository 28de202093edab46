"""3D outputs from one RGB-D frame, without a ROS graph: the real Redwood frames of ../shared/data/rgbd
against an independent back-projection, the detections of a mask with known regions, and the refusals."""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import RegionOfInterest
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
# The Redwood frames are rectified with FX, FY, CX, CY: that is P. A calibration's K (of the raw, distorted
# image) is a few % off P, with plumb_bob distortion; a node that read K would put every point elsewhere.
K_OFF = (1.04, 1.035, 9.0, -6.0)  # fx, fy factors; cx, cy shifts in pixels
DISTORTION = (0.09, -0.22, 0.0012, -0.0008, 0.1)


@dataclass(frozen=True)
class Calibration:
    """A camera_info whose P, in the pixels of the 640x480 colour frame, is fx, fy, cx, cy, tx, ty: for images
    ``described`` times that size, binned by ``binning``, cut by an roi at ``offset`` (x, y) of the full image."""

    name: str
    tx: float = 0.0
    ty: float = 0.0
    binning: int = 1
    offset: tuple[int, int] = (0, 0)
    described: int = 1
    p_zero: bool = False  # P all zero, as an uncalibrated driver sends it: K (here then equal to P's terms) serves

    fx, fy, cx, cy = FX, FY, CX, CY

    def k_terms(self):
        """K in the colour frame's pixels."""
        if self.p_zero:
            return self.fx, self.fy, self.cx, self.cy
        return self.fx * K_OFF[0], self.fy * K_OFF[1], self.cx + K_OFF[2], self.cy + K_OFF[3]

    def message(self, header, width=640, height=480):
        scale = self.described * self.binning
        x0, y0 = self.offset

        def full(fx, fy, cx, cy):  # the inverse of image_geometry's reduction, then of the resize
            return fx * scale, fy * scale, cx * scale + x0, cy * scale + y0

        kfx, kfy, kcx, kcy = full(*self.k_terms())
        pfx, pfy, pcx, pcy = full(self.fx, self.fy, self.cx, self.cy)
        p = [0.0] * 12 if self.p_zero else [pfx, 0, pcx, self.tx * scale, 0, pfy, pcy, self.ty * scale, 0, 0, 1, 0]
        roi_width, roi_height = width * scale, height * scale
        info = camera_info_message(header, roi_width + 2 * x0, roi_height + 2 * y0, fx=kfx, cx=kcx, cy=kcy, fy=kfy,
                                   p=p, d=DISTORTION)
        info.binning_x = info.binning_y = self.binning if self.binning > 1 else 0
        if self.offset != (0, 0):
            info.roi = RegionOfInterest(x_offset=x0, y_offset=y0, width=roi_width, height=roi_height)
        return info


CALIBRATED = Calibration("K != P")
CALIBRATIONS = [
    CALIBRATED,
    Calibration("Tx, Ty", tx=-FX * 0.05, ty=3.0),  # the second camera of a pair 5 cm apart
    Calibration("binning 2", binning=2),
    Calibration("roi", offset=(80, 40)),
    Calibration("binning 2, roi and Tx", tx=-FX * 0.05, binning=2, offset=(160, 120)),
    Calibration("for images twice the frame's size", described=2),
    Calibration("P all zero: K", p_zero=True),
]


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


def outputs(rgb, depth, labels, confidence, calibration=CALIBRATED, max_depth_m=10.0):
    header = rgb_message(rgb, "colour").header
    info = calibration.message(header)
    geometry = frame_geometry(info, depth_message(depth, header, "depth_optical"), *rgb.shape[:2], 1 << 24)
    produced = spatial_outputs(geometry, rgb, labels, confidence, NAMES, 255, header, ALL_3D,
                               max_depth_m=max_depth_m, min_object_pixels=50)
    return header, produced


def expected_points(metres, calibration=CALIBRATED):
    """The independent back-projection with P in the frame's pixels: the point that P projects to (u, v) at
    depth z, ((u - cx) z - tx) / fx, ((v - cy) z - ty) / fy, z."""
    c = calibration
    v, u = np.mgrid[0:metres.shape[0], 0:metres.shape[1]].astype(np.float64)
    return np.stack([((u - c.cx) * metres - c.tx) / c.fx, ((v - c.cy) * metres - c.ty) / c.fy, metres], axis=-1)


def projected(xyz, info):
    """Where the camera_info ``info`` puts the points ``xyz`` (..., 3) in the pixels of a 640x480 image of it:
    P's projection (K's when P is all zero) in full-resolution pixels, less the roi's offset, divided by the
    binning, then resized."""
    p = np.array(info.p).reshape(3, 4) if any(info.p) else np.hstack([np.array(info.k).reshape(3, 3), np.zeros((3, 1))])
    full = np.einsum("ij,...j->...i", p, np.concatenate([xyz, np.ones(xyz.shape[:-1] + (1,))], axis=-1))
    u, v = full[..., 0] / full[..., 2], full[..., 1] / full[..., 2]
    binning_x, binning_y = max(1, info.binning_x), max(1, info.binning_y)
    roi_width, roi_height = (info.roi.width, info.roi.height) if info.roi.width else (info.width, info.height)
    return np.stack([(u - info.roi.x_offset) / binning_x * 640 / (roi_width // binning_x),
                     (v - info.roi.y_offset) / binning_y * 480 / (roi_height // binning_y)], axis=-1)


def cloud_fields(cloud):
    points = point_cloud2.read_points(cloud, skip_nans=False)
    return {name: points[name].reshape(cloud.height, cloud.width) for name in points.dtype.names}


@pytest.mark.parametrize("calibration", CALIBRATIONS, ids=lambda c: c.name)
def test_the_cloud_is_the_back_projection_of_every_pixel(frame, calibration):
    rgb, depth = frame
    labels, confidence = a_mask()
    header, produced = outputs(rgb, depth, labels, confidence, calibration)
    cloud = produced["points"]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (480, 640, 24, False)
    assert cloud.header.stamp == header.stamp and cloud.header.frame_id == "depth_optical"
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("confidence", 16, 7), ("label", 20, 4)]
    fields = cloud_fields(cloud)
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=-1)
    valid = depth > 0
    assert (np.isfinite(xyz).all(axis=-1) == valid).all() and np.isnan(xyz[~valid]).all()
    np.testing.assert_allclose(xyz[valid], expected_points(depth / 1000.0, calibration)[valid], rtol=1e-6, atol=1e-6)
    uv = np.stack(np.meshgrid(np.arange(640.0), np.arange(480.0)), axis=-1)
    np.testing.assert_allclose(projected(xyz[valid], calibration.message(header)), uv[valid], atol=1e-3)
    if not calibration.p_zero:  # and not where K would put them: centimetres away
        fx, fy, cx, cy = calibration.k_terms()
        metres = depth[valid] / 1000.0
        with_k = np.stack([(uv[valid][:, 0] - cx) * metres / fx, (uv[valid][:, 1] - cy) * metres / fy, metres], -1)
        assert np.linalg.norm(xyz[valid] - with_k, axis=-1).max() > 0.05
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


@pytest.mark.parametrize("calibration", CALIBRATIONS, ids=lambda c: c.name)
def test_the_mask_camera_info_is_k_and_p_in_the_mask_pixels(frame, calibration):
    rgb, depth = frame
    labels, confidence = a_mask()
    header, produced = outputs(rgb, depth, labels, confidence, calibration)
    info = produced["camera_info"]
    assert info.header == header and (info.width, info.height) == (640, 480)
    assert (info.binning_x, info.binning_y) == (0, 0)
    assert (info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height) == (0, 0, 0, 0)
    assert list(info.d) == list(DISTORTION) and info.distortion_model == "plumb_bob"
    fx, fy, cx, cy = calibration.k_terms()
    assert list(info.k) == pytest.approx([fx, 0, cx, 0, fy, cy, 0, 0, 1])
    c = calibration
    p = [0.0] * 12 if c.p_zero else [c.fx, 0, c.cx, c.tx, 0, c.fy, c.cy, c.ty, 0, 0, 1, 0]
    assert list(info.p) == pytest.approx(p)


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


@pytest.mark.parametrize("calibration", CALIBRATIONS, ids=lambda c: c.name)
def test_the_3d_boxes_hold_their_regions_points(frame, calibration):
    rgb, depth = frame
    labels, confidence = a_mask()
    _, produced = outputs(rgb, depth, labels, confidence, calibration)
    xyz = expected_points(depth / 1000.0, calibration)
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
    info.k, info.p = [0.0] * 9, [0.0] * 12


def _zero_p_and_k(depth, info):
    info.p = [0.0] * 12
    info.k[0] = 0.0


def _nan_tx(depth, info):
    info.p[3] = float("nan")


def _roi_outside(depth, info):
    info.roi.x_offset, info.roi.width, info.roi.height = 100, 80, 60


def _binning_too_coarse(depth, info):
    info.binning_x = 200


def _other_aspect(depth, info):
    depth.width, depth.step, depth.data = 100, 200, bytes(120 * 200)


@pytest.mark.parametrize("spoil, reason", [
    (_wrong_encoding, "depth refused: depth encoding 'rgb8' is not supported"),
    (_zero_intrinsics, "camera_info refused: camera_info K has fx=0"),
    (_zero_p_and_k, "camera_info refused: camera_info K has fx=0"),  # P all zero: K serves, and is checked
    (_nan_tx, r"camera_info refused: camera_info P has fx=100, .* Tx=nan"),
    (_roi_outside, r"camera_info refused: camera_info roi is 80x60 at \(100, 0\): it must be a non-empty part "
                   "of the 160x120"),
    (_binning_too_coarse, "camera_info refused: camera_info binning 200x1 leaves no pixel of its 160x120 image"),
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
