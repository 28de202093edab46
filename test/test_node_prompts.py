"""Live prompt changes from another process: parameters (as `ros2 param set`) and ~/set_prompts."""
import os
import time

import pytest
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import LabelInfo

from node_frames import rgb_message, synthetic_rgb
from ros_harness import NodeProcess, answer_to, parameter_client, running_node, set_parameter, wait_until

TOPIC = "/prompts_cam/image_raw"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("prompts"), {
        "image_topics": [TOPIC],
        "prompts": ["floor", "wall"],
        "max_prompts": 6,
        "max_prompt_length": 40,
        "clip_model": "ViT-Tiny-16-test",
        "random_weights": True,
    }) as process:
        yield process


@pytest.fixture(scope="module")
def parameters(probe, node):
    return parameter_client(probe, "clip_dinoiser")


def set_prompts_parameter(client, value, type_=Parameter.Type.STRING_ARRAY):
    return set_parameter(client, "prompts", value, type_)


@pytest.fixture(scope="module")
def label_info(probe, node):
    return probe.collect(LabelInfo, "/prompts_cam/segmentation/label_info", LATCHED)


def class_names(info):
    return [c.class_name for c in info.class_map]


def current_vocabulary(label_info):
    return wait_until(label_info.last, 30, "label_info")


def segment_once(probe, node):
    """The per-class summary of one fresh frame: its labels and vocabulary_version are the ones in effect."""
    from clip_dinoiser_ros.msg import ClassConfidences

    return answer_to(probe, node, rgb_message(synthetic_rgb(64, 48)), TOPIC,
                     "/prompts_cam/segmentation/class_confidences", ClassConfidences)


def wait_for_vocabulary(probe, node, label_info, names, timeout=60, version=None):
    """Wait until ``names`` (at ``version``) are in effect: frames carry them and label_info names them.

    LabelInfo goes out with the first frame of a new vocabulary, so frames are sent first.
    """
    def current():
        summary = segment_once(probe, node)
        if list(summary.labels) != names or version not in (None, summary.vocabulary_version):
            return None
        return summary if class_names(current_vocabulary(label_info)) == names else None

    return wait_until(current, timeout, f"vocabulary {names} (version {version})", interval=0.3)


def apply_prompts(probe, node, label_info, names):
    """Set prompts through ~/set_prompts and wait until exactly that request is in effect."""
    from clip_dinoiser_ros.srv import SetPrompts

    client = probe.node.create_client(SetPrompts, "/clip_dinoiser/set_prompts")
    response = probe.call(client, SetPrompts.Request(prompts=names))
    assert response.success, response.message
    return wait_for_vocabulary(probe, node, label_info, names, version=response.vocabulary_version)


def test_parameter_change_applies_like_ros2_param_set(probe, node, parameters, label_info):
    before = wait_for_vocabulary(probe, node, label_info, ["floor", "wall"]).vocabulary_version
    result = set_prompts_parameter(parameters, ["floor", "chair|seat", "person"])
    assert result.successful, result.reason
    summary = wait_for_vocabulary(probe, node, label_info, ["floor", "chair", "person"])
    assert summary.vocabulary_version > before


@pytest.mark.parametrize(
    "value,type_,reason",
    [
        ([], Parameter.Type.STRING_ARRAY, "empty"),
        (["floor", "   "], Parameter.Type.STRING_ARRAY, "empty"),
        (["floor", "Floor"], Parameter.Type.STRING_ARRAY, "duplicate"),
        ([f"class {i}" for i in range(7)], Parameter.Type.STRING_ARRAY, "max_prompts"),
        (["x" * 41], Parameter.Type.STRING_ARRAY, "characters long"),
        (3, Parameter.Type.INTEGER, "not a string array"),
    ],
)
def test_invalid_prompts_are_rejected_with_a_reason_and_the_old_vocabulary_stays(probe, node, parameters, label_info,
                                                                                 value,
                                                                                 type_, reason):
    good = ["road", "car"]
    version = apply_prompts(probe, node, label_info, good).vocabulary_version
    result = set_prompts_parameter(parameters, value, type_)
    assert not result.successful
    assert reason in result.reason
    summary = segment_once(probe, node)  # a frame after the refusal: a change would show in it
    assert list(summary.labels) == good and summary.vocabulary_version == version
    assert class_names(current_vocabulary(label_info)) == good


def test_set_prompts_service_applies_and_keeps_the_parameter_in_sync(probe, node, parameters, label_info):
    from clip_dinoiser_ros.srv import SetPrompts

    info = apply_prompts(probe, node, label_info, ["sky", "tree", "traffic light"])
    future = parameters.get_parameters(["prompts"])
    wait_until(future.done, 10, "get_parameters")
    assert list(future.result().values[0].string_array_value) == ["sky", "tree", "traffic light"]

    client = probe.node.create_client(SetPrompts, "/clip_dinoiser/set_prompts")
    rejected = probe.call(client, SetPrompts.Request(prompts=["sky", ""]))
    assert not rejected.success and "empty" in rejected.message
    assert rejected.vocabulary_version == info.vocabulary_version


def test_per_class_topics_follow_the_vocabulary(probe, node, parameters):
    """Of the class topics somebody subscribes to, those of the vocabulary's classes are published."""
    topics = {token: f"/prompts_cam/segmentation/confidence/{token}" for token in ("traffic_light", "bus", "bicycle")}
    subscriptions = [probe.collect(Image, topic) for topic in topics.values()]

    def class_topics():
        return {token for token, topic in topics.items() if probe.node.count_publishers(topic)}

    try:
        assert set_prompts_parameter(parameters, ["traffic light", "bus"]).successful
        wait_until(lambda: class_topics() == {"traffic_light", "bus"}, 20, "class topics for the new vocabulary")
        assert set_prompts_parameter(parameters, ["bus", "bicycle"]).successful
        wait_until(lambda: class_topics() == {"bus", "bicycle"}, 20, "traffic_light topic removed, bicycle added")
    finally:
        for subscription in subscriptions:
            probe.node.destroy_subscription(subscription.subscription)


def test_prompt_spam_ends_with_the_last_vocabulary_and_the_node_keeps_serving(probe, node, parameters, label_info):
    futures = []
    started = time.monotonic()
    for i in range(50):
        futures.append(parameters.set_parameters(
            [Parameter("prompts", Parameter.Type.STRING_ARRAY, [f"object {i}", f"thing {i}"])]
        ))
    wait_until(lambda: all(f.done() for f in futures), 30, "50 answers")
    assert time.monotonic() - started < 10
    assert all(f.result().results[0].successful for f in futures)
    wait_for_vocabulary(probe, node, label_info, ["object 49", "thing 49"], timeout=60)
    assert node.alive()


def test_a_restarted_node_takes_its_prompts_from_the_embedding_cache(ros, tmp_path):
    """The second start with the same prompts encodes nothing; a new prompt is the only one encoded."""
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    parameters = {"image_topics": ["/restart_cam/image_raw"], "clip_model": "ViT-Tiny-16-test", "random_weights": True}
    expected = {
        ("first", ("floor", "wall|partition")): "0 from the embedding cache, 3 encoded",
        ("restarted", ("floor", "wall|partition")): "3 from the embedding cache, 0 encoded",
        ("grown", ("floor", "wall|partition", "door")): "3 from the embedding cache, 1 encoded",
    }
    for (run, prompts), texts in expected.items():
        node = NodeProcess(tmp_path / run, {**parameters, "prompts": list(prompts)}, env=environment)
        try:
            wait_until(lambda: "vocabulary v1:" in node.log() or not node.alive(), 120, "the first vocabulary")
            log = node.log()
        finally:
            assert node.stop() == 0, node.log()
        assert f"(prompt texts since start: {texts})" in log, log
    assert list((tmp_path / "cache" / "clip_dinoiser_ros" / "text_embeddings").glob("*.npz"))
