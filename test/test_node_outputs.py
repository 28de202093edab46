"""Every output topic of the node, for real frames (CamVid, Spot raw and compressed) over DDS."""
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from frame_sources import camvid_frames, spot_messages
from node_frames import restamped, rgb_message
from ros_harness import publish_until_answered, running_node, wait_until

PROMPTS = ["background", "road", "traffic light", "car|truck"]
TOPICS = {
    "camvid": "/camvid/image_raw",
    "spot_raw": "/spot_raw/image_raw",
    "spot_jpeg": "/spot_jpeg/image_raw/compressed",
    "spot_mono": "/spot_mono/image",
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("outputs"), {
        "image_topics": list(TOPICS.values()),
        "prompts": PROMPTS,
        "clip_model": "ViT-Tiny-16-test",
        "random_weights": True,
        "input_reliability": "reliable",
    }) as process:
        yield process


def send_until_answered(probe, node, topic, message, output_topic, output_type=Image, timeout=30.0):
    """Publish ``message`` until the output for its stamp arrives; return that output."""
    from clip_dinoiser_ros.ros.topics import output_topic as output_name

    collector = probe.collect(output_type, output_name(topic, output_topic))
    publisher = probe.node.create_publisher(type(message), topic, 10)
    return publish_until_answered(node, publisher, collector, message, timeout)


@pytest.mark.parametrize("source", ["camvid", "spot_raw", "spot_jpeg", "spot_mono"])
def test_mask_confidence_and_summary_match_the_input_frame(node, probe, source):
    if source == "camvid":
        message = rgb_message(camvid_frames(1)[0], "camvid")
    elif source == "spot_raw":
        message = restamped(spot_messages(compressed=False)["/spot/camera/hand_color/image"])
    elif source == "spot_jpeg":
        message = restamped(spot_messages(compressed=True)["/spot/camera/hand_color/image/compressed"])
    else:
        message = restamped(spot_messages(compressed=False)["/spot/camera/frontleft/image"])
    topic = TOPICS[source]
    width, height = (640, 480) if source.startswith("spot") else (480, 360)

    mask = send_until_answered(probe, node, topic, message, "mask")
    assert (mask.encoding, mask.width, mask.height) == ("mono8", width, height)
    labels = np.frombuffer(bytes(mask.data), np.uint8).reshape(height, mask.step)[:, :width]
    assert labels.max() < len(PROMPTS)

    confidence = send_until_answered(probe, node, topic, message, "confidence")
    assert (confidence.encoding, confidence.width, confidence.height) == ("32FC1", width, height)
    values = np.frombuffer(bytes(confidence.data), np.float32)
    assert values.size == width * height and 1.0 / len(PROMPTS) - 1e-4 <= values.min() and values.max() <= 1.0 + 1e-6

    from clip_dinoiser_ros.msg import ClassConfidences

    summary = send_until_answered(probe, node, topic, message, "class_confidences", ClassConfidences)
    assert list(summary.labels) == ["background", "road", "traffic light", "car"]
    assert summary.vocabulary_version >= 1
    assert sum(summary.coverage) == pytest.approx(1.0, abs=1e-4)
    for coverage, mean, best in zip(summary.coverage, summary.mean_confidence, summary.max_confidence):
        assert 0 <= coverage <= 1 and 0 <= mean <= best + 1e-6 <= 1 + 1e-6
        assert (coverage > 0) == (mean > 0)


def test_overlay_and_per_class_topics_are_published_while_subscribed(node, probe):
    message = rgb_message(camvid_frames(2)[1], "camvid")
    overlay = send_until_answered(probe, node, TOPICS["camvid"], message, "overlay")
    assert (overlay.encoding, overlay.width, overlay.height) == ("rgb8", 480, 360)
    per_class = send_until_answered(probe, node, TOPICS["camvid"], message, "confidence/traffic_light")
    assert (per_class.encoding, per_class.width, per_class.height) == ("32FC1", 480, 360)
    probabilities = np.frombuffer(bytes(per_class.data), np.float32)
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0 + 1e-6


def test_late_subscriber_gets_the_vocabulary_at_once(node, probe):
    from clip_dinoiser_ros.msg import LabelInfo

    wait_until(lambda: probe.node.count_publishers("/camvid/segmentation/label_info") > 0, 30, "label_info publisher")
    late = probe.collect(LabelInfo, "/camvid/segmentation/label_info", LATCHED)
    info = wait_until(late.last, 10, "latched label_info")
    assert list(info.class_names) == ["background", "road", "traffic light", "car"]
    assert list(info.class_ids) == [0, 1, 2, 3]
    assert info.vocabulary_version >= 1 and info.threshold == 0.0


def test_diagnostics_report_each_camera(node, probe):
    from diagnostic_msgs.msg import DiagnosticArray

    collector = probe.collect(DiagnosticArray, "/diagnostics")
    expected = {f"clip_dinoiser: {topic}" for topic in TOPICS.values()}

    def ours():  # /diagnostics is shared by every node of the domain
        found = collector.matching(lambda a: {status.name for status in a.status} == expected)
        return found[-1] if found else None

    array = wait_until(ours, 10, f"diagnostics with the statuses {expected}")
    values = {kv.key: kv.value for kv in array.status[0].values}
    for key in ("input_rate_hz", "output_rate_hz", "frames_dropped", "latency_p50_ms", "latency_p95_ms",
                "device", "precision", "vocabulary"):
        assert key in values
    assert values["device"] == "cpu" and values["random_weights"] == "true"
