"""Per-class confidence topics exist only while somebody subscribes: 100 prompts x 4 cameras cost no writers and
no parameters until a class is asked for, and vocabularies that come and go leave nothing declared behind."""
import pytest
from sensor_msgs.msg import Image

from node_frames import rgb_message, synthetic_rgb
from ros_harness import NodeProcess, parameter_client, set_parameter, wait_until

CAMERAS = [f"/lazy{index}/image_raw" for index in range(4)]
TINY = {"clip_model": "ViT-Tiny-16-test", "random_weights": True, "templates": "none", "short_side": 32}


def vocabulary(prefix: str) -> list[str]:
    return [f"{prefix} thing {index:03d}" for index in range(100)]


@pytest.fixture(scope="module")
def node(tmp_path_factory, probe):
    node = NodeProcess(tmp_path_factory.mktemp("lazy"), {"image_topics": CAMERAS, "prompts": vocabulary("first"),
                                                        "embedding_cache": False, **TINY})
    try:
        wait_until(lambda: node.alive() and "active on" in node.log() or not node.alive(), 300, "the node active")
        assert node.alive(), node.log()
        # discovered: the label_info publishers of all four cameras are in the probe's graph
        wait_until(lambda: len([t for t, _ in writers(probe) if t.endswith("/label_info")]) == 4, 30, "discovery")
        yield node
    finally:
        status = node.stop()
    assert status == 0, node.log()


def writers(probe) -> list[tuple[str, list[str]]]:
    return probe.node.get_publisher_names_and_types_by_node("clip_dinoiser", "/")


def parameter_names(probe) -> list[str]:
    future = parameter_client(probe, "/clip_dinoiser").list_parameters([], 0)
    wait_until(future.done, 30, "list_parameters answer")
    return list(future.result().result.names)


def class_writers(probe) -> list[str]:
    return [topic for topic, _ in writers(probe) if "/segmentation/confidence/" in topic]


def switch(probe, node, prompts: list[str], version: int) -> None:
    result = set_parameter(parameter_client(probe, "/clip_dinoiser"), "prompts", prompts)
    assert result.successful, result.reason
    wait_until(lambda: f"vocabulary v{version} active" in node.log(), 120, f"vocabulary v{version} active")


def test_no_class_writer_or_parameter_until_subscribed_and_none_left_by_past_vocabularies(node, probe):
    first_writers, first_parameters = writers(probe), parameter_names(probe)
    assert class_writers(probe) == []
    assert not [name for name in first_parameters if "/confidence/" in name]
    for version, prefix in enumerate(["second", "third", "fourth"], start=2):
        switch(probe, node, vocabulary(prefix), version)
    assert sorted(parameter_names(probe)) == sorted(first_parameters)
    assert sorted(writers(probe)) == sorted(first_writers)


def test_a_class_subscribed_gets_maps_and_its_writer_goes_with_the_subscriber_or_the_class(node, probe):
    camera = CAMERAS[2]
    topic = "/lazy2/segmentation/confidence/fourth_thing_007"
    maps = probe.collect(Image, topic)
    frames = probe.node.create_publisher(Image, camera, 10)
    try:
        def a_map():
            frames.publish(rgb_message(synthetic_rgb(64, 48)))
            return maps.messages

        wait_until(a_map, 60, f"a map on {topic}", interval=0.3)
        assert class_writers(probe) == [topic]  # that class of that camera only
        assert maps.last().encoding == "32FC1"
        probe.node.destroy_subscription(maps.subscription)
        wait_until(lambda: class_writers(probe) == [], 30, f"the writer of {topic} gone with its subscriber")

        # subscribed, then the class leaves the vocabulary: its writer goes too, and comes back with the class
        maps = probe.collect(Image, topic)
        wait_until(lambda: class_writers(probe) == [topic], 30, f"the writer of {topic} back")
        switch(probe, node, vocabulary("fifth"), 5)
        wait_until(lambda: class_writers(probe) == [], 30, f"{topic} gone with its class")
        switch(probe, node, vocabulary("fourth"), 6)
        wait_until(lambda: class_writers(probe) == [topic], 30, f"the writer of {topic} back with its class")
    finally:
        probe.node.destroy_subscription(maps.subscription)
        probe.node.destroy_publisher(frames)
