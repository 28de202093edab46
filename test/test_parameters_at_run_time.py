"""Every parameter set at run time with the real ``ros2 param set``, and checked to do what its "applies" column
says: live ones change the next outputs, reactivate ones the next activate (``ros2 lifecycle set``), reconfigure
ones the next configure, start-only ones are refused with the reason. One node process for the whole module;
the CLI calls of a step run side by side (each ``ros2`` call costs seconds of Python start-up)."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from clip_dinoiser_ros.ros.parameters import LIVE, REACTIVATE, RECONFIGURE, SPECS, START
from node_frames import rgb_message, synthetic_rgb
from ros2_cli import lifecycle_set, ros2, stop_daemon
from ros_harness import NodeProcess, answer_to, wait_until

NODE = "/clip_dinoiser"
FIRST, SECOND = "/rt_first/image_raw", "/rt_second/image_raw"
TINY = {"clip_model": "ViT-Tiny-16-test", "random_weights": True, "device": "cpu", "precision": "fp32"}
STARTED_WITH = {"image_topics": [FIRST], "prompts": ["road", "car"], "short_side": 32, "templates": "none",
                "embedding_cache": False, **TINY}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# What each parameter is set to (ros2 param set's YAML); the checks below say what each must change.
LIVE_VALUES = {"short_side": "32", "confidence_threshold": "0.25", "confidence_encoding": "mono8",
               "prompts": "[sky, tree, road]", "background": "'on'", "min_object_pixels": "16777216",
               "max_prompts": "3", "max_prompt_length": "10", "mode": "slide", "max_depth_m": "5.0",
               "max_rate_hz": "100.0", "batch_cameras": "'off'", "gamma": "0.1", "delta": "0.9", "depth_scale": "0.0005"}
# FIRST stays subscribed: its reliability changes on the same topic (rclpy keeps a read-only QoS override of a
# topic's first subscription, which once froze input_reliability at its first value).
REACTIVATE_VALUES = {"image_topics": f"[{SECOND}, {FIRST}]", "input_reliability": "reliable",
                     "camera_info_topics": "[/rt_info, '']", "depth_topics": "[/rt_depth, '']", "sync": "approximate",
                     "sync_slop_s": "0.05", "sync_wait_s": "0.2", "sync_queue_size": "5"}
RECONFIGURE_VALUES = {"clip_model": "NoSuchModel-test", "templates": "simple", "embedding_cache": "true",
                      "precision": "fp32", "device": "cpu", "clip_pretrained": "openai", "heads": "/no/heads.pt",
                      "random_weights": "true", "backend": "torch"}
# Checked by the acknowledgement only: an effect the tiny model would not show reliably (gamma, delta, mode),
# timing (max_rate_hz), or one camera (batch_cameras).


def another_value(name: str) -> str:
    """A valid value for a parameter this module names no value for (one added since): its default."""
    default = SPECS[name].default
    return str(default).lower() if isinstance(default, bool) else str(default)


@pytest.fixture(scope="module")
def node(tmp_path_factory, probe):
    process = NodeProcess(tmp_path_factory.mktemp("run_time"), STARTED_WITH)
    try:
        wait_until(lambda: "active on" in process.log() or not process.alive(), 300, "the node active")
        assert process.alive(), process.log()
        yield process
    finally:
        status = process.stop()
        stop_daemon()
    assert status == 0, process.log()


def param_set(changes: dict[str, str]) -> dict[str, str]:
    """``ros2 param set`` for each change, side by side: what each printed."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = pool.map(lambda item: ros2("param", "set", NODE, *item).stdout, changes.items())
        return dict(zip(changes, outputs))


def accepted(changes: dict[str, str]) -> None:
    refused = {name: output for name, output in param_set(changes).items() if "Set parameter successful" not in output}
    assert not refused, refused


def unlisted(applies: str, listed: dict[str, str]) -> dict[str, str]:
    return {name: another_value(name) for name, spec in SPECS.items() if spec.applies == applies and name not in listed}


def frame_output(probe, node, camera: str, output: str, message_type, width: int = 64, height: int = 48):
    return answer_to(probe, node, rgb_message(synthetic_rgb(width, height)), camera,
                     camera.replace("image_raw", f"segmentation/{output}"), message_type, timeout=60)


def test_live_parameters_change_the_next_outputs(node, probe):
    labels = probe.collect(LabelInfo, "/rt_first/segmentation/label_info", LATCHED)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    try:
        confidence = frame_output(probe, node, FIRST, "confidence", Image)
        assert confidence.encoding == "32FC1" and np.frombuffer(confidence.data, np.float32).std() > 0.01
        assert frame_output(probe, node, FIRST, "detections", Detection2DArray).detections  # 50 px regions exist
        assert wait_until(labels.last, 10, "label_info").threshold == 0.0

        accepted({**LIVE_VALUES, **unlisted(LIVE, LIVE_VALUES)})
        wait_until(lambda: "vocabulary v2 active" in node.log(), 60, "the new prompts encoded")
        confidence = frame_output(probe, node, FIRST, "confidence", Image)
        assert confidence.encoding == "mono8"  # confidence_encoding
        assert frame_output(probe, node, FIRST, "detections", Detection2DArray).detections == []  # min_object_pixels
        names = lambda: [c.class_name for c in labels.last().class_map]  # noqa: E731
        wait_until(lambda: names() == ["sky", "tree", "road"], 10, "the new label_info")
        assert labels.last().threshold == 0.25

        def background_on():
            statuses = [s for m in diagnostics.matching(lambda _: True) for s in m.status]
            return any(v.key == "background_filtering" and v.value == "true" for s in statuses for v in s.values)
        wait_until(background_on, 10, "background_filtering true in /diagnostics")

        answers = param_set({"prompts": "[a, b, c, d]", "max_prompt_length": "2", "short_side": "16"})
        assert "exceed max_prompts=3" in answers["prompts"], answers["prompts"]
        assert "Setting parameter failed: max_prompt_length" in answers["max_prompt_length"]
        assert "Set parameter successful" in answers["short_side"]
        # the same pixels, only short_side changed since: the model saw them at another size
        assert frame_output(probe, node, FIRST, "confidence", Image).data != confidence.data

        accepted({"max_image_pixels": "100"})
        publisher = probe.node.create_publisher(Image, FIRST, 10)
        try:
            def rejected():
                publisher.publish(rgb_message(synthetic_rgb(64, 48)))
                return "frame rejected" in node.log()
            wait_until(rejected, 30, "a frame over max_image_pixels rejected", interval=0.3)
        finally:
            probe.node.destroy_publisher(publisher)
    finally:
        probe.node.destroy_subscription(labels.subscription)
        probe.node.destroy_subscription(diagnostics.subscription)


def subscription_block(topic: str) -> str:
    """The clip_dinoiser subscription's part of ``ros2 topic info -v TOPIC``."""
    blocks = ros2("topic", "info", "-v", topic).stdout.split("\n\n")
    ours = [b for b in blocks if "Node name: clip_dinoiser" in b and "Endpoint type: SUBSCRIPTION" in b]
    return ours[0] if ours else ""


def test_reactivate_parameters_take_effect_at_the_next_activate(node, probe):
    accepted({**REACTIVATE_VALUES, **unlisted(REACTIVATE, REACTIVATE_VALUES), "max_image_pixels": "16777216"})
    for name in [*REACTIVATE_VALUES, *unlisted(REACTIVATE, REACTIVATE_VALUES)]:
        assert f"{name} takes effect on the next activate" in node.log()
    assert probe.node.count_subscribers(FIRST) == 1 and probe.node.count_subscribers(SECOND) == 0  # not yet
    assert "Reliability: BEST_EFFORT" in subscription_block(FIRST)

    lifecycle_set(NODE, "deactivate", "Transitioning successful", "inactive", node)
    lifecycle_set(NODE, "activate", "Transitioning successful", "active", node)
    for topic in (SECOND, FIRST):
        wait_until(lambda: "Reliability: RELIABLE" in subscription_block(topic), 30, f"{topic} subscribed reliable")
    for topic in ("/rt_info", "/rt_depth"):
        wait_until(lambda: probe.node.count_subscribers(topic) == 1, 20, f"{topic} subscribed")
    wait_until(lambda: probe.node.count_publishers("/rt_second/segmentation/points") == 1, 20, "the cloud output")
    assert frame_output(probe, node, SECOND, "mask", Image)  # max_image_pixels is back to its default


def test_reconfigure_parameters_take_effect_at_the_next_configure(node, probe):
    accepted({**RECONFIGURE_VALUES, **unlisted(RECONFIGURE, RECONFIGURE_VALUES)})
    for name in [*RECONFIGURE_VALUES, *unlisted(RECONFIGURE, RECONFIGURE_VALUES)]:
        assert f"{name} takes effect on the next configure" in node.log()
    assert frame_output(probe, node, SECOND, "mask", Image)  # the model in use is still the tiny one

    lifecycle_set(NODE, "deactivate", "Transitioning successful", "inactive", node)
    lifecycle_set(NODE, "cleanup", "Transitioning successful", "unconfigured", node)
    lifecycle_set(NODE, "configure", "Transitioning failed", "unconfigured", node)
    wait_until(lambda: "configure failed" in node.log() and "NoSuchModel-test" in node.log(), 20, "the reason")
    accepted({"clip_model": "ViT-Tiny-16-test"})
    lifecycle_set(NODE, "configure", "Transitioning successful", "inactive", node)
    assert "configured ViT-Tiny-16-test (simple templates)" in node.log()
    lifecycle_set(NODE, "activate", "Transitioning successful", "active", node)


def test_start_only_parameters_are_refused_at_run_time_with_the_reason(node):
    starts = [name for name, spec in SPECS.items() if spec.applies == START]
    assert "autostart" in starts
    answers = param_set({name: "false" if SPECS[name].default is True else "true" for name in starts})
    for name, answer in answers.items():
        assert f"Setting parameter failed: {name}" in answer and "read at start only" in answer, answer
    assert "Set parameter successful" in ros2("param", "set", NODE, "autostart", "true").stdout  # unchanged: fine


def test_every_parameter_is_set_by_one_of_these_tests():
    named = {*LIVE_VALUES, *REACTIVATE_VALUES, *RECONFIGURE_VALUES}
    assert all(SPECS[name].applies == applies for values, applies in
               ((LIVE_VALUES, LIVE), (REACTIVATE_VALUES, REACTIVATE), (RECONFIGURE_VALUES, RECONFIGURE))
               for name in values)
    assert {spec.applies for spec in SPECS.values()} <= {LIVE, REACTIVATE, RECONFIGURE, START}
    assert named <= set(SPECS)
