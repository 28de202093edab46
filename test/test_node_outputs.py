"""Every output topic of the node over DDS, for generated frames and, where present, real ones (CamVid, Spot)."""
import cv2
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import LabelInfo

from frame_sources import camvid_frames, spot_messages
from node_frames import jpeg_message, mono_message, restamped, rgb_message, synthetic_rgb
from ros_harness import answer_to, parameter_client, running_node, set_parameter, wait_until

PROMPTS = ["background", "road", "traffic light", "car|truck"]
NAMES = ["background", "road", "traffic light", "car"]
TOPICS = {
    "rgb": "/gen_rgb/image_raw",
    "jpeg": "/gen_jpeg/image_raw/compressed",
    "mono": "/gen_mono/image",
    "camvid": "/camvid/image_raw",
    "spot_raw": "/spot_raw/image_raw",
    "spot_jpeg": "/spot_jpeg/image_raw/compressed",
    "spot_mono": "/spot_mono/image",
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def node(ros, tmp_path_factory, request):
    """The same outputs whichever backend runs the per-frame graph (onnxruntime: exported per input size)."""
    with running_node(tmp_path_factory.mktemp("outputs"), {
        "image_topics": list(TOPICS.values()),
        "prompts": PROMPTS,
        "clip_model": "ViT-Tiny-16-test",
        "random_weights": True,
        "input_reliability": "reliable",
        "backend": request.param,
    }) as process:
        yield process


@pytest.fixture(scope="module")
def parameters(probe, node):
    return parameter_client(probe, "clip_dinoiser")


def frame(source):
    """(message, width, height) of one input frame: generated ones always, real ones when the data exists."""
    if source == "rgb":
        return rgb_message(synthetic_rgb(480, 360), "gen"), 480, 360
    if source == "jpeg":
        return jpeg_message(synthetic_rgb(320, 240, seed=3), "gen"), 320, 240
    if source == "mono":
        return mono_message(cv2.cvtColor(synthetic_rgb(200, 150, seed=4), cv2.COLOR_RGB2GRAY), "gen"), 200, 150
    if source == "camvid":
        return rgb_message(camvid_frames(1)[0], "camvid"), 480, 360
    if source == "spot_raw":
        return restamped(spot_messages(compressed=False)["/spot/camera/hand_color/image"]), 640, 480
    if source == "spot_jpeg":
        return restamped(spot_messages(compressed=True)["/spot/camera/hand_color/image/compressed"]), 640, 480
    return restamped(spot_messages(compressed=False)["/spot/camera/frontleft/image"]), 640, 480


def send_until_answered(probe, node, topic, message, output, output_type=Image):
    """Publish ``message`` until the output for its stamp arrives; return that output."""
    from clip_dinoiser_ros.pipeline.topics import output_topic

    return answer_to(probe, node, message, topic, output_topic(topic, output), output_type)


@pytest.mark.parametrize("source", list(TOPICS))
def test_mask_confidence_and_summary_match_the_input_frame(node, probe, source):
    message, width, height = frame(source)
    topic = TOPICS[source]

    mask = send_until_answered(probe, node, topic, message, "mask")
    assert (mask.encoding, mask.width, mask.height) == ("mono8", width, height)
    assert mask.header == message.header
    labels = np.frombuffer(bytes(mask.data), np.uint8).reshape(height, mask.step)[:, :width]
    assert labels.max() < len(PROMPTS)

    confidence = send_until_answered(probe, node, topic, message, "confidence")
    assert (confidence.encoding, confidence.width, confidence.height) == ("32FC1", width, height)
    values = np.frombuffer(bytes(confidence.data), np.float32)
    assert values.size == width * height and 1.0 / len(PROMPTS) - 1e-4 <= values.min() and values.max() <= 1.0 + 1e-6

    from clip_dinoiser_ros.msg import ClassConfidences

    summary = send_until_answered(probe, node, topic, message, "class_confidences", ClassConfidences)
    assert list(summary.labels) == NAMES
    assert summary.vocabulary_version >= 1
    assert sum(summary.coverage) == pytest.approx(1.0, abs=1e-4)
    for coverage, mean, best in zip(summary.coverage, summary.mean_confidence, summary.max_confidence):
        assert 0 <= coverage <= 1 and 0 <= mean <= best + 1e-6 <= 1 + 1e-6
        assert (coverage > 0) == (mean > 0)


def test_overlay_and_per_class_topics_are_published_while_subscribed(node, probe):
    message = rgb_message(synthetic_rgb(seed=1), "gen")
    overlay = send_until_answered(probe, node, TOPICS["rgb"], message, "overlay")
    assert (overlay.encoding, overlay.width, overlay.height) == ("rgb8", 480, 360)
    per_class = send_until_answered(probe, node, TOPICS["rgb"], message, "confidence/traffic_light")
    assert (per_class.encoding, per_class.width, per_class.height) == ("32FC1", 480, 360)
    probabilities = np.frombuffer(bytes(per_class.data), np.float32)
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0 + 1e-6


def test_confidence_as_mono8_is_round_255_p_of_the_32fc1_image(node, probe, parameters):
    message = rgb_message(synthetic_rgb(seed=2), "gen")
    as_float = send_until_answered(probe, node, TOPICS["rgb"], message, "confidence")
    assert set_parameter(parameters, "confidence_encoding", "mono8").successful  # in force when answered
    try:
        as_byte = send_until_answered(probe, node, TOPICS["rgb"], restamped(message), "confidence")
    finally:
        assert set_parameter(parameters, "confidence_encoding", "32FC1").successful
    assert as_byte.encoding == "mono8"
    expected = np.rint(np.frombuffer(bytes(as_float.data), np.float32) * 255.0)
    got = np.frombuffer(bytes(as_byte.data), np.uint8).reshape(360, as_byte.step)[:, :480].ravel()
    assert (as_byte.width, as_byte.height, as_byte.step) == (480, 360, 480)
    assert np.abs(got.astype(int) - expected).max() <= 1  # the same frame segmented twice, float rounding aside
    refused = set_parameter(parameters, "confidence_encoding", "mono16")
    assert not refused.successful and "32FC1, mono8" in refused.reason


def test_late_subscriber_gets_the_vocabulary_at_once(node, probe):
    """LabelInfo is latched: a subscriber that comes after the frames still gets the class map in effect."""
    message = rgb_message(synthetic_rgb(seed=11), "gen")
    mask = send_until_answered(probe, node, TOPICS["rgb"], message, "mask")
    late = probe.collect(LabelInfo, "/gen_rgb/segmentation/label_info", LATCHED)
    info = wait_until(late.last, 10, "latched label_info")
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(NAMES))
    assert info.threshold == 0.0
    stamp = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)  # noqa: E731
    assert stamp(info) <= stamp(mask)  # stamped with the first mask of its class map, not later


def test_label_info_is_republished_when_the_threshold_changes(node, probe, parameters):
    """A new threshold changes the class map's meaning: its LabelInfo comes first, stamped like its first mask."""
    infos = probe.collect(LabelInfo, "/gen_jpeg/segmentation/label_info", LATCHED)  # before the masks' subscription
    message = jpeg_message(synthetic_rgb(320, 240, seed=5), "gen")
    send_until_answered(probe, node, TOPICS["jpeg"], message, "mask")
    wait_until(infos.last, 10, "latched label_info")
    earlier = (message.header.stamp.sec, message.header.stamp.nanosec)
    assert set_parameter(parameters, "confidence_threshold", 0.5).successful
    try:
        mask = send_until_answered(probe, node, TOPICS["jpeg"], restamped(message), "mask")
        info = wait_until(lambda: (m := infos.last()).threshold == 0.5 and m, 10, "label_info with threshold 0.5")
        assert [c.class_name for c in info.class_map] == NAMES
        # stamped like the first mask made at 0.5: this frame's, or a copy of the earlier frame still on its way
        # to the node when the threshold changed (that frame was published until answered)
        assert (info.header.stamp.sec, info.header.stamp.nanosec) in {earlier, (mask.header.stamp.sec,
                                                                              mask.header.stamp.nanosec)}
        confidence = send_until_answered(probe, node, TOPICS["jpeg"], restamped(message), "confidence")
        labels = np.frombuffer(bytes(mask.data), np.uint8)
        below = np.frombuffer(bytes(confidence.data), np.float32) < 0.5
        assert below.any() and (labels[below] == 255).all() and (labels[~below] < len(NAMES)).all()
    finally:
        assert set_parameter(parameters, "confidence_threshold", 0.0).successful
    send_until_answered(probe, node, TOPICS["jpeg"], restamped(message), "mask")
    wait_until(lambda: infos.last().threshold == 0.0, 10, "label_info back at threshold 0")


def diagnostics_of(probe, collector, expected):
    def ours():  # /diagnostics is shared by every node of the domain
        found = collector.matching(lambda a: expected <= {status.name for status in a.status})
        return found[-1] if found else None

    return wait_until(ours, 10, f"diagnostics with the statuses {expected}")


def test_diagnostics_report_each_camera_and_the_vocabulary(node, probe, request):
    from diagnostic_msgs.msg import DiagnosticArray

    collector = probe.collect(DiagnosticArray, "/diagnostics")
    expected = {f"/clip_dinoiser: {topic}" for topic in TOPICS.values()} | {"/clip_dinoiser: vocabulary"}
    array = diagnostics_of(probe, collector, expected)
    values = {kv.key: kv.value for kv in array.status[0].values}
    for key in ("input_rate_hz", "output_rate_hz", "frames_dropped", "latency_p50_ms", "latency_p95_ms",
                "device", "precision", "vocabulary"):
        assert key in values
    assert values["device"] == "cpu" and values["random_weights"] == "true"
    backend = request.node.callspec.params["node"]
    assert values["backend"] == {"torch": "torch", "onnxruntime": "onnxruntime/CPUExecutionProvider"}[backend]
    assert backend == "torch" or values["precision"] == "float32"  # the exported graph runs in fp32


def test_a_rejected_frame_warns_only_for_a_while(node, probe):
    """WARN while frames were rejected recently, OK again once good frames flow (a window, not since start)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from clip_dinoiser_ros.ros.diagnostics import WINDOW_S

    name = f"/clip_dinoiser: {TOPICS['mono']}"
    collector = probe.collect(DiagnosticArray, "/diagnostics")
    publisher = probe.node.create_publisher(Image, TOPICS["mono"], 10)
    bad = Image(header=rgb_message(synthetic_rgb(8, 8)).header, height=8, width=8, encoding="weird42", step=8,
                data=bytes(64))

    def level():
        array = diagnostics_of(probe, collector, {name})
        return next(s for s in array.status if s.name == name).level

    for _ in range(3):
        publisher.publish(bad)
    wait_until(lambda: level() == DiagnosticStatus.WARN, 10, "WARN after rejected frames")
    good, _, _ = frame("mono")
    send_until_answered(probe, node, TOPICS["mono"], good, "mask")
    # good frames keep coming: a camera silent for WINDOW_S is a WARN of its own
    wait_until(lambda: publisher.publish(good) or level() == DiagnosticStatus.OK, WINDOW_S + 5,
               "OK once the rejections are older than the window")
