"""Colour, depth and camera_info into the installed node over real DDS; clouds, camera_info and objects out.

The real Redwood RGB-D frames (../shared/data/rgbd) are checked against an independent back-projection;
generated frames cover the inputs that must not cost the masks anything: stamps that never pair, a depth
camera without camera_info, depth of the wrong encoding.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from sensor_msgs_py import point_cloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray

from node_frames import camera_info_message, depth_message, rgb_message, synthetic_rgb
from ros_harness import NodeProcess, running_node, wait_until

RGBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"
FX, CX, CY = 525.0, 319.5, 239.5  # ../shared/data/rgbd/camera_primesense.json
NODE = "/clip_dinoiser"
CAMERAS = {  # name: (depth topic, how its inputs are made)
    "real": "/real/depth/image_raw",
    "half": "/half/depth/image_raw",
    "unpaired": "/unpaired/depth/image_raw",
    "no_info": "/no_info/depth/image_raw",
    "bad_depth": "/bad_depth/depth/image_raw",
    "negative": "/negative/depth/image_raw",
    "approx": "/approx/depth/image_raw",  # only the second node's
}
FIRST_NODE_CAMERAS = ("real", "half", "unpaired", "no_info", "bad_depth", "negative")


def colour_topic(name):
    return f"/{name}/color/image_raw"


def output(name, what):
    return f"/{name}/color/segmentation/{what}"


def node_parameters(**extra):
    return {"image_topics": [colour_topic(name) for name in FIRST_NODE_CAMERAS],
            "depth_topics": [CAMERAS[name] for name in FIRST_NODE_CAMERAS],
            "prompts": ["floor", "wall", "sofa", "table"], "clip_model": "ViT-Tiny-16-test", "random_weights": True,
            "min_object_pixels": 20, **extra}


@pytest.fixture(scope="module")
def real_frame():
    if not RGBD.is_dir():
        pytest.skip(f"{RGBD} is missing (the real RGB-D frames)")
    rgb = cv2.cvtColor(cv2.imread(str(RGBD / "color" / "00001.jpg")), cv2.COLOR_BGR2RGB)
    return rgb, cv2.imread(str(RGBD / "depth" / "00001.png"), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("rgbd"), node_parameters()) as process:
        yield process


class Sender:
    """Publishes one camera's colour, depth and camera_info (in that order of arrival: info, depth, colour)."""

    def __init__(self, probe, name):
        self.node = probe.node
        self.colour = self.node.create_publisher(Image, colour_topic(name), qos_profile_sensor_data)
        self.depth = self.node.create_publisher(Image, CAMERAS[name], qos_profile_sensor_data)
        self.info = self.node.create_publisher(CameraInfo, f"/{name}/color/camera_info", qos_profile_sensor_data)

    def send(self, rgb, depth=None, info=True, depth_offset_ns=0, fx=FX, cx=CX, cy=CY, negative=False):
        colour = rgb_message(rgb, "colour_optical")
        if negative:
            colour.header.stamp.sec = -colour.header.stamp.sec
        if info:
            self.info.publish(camera_info_message(colour.header, rgb.shape[1], rgb.shape[0], fx=fx, cx=cx, cy=cy))
        if depth is not None:
            message = depth_message(depth, colour.header, "depth_optical")
            message.header.stamp.nanosec += depth_offset_ns
            self.depth.publish(message)
        self.colour.publish(colour)
        return colour.header

    def close(self):
        for publisher in (self.colour, self.depth, self.info):
            self.node.destroy_publisher(publisher)


def key(header):
    return header.stamp.sec, header.stamp.nanosec


def first_complete(probe, node, send, outputs, timeout=60.0):
    """Send frames until one has arrived on every topic of ``outputs`` ({name: type}); {name: message}."""
    collectors = {name: probe.collect(kind, output_topic, 10) for name, (output_topic, kind) in outputs.items()}
    try:
        def complete():
            assert node.alive(), node.log()
            send()
            arrived = [{key(m.header): m for m in c.matching(lambda m: True)} for c in collectors.values()]
            common = set(arrived[0]).intersection(*arrived[1:])
            return {name: found[min(common)] for name, found in zip(collectors, arrived)} if common else None

        return wait_until(complete, timeout, f"a frame on all of {list(outputs)}", interval=0.3)
    finally:
        for collector in collectors.values():
            probe.node.destroy_subscription(collector.subscription)


def fields(cloud):
    points = point_cloud2.read_points(cloud, skip_nans=False)
    return {name: points[name].reshape(cloud.height, cloud.width) for name in points.dtype.names}


def back_projection(metres, fx, cx, cy):
    v, u = np.mgrid[0:metres.shape[0], 0:metres.shape[1]].astype(np.float64)
    return np.stack([(u - cx) * metres / fx, (v - cy) * metres / fx, metres], axis=-1)


def test_real_rgbd_frame_gives_the_back_projected_labelled_cloud(node, probe, real_frame):
    rgb, depth = real_frame
    sender = Sender(probe, "real")
    try:
        got = first_complete(probe, node, lambda: sender.send(rgb, depth), {
            "mask": (output("real", "mask"), Image), "points": (output("real", "points"), PointCloud2),
            "camera_info": (output("real", "camera_info"), CameraInfo),
            "detections": (output("real", "detections"), Detection2DArray),
            "detections_3d": (output("real", "detections_3d"), Detection3DArray)})
    finally:
        sender.close()
    mask, cloud = got["mask"], got["points"]
    assert (cloud.height, cloud.width, cloud.point_step) == (mask.height, mask.width, 24) == (480, 640, 24)
    assert cloud.header.stamp == mask.header.stamp and cloud.header.frame_id == "depth_optical"
    assert got["camera_info"].header == mask.header and list(got["camera_info"].k)[:3] == [FX, 0.0, CX]
    assert got["detections"].header == mask.header
    assert got["detections_3d"].header.stamp == mask.header.stamp
    assert got["detections_3d"].header.frame_id == "depth_optical"
    values = fields(cloud)
    xyz = np.stack([values["x"], values["y"], values["z"]], axis=-1)
    valid = depth > 0
    assert valid.mean() > 0.5 and (~valid).any()
    assert (np.isfinite(xyz).all(axis=-1) == valid).all()  # NaN exactly where there is no depth
    np.testing.assert_allclose(xyz[valid], back_projection(depth / 1000.0, FX, CX, CY)[valid], rtol=1e-6, atol=1e-6)
    labels = np.frombuffer(bytes(mask.data), np.uint8).reshape(480, 640)
    assert (values["label"] == labels).all()  # no threshold: every pixel has a class
    region_pixels = sum(d.bbox.size_x * d.bbox.size_y for d in got["detections"].detections)
    assert got["detections"].detections and region_pixels >= 0.5 * 480 * 640  # random weights: big regions


def test_half_resolution_32fc1_depth_is_brought_to_the_mask(node, probe, real_frame):
    rgb, depth = real_frame
    metres = (depth[::2, ::2] / 1000.0).astype(np.float32)
    metres[depth[::2, ::2] == 0] = np.nan
    sender = Sender(probe, "half")
    try:
        got = first_complete(probe, node, lambda: sender.send(rgb, metres), {
            "mask": (output("half", "mask"), Image), "points": (output("half", "points"), PointCloud2)})
    finally:
        sender.close()
    values = fields(got["points"])
    upsampled = np.repeat(np.repeat(np.nan_to_num(metres), 2, axis=0), 2, axis=1).astype(np.float64)
    valid = upsampled > 0
    assert (got["points"].height, got["points"].width) == (480, 640)
    assert (np.isfinite(values["z"]) == valid).all()
    np.testing.assert_allclose(values["z"][valid], upsampled[valid], rtol=1e-6)


def depth_status(probe, name, condition, what, node=NODE, send=None):
    """The node's diagnostics status for camera ``name``'s depth once ``condition(status, values)`` holds;
    ``send`` is called between looks (best-effort frames may be lost on a loaded machine)."""
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    wanted = f"{node}: {colour_topic(name)} depth"
    seen = []
    try:
        def found():
            if send is not None:
                send()
            for array in reversed(diagnostics.matching(lambda m: True)):
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if status.name == wanted:
                        seen[:] = [status.message, values]
                        if condition(status, values):
                            return status, values
            return None

        try:
            return wait_until(found, 30, what, interval=0.2)
        except AssertionError as error:
            raise AssertionError(f"{error}; the last {wanted!r} said {seen}") from None
    finally:
        probe.node.destroy_subscription(diagnostics.subscription)


@pytest.mark.parametrize("name, spoil, message", [
    ("unpaired", dict(depth_offset_ns=1000), "no depth on /unpaired/depth/image_raw paired"),
    ("no_info", dict(info=False), "no camera_info on /no_info/color/camera_info"),
    ("bad_depth", dict(depth=np.zeros((120, 160), np.uint8)), "depth refused: depth encoding 'mono8' is not supported"),
])
def test_unusable_depth_costs_the_masks_nothing_and_is_reported(node, probe, name, spoil, message):
    sender = Sender(probe, name)
    rgb = synthetic_rgb(160, 120)
    inputs = {"depth": np.full((120, 160), 1200, np.uint16), "fx": 140.0, "cx": 79.5, "cy": 59.5, **spoil}
    masks = probe.collect(Image, output(name, "mask"), 10)
    clouds = probe.collect(PointCloud2, output(name, "points"), 10)

    def five_masks():
        sender.send(rgb, **inputs)
        return len(masks.matching(lambda m: True)) >= 5

    try:
        wait_until(five_masks, 60, f"masks of {name}", interval=0.2)
        status, values = depth_status(probe, name, lambda s, v: s.level == DiagnosticStatus.WARN and message in s.message,
                                      f"{name}: a WARN saying {message!r}")
        if name == "bad_depth":  # paired, then refused
            assert int(values["depth_refused"]) >= 1 and message in values["last_error"]
        else:
            assert int(values["frames_paired"]) == 0 and int(values["frames_unpaired"]) >= 5
        assert clouds.messages == []  # nothing unusable made a cloud
        assert node.alive()
    finally:
        probe.node.destroy_subscription(masks.subscription)
        probe.node.destroy_subscription(clouds.subscription)
        sender.close()


def test_negative_stamps_are_refused_not_fatal(node, probe):
    """rclpy's Time refuses negative seconds, and message_filters would raise (TimeSynchronizer while
    holding its lock): the node refuses such depth and camera_info, counts them, and keeps serving."""
    sender = Sender(probe, "negative")
    masks = probe.collect(Image, output("negative", "mask"), 10)
    rgb, depth = synthetic_rgb(160, 120), np.full((120, 160), 900, np.uint16)
    try:
        def masks_keep_coming():
            sender.send(rgb, depth, fx=140.0, cx=79.5, cy=59.5, negative=True)
            return len(masks.matching(lambda m: True)) >= 5

        wait_until(masks_keep_coming, 60, "masks of frames with negative stamps", interval=0.2)
        _, values = depth_status(probe, "negative", lambda s, v: int(v["depth_refused"]) >= 2, "refusals counted")
        assert "s is negative" in values["last_error"] and int(values["frames_paired"]) == 0
        got = first_complete(probe, node, lambda: sender.send(rgb, depth, fx=140.0, cx=79.5, cy=59.5),
                             {"points": (output("negative", "points"), PointCloud2)})
        assert got["points"].height == 120  # valid stamps pair again
        assert node.alive()
    finally:
        probe.node.destroy_subscription(masks.subscription)
        sender.close()


def test_approximate_sync_pairs_within_the_slop_only(probe, tmp_path):
    parameters = node_parameters(image_topics=[colour_topic("approx")], depth_topics=[CAMERAS["approx"]],
                                 sync="approximate", sync_slop_s=0.02)
    rgb, depth = synthetic_rgb(160, 120), np.full((120, 160), 800, np.uint16)
    inputs = {"fx": 140.0, "cx": 79.5, "cy": 59.5}
    node = NodeProcess(tmp_path, parameters, "-r", "__node:=clip_dinoiser_approx")
    sender = Sender(probe, "approx")
    try:
        got = first_complete(probe, node, lambda: sender.send(rgb, depth, depth_offset_ns=5_000_000, **inputs),
                             {"mask": (output("approx", "mask"), Image),
                              "points": (output("approx", "points"), PointCloud2)})
        assert got["points"].header.stamp == got["mask"].header.stamp  # the colour frame's stamp
        assert np.allclose(fields(got["points"])["z"], 0.8)
        _, values = depth_status(probe, "approx", lambda s, v: int(v["frames_paired"]) > 0, "pairs",
                                 node="/clip_dinoiser_approx")
        paired = int(values["frames_paired"])
        _, values = depth_status(  # 50 ms apart: beyond the slop, never paired
            probe, "approx", lambda s, v: int(v["frames_unpaired"]) >= 5, "unpaired frames",
            node="/clip_dinoiser_approx", send=lambda: sender.send(rgb, depth, depth_offset_ns=50_000_000, **inputs))
        assert int(values["frames_paired"]) <= paired + 2  # frames sent before the first check
    finally:
        sender.close()
        assert node.stop() == 0, node.log()
