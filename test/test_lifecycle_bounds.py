"""Lifecycle that always says why and never hangs, driven with the real ``ros2 lifecycle`` CLI.

The model is the real ViT-B/16 architecture (random weights), so that work is really long on this CPU:
a frame in slide mode at short side 896 (15 windows of 448) and a 100-class vocabulary (8000 prompts
through the text tower). Each transition is timed; the figure printed is the CLI call's wall time, and
the bound is 5 s of node time beyond what a ``ros2 lifecycle get`` costs on the same machine just before
or after (the CLI's own start-up varies with the load the abandoned work puts on a 2-core machine).
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from sensor_msgs.msg import Image

from node_frames import rgb_message, synthetic_rgb
from ros2_cli import lifecycle_state, ros2, stop_daemon, wait_for_state
from ros_harness import NodeProcess, wait_until

TOPIC = "/bounds_cam/image_raw"
BOUND_S = 5.0
# A frame of many seconds: 15 windows of 448 in fp32 (bf16 where native is ~2.5x faster)
SLOW = {"clip_model": "ViT-B-16", "random_weights": True, "mode": "slide", "short_side": 896, "precision": "fp32"}
HUNDRED = [f"object number {index}" for index in range(100)]
NODE = "/clip_dinoiser"


@pytest.fixture(scope="module", autouse=True)
def daemon():
    yield
    stop_daemon()


def cli_overhead() -> float:
    """What one ``ros2 lifecycle`` call costs here and now, without any transition."""
    started = time.monotonic()
    lifecycle_state(NODE)
    return time.monotonic() - started


def timed_transition(transition: str, prints: str = "Transitioning successful") -> float:
    """``ros2 lifecycle set`` once: its wall time, checked against the bound."""
    overhead = cli_overhead()
    started = time.monotonic()
    result = ros2("lifecycle", "set", NODE, transition, timeout=60)
    took = time.monotonic() - started
    if transition != "shutdown":  # the CLI's cost varies with the load: the dearer of before and after
        overhead = max(overhead, cli_overhead())
    print(f"ros2 lifecycle set {transition}: {took:.2f} s (a lifecycle get took {overhead:.2f} s)")
    assert prints in result.stdout, result.stdout
    assert took - overhead < BOUND_S, f"{transition} took {took:.1f} s, {overhead:.1f} s of it the CLI's own"
    return took


def set_prompts_cli(prompts: list[str]) -> None:
    result = ros2("param", "set", NODE, "prompts", f"[{', '.join(prompts)}]")
    assert "Set parameter successful" in result.stdout, result.stdout


def wait_for_log(node: NodeProcess, text: str, timeout: float = 120.0) -> None:
    wait_until(lambda: text in node.log() or not node.alive(), timeout, f"'{text}' in the node's log")
    assert node.alive(), node.log()


def frames_received(collector) -> int:
    """The most frames the node's diagnostics have counted for TOPIC (0 before any report)."""
    counts = [int(value.value) for array in collector.matching(lambda _: True) for status in array.status
              if status.name.endswith(TOPIC) for value in status.values if value.key == "frames_received"]
    return max(counts, default=0)


@contextmanager
def frames_flowing(probe, node: NodeProcess, publisher):
    """Frames every 0.3 s from once the node's diagnostics count one until the block ends, so a slow frame is
    being segmented whenever the block stops the node (the node keeps only the latest frame: it is never idle).

    Twice in CI every frame sent in the first seconds after activation was lost (seeing the node's subscription
    in the graph is not being matched with it); and on a CPU with native bf16 one slide frame at 896 took only
    ~3 s, less than a `ros2 lifecycle` call, so one frame sent was no longer being segmented when it came.
    """
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            publisher.publish(rgb_message(synthetic_rgb(640, 480)))
            stop.wait(0.3)

    sender = threading.Thread(target=send, name="camera", daemon=True)
    sender.start()
    try:
        def received() -> bool:
            assert node.alive(), node.log()
            return frames_received(diagnostics) > 0

        wait_until(received, 90, "a frame counted by the node's diagnostics", interval=0.3)
        time.sleep(1.0)  # inside the segmentation of that frame or of the next
        yield
    finally:
        stop.set()
        sender.join(timeout=5)
        probe.node.destroy_subscription(diagnostics.subscription)


def test_deactivate_and_cleanup_during_a_slow_frame_and_an_encoding_then_shutdown_exits_0(probe, tmp_path):
    node = NodeProcess(tmp_path, {"image_topics": [TOPIC], "prompts": ["road", "car"], "autostart": False, **SLOW})
    publisher = probe.node.create_publisher(Image, TOPIC, 10)
    try:
        wait_for_state(NODE, "unconfigured", node)
        assert "Transitioning successful" in ros2("lifecycle", "set", NODE, "configure", timeout=120).stdout
        assert "Transitioning successful" in ros2("lifecycle", "set", NODE, "activate", timeout=60).stdout

        with frames_flowing(probe, node, publisher):
            timed_transition("deactivate")
        wait_for_state(NODE, "inactive", node)
        assert "a frame was still being segmented" in node.log(), node.log()

        set_prompts_cli(HUNDRED)  # encoded while inactive: the model stays loaded
        wait_for_log(node, "encoding vocabulary")
        time.sleep(2.0)
        timed_transition("cleanup")
        wait_for_state(NODE, "unconfigured", node)
        assert "active: ['object number 0'" not in node.log()  # cancelled between batches, never finished

        set_prompts_cli(["road", "car"])
        assert "Transitioning successful" in ros2("lifecycle", "set", NODE, "configure", timeout=120).stdout
        assert "Transitioning successful" in ros2("lifecycle", "set", NODE, "activate", timeout=60).stdout
        set_prompts_cli(HUNDRED)
        wait_for_log(node, "encoding vocabulary")
        time.sleep(2.0)
        started = time.monotonic()
        timed_transition("shutdown")
        status = node.wait(BOUND_S)
        print(f"process ended {time.monotonic() - started:.2f} s after ros2 lifecycle set shutdown began")
        assert status == 0, node.log()
    finally:
        probe.node.destroy_publisher(publisher)
        node.stop()
    assert "Traceback" not in node.log()


def sigint_exit_time(node: NodeProcess) -> tuple[int, float]:
    started = time.monotonic()
    node.process.send_signal(signal.SIGINT)
    status = node.wait(30)
    return status, time.monotonic() - started


def test_sigint_during_a_100_class_encoding_exits_0_within_5_s(probe, tmp_path):
    node = NodeProcess(tmp_path, {"image_topics": [TOPIC], "prompts": ["road", "car"], **SLOW})
    try:
        wait_for_state(NODE, "active", node)
        set_prompts_cli(HUNDRED)
        wait_for_log(node, "encoding vocabulary")
        time.sleep(3.0)
        status, took = sigint_exit_time(node)
        print(f"SIGINT during a 100-class encoding: exit status {status} after {took:.2f} s")
        assert status == 0 and took < BOUND_S, node.log()
    finally:
        node.stop()
    assert "Traceback" not in node.log() and "Aborted" not in node.log()


def test_sigint_during_a_slow_frame_exits_0_within_5_s(probe, tmp_path):
    node = NodeProcess(tmp_path, {"image_topics": [TOPIC], "prompts": ["road", "car"], **SLOW})
    publisher = probe.node.create_publisher(Image, TOPIC, 10)
    try:
        wait_for_state(NODE, "active", node)
        with frames_flowing(probe, node, publisher):
            status, took = sigint_exit_time(node)
        print(f"SIGINT during a slow frame: exit status {status} after {took:.2f} s")
        assert status == 0 and took < BOUND_S, node.log()
        assert "a frame was still being segmented" in node.log(), node.log()
    finally:
        probe.node.destroy_publisher(publisher)
        node.stop()
    assert "Traceback" not in node.log()


def test_a_corrupt_clip_file_fails_configure_with_its_type_and_message_and_the_node_stays(probe, tmp_path):
    from clip_dinoiser_ros.model import DinoiserHeads, save_checkpoint

    save_checkpoint(DinoiserHeads(768), tmp_path / "last.pt", epoch=1)  # the heads are read before CLIP
    corrupt = tmp_path / "open_clip_model.bin"
    corrupt.write_bytes(np.random.default_rng(0).bytes(16384))  # random bytes, not a torch file
    node = NodeProcess(tmp_path, {"image_topics": [TOPIC], "heads": str(tmp_path / "last.pt"), "autostart": False,
                                  "clip_model": "ViT-B-16", "clip_pretrained": str(corrupt)})
    try:
        wait_for_state(NODE, "unconfigured", node)
        started = time.monotonic()
        result = ros2("lifecycle", "set", NODE, "configure", timeout=120)
        print(f"ros2 lifecycle set configure (corrupt CLIP file): {time.monotonic() - started:.2f} s")
        assert "Transitioning failed" in result.stdout, result.stdout
        wait_for_state(NODE, "unconfigured", node)
        log = node.log()
        failure = next((line for line in log.splitlines() if "configure failed:" in line), log)
        # the type and the message, naming the file: torch's own error names neither the file nor the model
        assert f"configure failed: ValueError: CLIP weights {corrupt} cannot be loaded into ViT-B-16: " \
               "UnpicklingError: " in failure, failure
        assert node.alive()
        assert "Transitioning failed" in ros2("lifecycle", "set", NODE, "configure", timeout=120).stdout  # again
    finally:
        status = node.stop()
    assert status == 0, node.log()
    assert "Traceback" not in node.log()
