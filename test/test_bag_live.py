"""clip-dinoiser-bag play and record against a live clip_dinoiser node, over real DDS.

The node runs with use_sim_time and the player publishes /clock, as a user replays a drive. How many
masks a play gives depends on how fast this CPU segments; the tests compare them with the node's own
figures in /diagnostics (frames received, published, dropped; latency), never with a fixed share.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from clip_dinoiser_ros.bag.reading import messages, open_bag
from clip_dinoiser_ros.cli.bag import main
from clip_dinoiser_ros.ros.frame_mailbox import POLL_S
from frame_sources import shared_data_dir
from node_diagnostics import idle_figures
from paced_node import PacedNode
from ros_harness import LoggedProcess, parameter_client, set_parameter, wait_until
from test_bag_tool import write_frames

BAG_CLI = str(Path(sys.executable).parent / "clip-dinoiser-bag")
NODE = {"image_topics": ["/cam/image_raw"], "prompts": ["sky", "road", "car"], "clip_model": "ViT-Tiny-16-test",
        "random_weights": True, "short_side": 32, "use_sim_time": True, "input_reliability": "reliable"}
OUTPUTS = ["/cam/segmentation/mask", "/cam/segmentation/label_info", "/gt", "/diagnostics"]
CAMERA = "/cam/image_raw"


def bag(directory: Path, count: int, rate: float, size=(64, 48), labels: bool = True) -> Path:
    root = write_frames(directory, count, size, labels)
    out = directory / "bag"
    extra = ["--labels", str(root / "labels"), "--label-topic", "/gt"] if labels else []
    assert main(["from-images", str(root / "images"), "--topic", "/cam/image_raw", "--rate", str(rate), *extra,
                 "--start", "100", "--out", str(out)]) == 0
    return out


def count(path: Path, topic: str) -> int:
    with open_bag(path) as reader:
        return sum(1 for _ in messages(reader, [topic]))


def record(directory: Path, name: str) -> LoggedProcess:
    recorder = LoggedProcess([BAG_CLI, "record", "--topics", *OUTPUTS, "--out", str(directory / name)],
                             directory / f"{name}.log")
    wait_until(lambda: "recording /cam/segmentation/mask" in recorder.log(), 60, "the recorder subscribed")
    time.sleep(2.0)  # the node matches the new reader by discovery, a moment after it exists
    return recorder


def play(directory: Path, source: Path, *options: str) -> None:
    player = LoggedProcess([BAG_CLI, "play", str(source), "--clock", "--delay", "10", *options],
                           directory / "play.log")
    assert player.wait(120) == 0, player.log()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    directory = tmp_path_factory.mktemp("live_node")
    process = PacedNode(directory, NODE)  # at the model's own speed; its log shows when a frame is in progress
    try:
        wait_until(lambda: "active on" in process.log(), 120, "the node active")
        yield process
    finally:
        assert process.stop() == 0, process.log()


def figures(probe, node: PacedNode, action) -> tuple[dict[str, float], dict[str, float]]:
    """The camera's figures before and after ``action``, each once the node is idle."""
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")

    def busy() -> bool:
        return node.frames_started() != node.frames_finished()

    try:
        before = idle_figures(diagnostics, [CAMERA], node.alive, busy)[CAMERA]
        action()
        after = idle_figures(diagnostics, [CAMERA], node.alive, busy)[CAMERA]
    finally:
        probe.node.destroy_subscription(diagnostics.subscription)
    return before, after


def test_play_into_the_node_record_it_and_eval_the_recording(node, probe, tmp_path):
    source = bag(tmp_path, 45, 15.0)
    recorder = record(tmp_path, "recorded")
    before, after = figures(probe, node, lambda: play(tmp_path, source, "--topics", CAMERA, "/gt", "--rate", "0.5"))
    assert recorder.stop() == 0, recorder.log()
    recorded = tmp_path / "recorded"
    masks = count(recorded, "/cam/segmentation/mask")
    received, published, dropped = (after[k] - before[k] for k in ("frames_received", "frames_published",
                                                                   "frames_dropped"))
    print(f"45 frames played: {received:.0f} received, {published:.0f} published, {dropped:.0f} dropped; "
          f"{masks} masks recorded")
    # Every frame the node received (its input keeps only the latest) is published or dropped (as fast as
    # this CPU segments), and every mask published is recorded.
    assert 0 < received <= 45 and published + dropped == received and masks == published > 0, recorder.log()
    assert count(recorded, "/cam/segmentation/label_info") == 1  # one class map: sent once, with the first mask
    assert count(recorded, "/diagnostics") >= 1
    classes = tmp_path / "classes.txt"
    classes.write_text("sky\nroad\ncar\n")
    assert main(["eval", str(recorded), "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt",
                 "--classes", str(classes), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["meta"]["frames_matched"] == masks and report["meta"]["frames_without_ground_truth"] == 0


def test_max_rate_counts_in_the_played_bags_time(node, probe, tmp_path):
    """5 Hz of bag time: a 3 s bag played at half its speed (6 s) gives at most 16 masks, where a wall-clock
    limit would give up to 30; how close it comes to 16 depends on how long this CPU takes per frame, which
    the node measures (its latency from receiving a frame to publishing it)."""
    rate_hz, frames, bag_hz, play_rate = 5.0, 45, 15.0, 0.5
    bag_s = (frames - 1) / bag_hz
    client = parameter_client(probe, "/clip_dinoiser")
    assert set_parameter(client, "max_rate_hz", rate_hz).successful
    try:
        source = bag(tmp_path, frames, bag_hz, labels=False)
        recorder = record(tmp_path, "limited")
        _, after = figures(probe, node, lambda: play(tmp_path, source, "--rate", str(play_rate)))
        assert recorder.stop() == 0, recorder.log()
        masks = count(tmp_path / "limited", "/cam/segmentation/mask")
        # A mask at most every 1/rate_hz of bag time (+1: the first; +1: /clock and stamps a frame apart); at
        # least one per interval plus a frame's work, the wait for the next frame and the limit's poll (wall time).
        interval_s, frame_s = 1.0 / rate_hz / play_rate, 1.0 / bag_hz / play_rate
        work_s = after["latency_p95_ms"] / 1000.0
        fewest = 1 + int(bag_s / play_rate / (interval_s + work_s + frame_s + POLL_S))
        print(f"max_rate_hz {rate_hz:g}, played at {play_rate:g}: {masks} masks; frame work p95 {work_s:.3f} s, "
              f"so at least {fewest}")
        assert fewest <= masks <= bag_s * rate_hz + 2, (masks, node.log()[-3000:])
    finally:
        set_parameter(client, "max_rate_hz", 0.0)


def test_play_keeps_the_recorded_rate_within_5_percent_over_20_s(probe, tmp_path):
    source = bag(tmp_path, 301, 15.0, size=(32, 24), labels=False)
    collector = probe.collect(Image, "/elsewhere/image_raw")
    try:
        play(tmp_path, source, "--remap", "/cam/image_raw:=/elsewhere/image_raw")
        arrivals = [arrival for _, arrival in collector.messages]
    finally:
        probe.node.destroy_subscription(collector.subscription)
    assert len(arrivals) == 301
    assert np.diff(arrivals).sum() == pytest.approx(20.0, rel=0.05)


def test_loop_replays_until_ctrl_c(probe, tmp_path):
    source = bag(tmp_path, 10, 30.0, size=(32, 24), labels=False)
    collector = probe.collect(Image, "/cam/image_raw")
    player = LoggedProcess([BAG_CLI, "play", str(source), "--loop"], tmp_path / "loop.log")
    try:
        wait_until(lambda: len(collector.messages) >= 25, 60, "three rounds of a 10-frame bag")
    finally:
        probe.node.destroy_subscription(collector.subscription)
        status = player.stop()
    assert status == 130, player.log()


def test_record_stops_by_itself_after_duration_with_a_valid_bag(tmp_path):
    recorder = LoggedProcess([BAG_CLI, "record", "--topics", "/nobody/publishes", "--duration", "1.5",
                              "--out", str(tmp_path / "empty")], tmp_path / "record.log")
    assert recorder.wait(60) == 0, recorder.log()
    assert count(tmp_path / "empty", "/nobody/publishes") == 0  # opens: metadata and summary written


SPOT = shared_data_dir() / "bags" / "spot_compressed.bag"


@pytest.mark.skipif(not SPOT.exists(), reason=f"{SPOT} is absent (real data, not in the repository)")
def test_a_ros1_bag_plays_as_ros2_messages(probe, tmp_path):
    from sensor_msgs.msg import CompressedImage

    topic = "/spot/camera/hand_color/image/compressed"
    collector = probe.collect(CompressedImage, topic)
    try:
        player = LoggedProcess([BAG_CLI, "play", str(SPOT), "--topics", topic, "--delay", "10"],
                               tmp_path / "play.log")
        assert player.wait(60) == 0, player.log()
        wait_until(lambda: collector.messages, 10, "the frame")
    finally:
        probe.node.destroy_subscription(collector.subscription)
    with open_bag(SPOT) as reader:
        (recorded,) = [item.message for item in messages(reader, [topic])]
    played = collector.last()
    assert (played.format, played.header.frame_id, played.header.stamp.sec, played.header.stamp.nanosec) == \
           (recorded.format, recorded.header.frame_id, recorded.header.stamp.sec, recorded.header.stamp.nanosec)
    assert bytes(played.data) == bytes(recorded.data)
