"""Lifecycle transitions driven from another process, and a clean exit on SIGINT."""
import glob
import os
import re
import time

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image

from node_frames import rgb_message, synthetic_rgb
from ros_harness import NodeProcess, publish_until_answered, wait_until

TOPIC = "/lifecycle_cam/image_raw"
MASK = "/lifecycle_cam/segmentation/mask"


def transition(probe, transition_id):
    client = probe.node.create_client(ChangeState, "/clip_dinoiser/change_state")
    return probe.call(client, ChangeState.Request(transition=Transition(id=transition_id))).success


def state(probe):
    client = probe.node.create_client(GetState, "/clip_dinoiser/get_state")
    return probe.call(client, GetState.Request(), timeout=10.0, attempts=3).current_state.id


def serves_a_frame(probe, node, collector, publisher, timeout=20):
    try:
        publish_until_answered(node, publisher, collector, rgb_message(synthetic_rgb()), timeout)
        return True
    except AssertionError:
        return False


def service_names(probe):
    return {name for name, _ in probe.node.get_service_names_and_types()}


def test_transitions_start_stop_and_release(ros, probe, tmp_path):
    node = NodeProcess(tmp_path, {
        "image_topics": [TOPIC], "prompts": ["road", "car"], "clip_model": "ViT-Tiny-16-test",
        "random_weights": True, "autostart": False,
    })
    try:
        assert state(probe) == State.PRIMARY_STATE_UNCONFIGURED
        collector = probe.collect(Image, MASK)
        publisher = probe.node.create_publisher(Image, TOPIC, 10)

        assert transition(probe, Transition.TRANSITION_CONFIGURE)
        assert state(probe) == State.PRIMARY_STATE_INACTIVE
        wait_until(lambda: "/clip_dinoiser/set_prompts" in service_names(probe), 10, "set_prompts service")
        assert probe.node.count_subscribers(TOPIC) == 0

        assert transition(probe, Transition.TRANSITION_ACTIVATE)
        assert state(probe) == State.PRIMARY_STATE_ACTIVE
        assert serves_a_frame(probe, node, collector, publisher)

        assert transition(probe, Transition.TRANSITION_DEACTIVATE)
        assert state(probe) == State.PRIMARY_STATE_INACTIVE
        wait_until(lambda: probe.node.count_subscribers(TOPIC) == 0, 10, "input subscription removed")
        wait_until(lambda: probe.node.count_publishers(MASK) == 0, 10, "mask publisher removed")
        assert not serves_a_frame(probe, node, collector, publisher, timeout=3)

        assert transition(probe, Transition.TRANSITION_ACTIVATE)
        assert serves_a_frame(probe, node, collector, publisher)
        assert transition(probe, Transition.TRANSITION_DEACTIVATE)

        assert transition(probe, Transition.TRANSITION_CLEANUP)
        assert state(probe) == State.PRIMARY_STATE_UNCONFIGURED
        wait_until(lambda: "/clip_dinoiser/set_prompts" not in service_names(probe), 10, "set_prompts removed")

        assert transition(probe, Transition.TRANSITION_CONFIGURE)
        assert transition(probe, Transition.TRANSITION_ACTIVATE)
        assert serves_a_frame(probe, node, collector, publisher)

        assert transition(probe, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert node.wait(10) == 0, node.log()  # finalized: the process ends instead of spinning a dead node
    finally:
        assert node.stop() == 0, node.log()
    assert "Traceback" not in node.log()


# Fast DDS 3 (Kilted) names its segments fastdds_*, Fast DDS 2.14 (Jazzy) fastrtps_*.
SHM_PREFIXES = ("/dev/shm/fastdds_", "/dev/shm/fastrtps_")


def fastdds_segments() -> set[str]:
    """Fast DDS shared-memory segments (lock and semaphore files aside)."""
    return {p for prefix in SHM_PREFIXES for p in glob.glob(f"{prefix}*") if not p.endswith(("_el", "_sl"))}


def segments_in_use() -> set[str]:
    """Segments some live process still maps (our own probe's, other runs')."""
    used = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as handle:
                used.update(line.split()[-1] for line in handle if any(p in line for p in SHM_PREFIXES))
        except OSError:
            continue
    return used


def domain_segments(segments: set[str], domain: int) -> set[str]:
    """Those of ``segments`` a participant of ``domain`` owns: data segments, and ports numbered in the domain's
    range (7400 + 250 * domain onwards, as Fast DDS numbers them). A node also maps the ports of the peers it
    sends to; once in CI one of them was a stray port7001, of no domain, that no live process mapped."""
    low = 7400 + 250 * domain

    def owned(path: str) -> bool:
        port = re.fullmatch(r".*_port(\d+)", path)
        return port is None or low <= int(port.group(1)) < low + 250

    return {path for path in segments if owned(path)}


def segments_left_behind(node_segments: set[str], settle_s: float = 10.0) -> set[str]:
    """The node's segments that still exist while no process maps them, after peers have had time to let go.

    In Fast DDS the last process to release a port removes its segment: when the probe still sends to
    the node, the probe removes the node's ports after the node has exited, unmapping them just before
    it unlinks them (once in CI a check caught two in that gap). So use is read before presence, and the
    check waits for peers to let go; a real leak stays and is reported after ``settle_s``.
    """
    deadline = time.monotonic() + settle_s
    while True:
        in_use = segments_in_use()
        left = (node_segments & fastdds_segments()) - in_use
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_sigint_while_streaming_exits_cleanly_without_leftover_shared_memory(ros, probe, tmp_path):
    node = NodeProcess(tmp_path, {
        "image_topics": [TOPIC], "prompts": ["road", "car"], "clip_model": "ViT-Tiny-16-test", "random_weights": True,
    })
    try:
        check_clean_sigint(probe, node)
    finally:
        node.stop()


def check_clean_sigint(probe, node):
    collector = probe.collect(Image, MASK)
    publisher = probe.node.create_publisher(Image, TOPIC, 10)
    assert serves_a_frame(probe, node, collector, publisher, timeout=90)  # includes the node's start-up
    with open(f"/proc/{node.process.pid}/maps") as maps:
        node_segments = domain_segments({line.split()[-1] for line in maps if any(p in line for p in SHM_PREFIXES)},
                                        int(os.environ["ROS_DOMAIN_ID"]))
    assert node_segments, "the node should be using shared memory while streaming"
    for _ in range(20):
        publisher.publish(rgb_message(synthetic_rgb()))
    assert node.stop() == 0
    log = node.log()
    assert "Traceback" not in log, log
    assert not segments_left_behind(node_segments), "segments left behind in /dev/shm"


def test_missing_weights_fail_configure_with_the_fetch_instructions(ros, tmp_path):
    from clip_dinoiser_ros.model import DinoiserHeads, save_checkpoint

    save_checkpoint(DinoiserHeads(768), tmp_path / "last.pt", epoch=1)  # the heads are read before CLIP
    node = NodeProcess(tmp_path, {"image_topics": [TOPIC], "heads": str(tmp_path / "last.pt")})
    try:
        assert node.process.wait(120) == 1
    finally:
        node.stop()
    log = node.log()
    assert "configure failed" in log and "laion2b_s34b_b88k" in log and "open_clip.create_model" in log
    assert "Traceback" not in log
