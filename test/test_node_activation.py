"""Activation is all or nothing: topics that cannot all be created fail ``activate`` with the reason, and
no publisher, subscription or thread of the attempt stays behind; the node stays inactive and usable.

Driven like a user would: ``ros2 param set`` for the topics (they apply on the next activate) and
``ros2 lifecycle set``. The node runs in the namespace /act, so names meet only after resolution.
"""
import pytest
from sensor_msgs.msg import Image

from node_frames import rgb_message, synthetic_rgb
from ros2_cli import lifecycle_set, ros2, stop_daemon, wait_for_state
from ros_harness import NodeProcess, publish_until_answered, wait_until

NODE = "/act/clip_dinoiser"
GOOD = "/act_good/image_raw"


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    process = NodeProcess(tmp_path_factory.mktemp("activation"), {
        "image_topics": [GOOD], "prompts": ["road", "car"], "clip_model": "ViT-Tiny-16-test", "random_weights": True,
    }, "-r", "__ns:=/act")
    try:
        wait_for_state(NODE, "active")
        yield process
    finally:
        status = process.stop()
        stop_daemon()
    assert status == 0, process.log()
    assert "Traceback" not in process.log()


def graph_topics(probe) -> set[str]:
    return {name for name, _ in probe.node.get_topic_names_and_types()}


def inactive_with(node, topics) -> int:
    """Deactivate, set ``topics`` (accepted: they apply on activate); the thread count when inactive."""
    if "active [3]" in ros2("lifecycle", "get", NODE).stdout:
        lifecycle_set(NODE, "deactivate", "Transitioning successful", "inactive", node)
    value = "[" + ", ".join(f"'{t}'" for t in topics) + "]"
    result = ros2("param", "set", NODE, "image_topics", value)
    assert "Set parameter successful" in result.stdout, result.stdout
    return node.threads()


@pytest.mark.parametrize("topics,reason", [
    (["/front/image_raw", "/front/image_raw/compressed"], "would both use /front/segmentation/mask"),
    (["cam/image_raw", "/act/cam/image_raw"], "would both use /act/cam/image_raw"),  # only after namespacing
    (["{foo}/image_raw"], "unknown substitution: {foo}"),  # malformed only once expanded
])
def test_failed_activation_leaves_nothing_behind(node, probe, topics, reason):
    before_topics = graph_topics(probe)
    threads = inactive_with(node, topics)
    lifecycle_set(NODE, "activate", "Transitioning failed", "inactive", node)
    wait_until(lambda: reason in node.log(), 10, f"the reason {reason!r} in the log")
    assert "activate failed, staying inactive" in node.log()
    leftovers = {t for t in graph_topics(probe) - before_topics if "segmentation" in t or "image_raw" in t}
    assert not leftovers, leftovers
    for topic in ("/front/image_raw", "/front/image_raw/compressed", "/act/cam/image_raw"):
        assert probe.node.count_subscribers(topic) == 0
    assert node.threads() == threads, "a thread of the failed activation is still running"

    inactive_with(node, [GOOD])
    lifecycle_set(NODE, "activate", "Transitioning successful", "active", node)
    collector = probe.collect(Image, "/act_good/segmentation/mask")
    publisher = probe.node.create_publisher(Image, GOOD, 10)
    publish_until_answered(node, publisher, collector, rgb_message(synthetic_rgb(64, 48)))


def test_malformed_names_are_refused_when_set(node):
    result = ros2("param", "set", NODE, "image_topics", "['bad name']")
    assert "Setting parameter failed: image_topics: ['bad name'] is refused" in result.stdout, result.stdout
    assert "not a valid topic name" in result.stdout
