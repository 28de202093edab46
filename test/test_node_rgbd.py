"""Colour, depth and camera_info into the installed node over real DDS; clouds, camera_info and objects out.

The real Redwood RGB-D frames (../shared/data/rgbd) are checked against an independent back-projection;
generated frames cover the inputs that must not cost the masks anything: stamps that never pair, a depth
camera without camera_info, depth of the wrong encoding.
"""
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from sensor_msgs_py import point_cloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray

from camera_driver import CameraDriver, Faults, Frames
from node_frames import camera_info_message, depth_message, rgb_message, synthetic_rgb
from ros_harness import NodeProcess, running_node, wait_until

RGBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"
FX, CX, CY = 525.0, 319.5, 239.5  # ../shared/data/rgbd/camera_primesense.json
# The real frame's camera as a calibrated driver describes it: the images are rectified, so P (fx 518.2,
# cx 322.1, cy 236.8) describes them, while K is the raw lens's, 6 % off, with plumb_bob distortion.
K_FX, K_CX, K_CY = 549.3, 308.6, 247.1
P_REAL = (FX * 0.987, 0.0, CX + 2.6, 0.0, 0.0, FX * 0.987, CY - 2.7, 0.0, 0.0, 0.0, 1.0, 0.0)
DISTORTION = (0.041, -0.087, 0.0011, -0.0006, 0.0)
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

    def send(self, rgb, depth=None, info=True, depth_offset_ns=0, fx=FX, cx=CX, cy=CY, negative=False,
             calibration=None):
        colour = rgb_message(rgb, "colour_optical")
        if negative:
            colour.header.stamp.sec = -colour.header.stamp.sec
        if calibration is not None:
            self.info.publish(calibration(colour.header))
        elif info:
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


def back_projection(metres, fx, cx, cy, fy=None):
    v, u = np.mgrid[0:metres.shape[0], 0:metres.shape[1]].astype(np.float64)
    return np.stack([(u - cx) * metres / fx, (v - cy) * metres / (fy or fx), metres], axis=-1)


def calibrated(header):
    """The real frame's camera_info from a calibrated, rectifying driver: K != P, distortion non-zero."""
    return camera_info_message(header, 640, 480, fx=K_FX, cx=K_CX, cy=K_CY, p=P_REAL, d=DISTORTION)


def test_real_rgbd_frame_gives_the_back_projected_labelled_cloud(node, probe, real_frame):
    rgb, depth = real_frame
    sender = Sender(probe, "real")
    try:
        got = first_complete(probe, node, lambda: sender.send(rgb, depth, calibration=calibrated), {
            "mask": (output("real", "mask"), Image), "points": (output("real", "points"), PointCloud2),
            "camera_info": (output("real", "camera_info"), CameraInfo),
            "detections": (output("real", "detections"), Detection2DArray),
            "detections_3d": (output("real", "detections_3d"), Detection3DArray)})
    finally:
        sender.close()
    mask, cloud = got["mask"], got["points"]
    assert (cloud.height, cloud.width, cloud.point_step) == (mask.height, mask.width, 24) == (480, 640, 24)
    assert cloud.header.stamp == mask.header.stamp and cloud.header.frame_id == "depth_optical"
    warning = "the depth's frame_id 'depth_optical' is not the colour image's 'colour_optical'"
    assert node.log().count(warning) == 1  # said once per activation, though every frame has it
    assert got["camera_info"].header == mask.header
    np.testing.assert_allclose(got["camera_info"].p, P_REAL, rtol=1e-9)  # the mask's size is the frame's
    assert got["detections"].header == mask.header
    assert got["detections_3d"].header.stamp == mask.header.stamp
    assert got["detections_3d"].header.frame_id == "depth_optical"
    values = fields(cloud)
    xyz = np.stack([values["x"], values["y"], values["z"]], axis=-1)
    valid = depth > 0
    assert valid.mean() > 0.5 and (~valid).any()
    assert (np.isfinite(xyz).all(axis=-1) == valid).all()  # NaN exactly where there is no depth
    fx, cx, fy, cy = P_REAL[0], P_REAL[2], P_REAL[5], P_REAL[6]  # image_geometry's fx(), cx(), fy(), cy()
    expected = back_projection(depth / 1000.0, fx, cx, cy, fy)
    np.testing.assert_allclose(xyz[valid], expected[valid], rtol=1e-5, atol=1e-5)
    with_k = back_projection(depth / 1000.0, K_FX, K_CX, K_CY)
    assert np.abs(with_k[valid] - xyz[valid]).max() > 0.05  # K would have put points elsewhere
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
    ("unpaired", dict(depth_offset_ns=1000), "no frame segmented with depth from /unpaired/depth/image_raw"),
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


# ---------------------------------------------------------------- drivers at camera rates
FAULTS = {  # camera namespace: the driver's fault (its stream at 30 Hz, colour 160x120)
    "healthy": Faults(),
    "offset": Faults(depth_offset_ns=1_000_000),  # sync: exact, depth 1 ms off: never pairs
    "depth_15hz": Faults(depth_every=2),
    "depth_stops": Faults(depth_stops_after=15),
    "info_late": Faults(camera_info="late"),
    "info_missing": Faults(camera_info="missing"),
    "duplicate": Faults(duplicate_stamps=True),
    "backwards": Faults(backwards_after=45),
}
WINDOW_FRAMES = 90  # frames sent while masks are counted: 3 s at 30 Hz
SYNC_WAIT_S = 0.1  # the node's default


@pytest.fixture(scope="module")
def driven(ros, tmp_path_factory):
    """One node, one depth camera per fault (RealSense's topic names), the tiny model."""
    namespaces = [f"/{name}" for name in FAULTS]
    with running_node(tmp_path_factory.mktemp("drivers"), {
        "image_topics": [f"{ns}/color/image_raw" for ns in namespaces],
        "depth_topics": [f"{ns}/aligned_depth_to_color/image_raw" for ns in namespaces],
        "prompts": ["floor", "wall", "sofa"], "clip_model": "ViT-Tiny-16-test", "random_weights": True,
        "sync": "exact",
    }) as process:
        yield process


def diagnostics_values(probe, node, names, condition, what):
    """{status name: (status, values)} of one /diagnostics array where ``condition`` holds for it."""
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    try:
        def found():
            assert node.alive(), node.log()
            for array in reversed(diagnostics.matching(lambda m: True)):
                statuses = {s.name: (s, {kv.key: kv.value for kv in s.values}) for s in array.status}
                if all(name in statuses for name in names) and condition(statuses):
                    return statuses
            return None

        return wait_until(found, 40, what, interval=0.2)
    finally:
        probe.node.destroy_subscription(diagnostics.subscription)


def masks_per_second(probe, node, name, phase):
    """Drive camera ``name`` and, beside it, the healthy reference camera at 30 Hz: from the first masks of both
    on, the masks of each over the next WINDOW_FRAMES frames sent, per second of sending; then both stop.
    The reference measures what the model allows in the same seconds, whatever else loads the CPU.
    (masks/s of ``name``, of the reference, the driver's record, frames sent before its first mask)."""
    stamp = 1_700_000_000 + 1000 * phase  # each phase's stamps are new to the node
    drivers = [CameraDriver(probe.node, f"/{camera}", Frames.synthetic(), faults=FAULTS[camera], first_stamp_s=stamp)
               for camera in (name, "healthy")]
    masks = [probe.collect(Image, f"/{camera}/color/segmentation/mask", qos_profile_sensor_data)
             for camera in (name, "healthy")]
    try:
        for driver in drivers:
            driver.start()
        wait_until(lambda: node.alive() and all(m.messages for m in masks), 60, f"first masks of {name}",
                   interval=0.05)
        first = len(drivers[0].snapshot().colour_stamps)
        started = time.monotonic()
        counted_from = [len(m.messages) for m in masks]
        wait_until(lambda: len(drivers[0].snapshot().colour_stamps) >= first + WINDOW_FRAMES, 60,
                   f"{WINDOW_FRAMES} frames sent on {name}", interval=0.05)
        elapsed = time.monotonic() - started
        rates = [(len(m.messages) - start) / elapsed for m, start in zip(masks, counted_from)]
    finally:
        for driver in drivers:
            driver.close()
        for collector in masks:
            probe.node.destroy_subscription(collector.subscription)
    return rates[0], rates[1], drivers[0].snapshot(), first


def settled_counts(probe, node, name):
    """The camera's and its depth's diagnostics once its counts stopped moving (the driver has stopped)."""
    camera, depth = f"{NODE}: /{name}/color/image_raw", f"{NODE}: /{name}/color/image_raw depth"
    previous = {}

    def still(statuses):
        key = [statuses[camera][1][k] for k in ("frames_received", "frames_published")] + \
            [statuses[depth][1][k] for k in ("pairs_made", "frames_paired", "frames_unpaired")]
        settled = previous.get("key") == key
        previous["key"] = key
        return settled

    statuses = diagnostics_values(probe, node, [camera, depth], still, f"{name}'s counts settled")
    return statuses[camera][1], statuses[depth][1]


def test_every_driver_fault_at_30_hz_keeps_the_masks_coming_and_is_counted_truthfully(driven, probe):
    """The model's own rate is measured on a healthy camera beside each faulty one; that one must reach a share of
    what the model and the pairing wait allow (an unpaired frame waits up to sync_wait_s, counted from the
    first unpaired one), and /diagnostics counts paired and unpaired frames as they were sent and segmented.
    Before the mailbox counted the wait from the first unpaired frame, 'offset' got 0 masks."""
    rates, allowed = {}, {}
    for phase, name in enumerate(name for name in FAULTS if name != "healthy"):
        rates[name], model, sent, before = masks_per_second(probe, driven, name, phase)
        allowed[name] = min(model, 1.0 / (SYNC_WAIT_S + 2 / 30 + 1 / model))  # an unpaired frame's wait
        camera, depth = settled_counts(probe, driven, name)
        received, published = int(camera["frames_received"]), int(camera["frames_published"])
        pairs, paired, unpaired = (int(depth[key]) for key in ("pairs_made", "frames_paired", "frames_unpaired"))
        assert 0 < received <= len(sent.colour_stamps), (name, camera)  # best effort, depth 1: a busy node may miss some
        assert 0 < published <= paired + unpaired <= published + 1, (name, camera, depth)  # 1: in the model
        assert paired <= pairs <= sent.paired_depth, (name, depth, sent)
        if name in ("offset", "info_missing"):
            assert pairs == 0, (name, depth)
        if name in ("depth_15hz", "info_late"):
            assert paired > 0, (name, depth)
        if name in ("offset", "info_missing", "depth_stops"):  # at 15 Hz the paired frames are enough
            assert unpaired > 0, (name, depth)
    print("masks/s at 30 Hz per driver fault (beside the healthy reference):",
          {name: round(rate, 1) for name, rate in rates.items()},
          "allowed by the model and the wait:", {name: round(rate, 1) for name, rate in allowed.items()})
    slow = {name: (round(rate, 1), round(allowed[name], 1)) for name, rate in rates.items() if rate < 0.4 * allowed[name]}
    assert not slow, f"below 0.4 x what the model and the wait allow (masks/s, allowed): {slow}"


def test_a_silent_camera_and_unpaired_depth_are_warnings_that_clear_when_frames_return(driven, probe):
    from clip_dinoiser_ros.ros.diagnostics import WINDOW_S

    camera, depth = f"{NODE}: /healthy/color/image_raw", f"{NODE}: /healthy/color/image_raw depth"
    driver = CameraDriver(probe.node, "/healthy", Frames.synthetic(), first_stamp_s=1_800_000_000)
    try:
        driver.start()
        diagnostics_values(probe, driven, [camera, depth], lambda s: s[camera][0].level == DiagnosticStatus.OK and
                           s[depth][0].level == DiagnosticStatus.OK, "both OK while the camera sends")
        driver.stop()
        stopped = time.monotonic()
        warned = diagnostics_values(
            probe, driven, [camera, depth], lambda s: s[camera][0].level == DiagnosticStatus.WARN and
            s[depth][0].level == DiagnosticStatus.WARN, "both WARN once the camera is silent")
        assert time.monotonic() - stopped >= WINDOW_S - 1.5  # not before the window (ticks are 1 s apart)
        assert warned[camera][0].message.startswith("no frame for ") and "(since " in warned[camera][0].message
        assert "no frame segmented with depth from /healthy/aligned_depth_to_color/image_raw for" in \
            warned[depth][0].message
        driver.start()
        diagnostics_values(probe, driven, [camera, depth], lambda s: s[camera][0].level == DiagnosticStatus.OK and
                           s[depth][0].level == DiagnosticStatus.OK, "both OK again when frames return")
    finally:
        driver.close()
