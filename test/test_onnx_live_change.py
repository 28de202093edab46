"""A live ``gamma`` change under onnxruntime, as a user makes it (``ros2 param set``) on a node fed by a 30 Hz
camera: the new graph is exported in a child process while the masks keep coming at the node's own pace,
then taken; Ctrl-C during that export ends the node cleanly (status 0) and its child with it.

Nothing assumes how fast the CPU is: the longest gap between masks across the change is compared with the
median gap the same node showed before it, and the switch is an event (/diagnostics naming the new graph).

A ``ros2`` command starting up is not the export: on the 2-core machines here the command, and the daemon
the first command starts seconds later, stalled the node for ~350 ms (no frame taken, no mask sent) in about
half the calls with no change at all (``ros2 param get``), while a plain relay node did not stall. So the
daemon is up before the pace is measured, and the gaps are counted from the moment ``ros2 param set``
returned: the export starts then and lasts 15-30 s, so a stall it caused is still counted.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from camera_driver import CameraDriver, Frames
from ros2_cli import ros2, stop_daemon
from ros_harness import NodeProcess, wait_until

COLOUR = "/lg_cam/color/image_raw"
MASKS = "/lg_cam/color/segmentation/mask"
CAMERA = {"topics": (COLOUR, "/lg_cam/depth/image_raw", "/lg_cam/color/camera_info"), "rate_hz": 30.0}
NODE = {"image_topics": [COLOUR], "prompts": ["road", "car"], "short_side": 64, "templates": "none",
        "embedding_cache": False, "clip_model": "ViT-Tiny-16-test", "random_weights": True, "precision": "fp32",
        "backend": "onnxruntime", "gamma": 0.2}
STEADY_MASKS = 60  # the gaps whose median is the node's pace before the change (after WARM_UP masks)
WARM_UP = 10
AFTER_SWITCH = 20  # masks counted after the new graph is in use
# A gap may be a few frames long without any stall: the node skips frames that arrive while it is busy (the
# camera's 33 ms against a frame time that varies 2-3x on a shared machine), and one DDS or scheduler hiccup
# adds tens of milliseconds. An export in this process held the GIL for 351-470 ms at a time (the tiny model:
# 10-20x its frame time), a ViT-B/16's for seconds: K x the median plus the margin catches both.
K = 3.0
MARGIN_S = 0.1
EXPORT_FAILSAFE_S = 1500.0  # the export runs at the lowest priority: on a loaded machine it can take minutes


def onnx_folder() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "clip_dinoiser_ros" / "onnx"  # the node's: it inherits the test's


def graphs(diagnostics) -> list[str]:
    """Every ``onnx_graphs`` value /diagnostics carried so far, in order."""
    return [value.value for array in diagnostics.matching(lambda _: True) for status in array.status
            for value in status.values if value.key == "onnx_graphs"]


def export_children(node: NodeProcess) -> list[int]:
    """The node's export processes running now (their pids)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == node.pid and b"onnx_export_worker" in command:
            found.append(int(entry.name))
    return found


def started(tmp_path: Path, probe):
    """The node, active and publishing masks of a 30 Hz camera; the first graph exported on its first frame."""
    node = NodeProcess(tmp_path / "node", NODE)
    camera = CameraDriver(probe.node, "/lg_cam", Frames.synthetic(width=96, height=64), **CAMERA).start()
    masks, diagnostics = probe.collect(Image, MASKS), probe.collect(DiagnosticArray, "/diagnostics")
    wait_until(lambda: len(masks.messages) >= WARM_UP or not node.alive(), 600, "the first masks")
    assert node.alive(), node.log()
    return node, camera, masks, diagnostics


def stopped(node: NodeProcess, camera: CameraDriver, probe, *collectors) -> int:
    """Stop the camera and the node (SIGINT, as Ctrl-C): the node's exit status."""
    camera.close()
    for collector in collectors:
        probe.node.destroy_subscription(collector.subscription)
    status = node.stop()
    stop_daemon()
    return status


def set_gamma(value: str) -> None:
    output = ros2("param", "set", "/clip_dinoiser", "gamma", value).stdout
    assert "Set parameter successful" in output, output


@pytest.mark.timeout(2400)
def test_a_live_gamma_change_keeps_the_masks_at_the_nodes_pace(tmp_path, probe):
    node, camera, masks, diagnostics = started(tmp_path, probe)
    try:
        ros2("daemon", "start", timeout=60)
        counted_from = len(masks.messages)
        wait_until(lambda: len(masks.messages) >= counted_from + STEADY_MASKS or not node.alive(), 600,
                   "steady masks")
        before = [arrival for _, arrival in masks.messages[counted_from:]]
        steady = statistics.median(b - a for a, b in zip(before, before[1:]))
        set_gamma("0.1")
        changed_at = time.time()
        in_use = wait_until(lambda: not node.alive() or any("in use 64x96 gamma 0.1" in g for g in graphs(diagnostics)),
                            EXPORT_FAILSAFE_S, "the gamma 0.1 graph in use")
        assert node.alive(), node.log()
        switched_at = time.time()
        wait_until(lambda: sum(arrival > switched_at for _, arrival in masks.messages) >= AFTER_SWITCH
                   or not node.alive(), 120, "masks after the switch")
    finally:
        status = stopped(node, camera, probe, masks, diagnostics)
    assert status == 0, node.log()
    arrivals = [arrival for _, arrival in masks.messages]
    across = [arrival for arrival in arrivals if arrival >= max(a for a in arrivals if a < changed_at)]
    gaps = [b - a for a, b in zip(across, across[1:])]
    longest_before = max(b - a for a, b in zip(before, before[1:]))
    long_ones = [(round(b - changed_at, 2), round((b - a) * 1e3)) for a, b in zip(across, across[1:]) if b - a > 2 * steady]
    print(f"median gap before the change {steady * 1e3:.0f} ms (longest {longest_before * 1e3:.0f} ms); across the "
          f"change ({len(gaps)} masks, {switched_at - changed_at:.1f} s to the switch) median "
          f"{statistics.median(gaps) * 1e3:.0f} ms, longest {max(gaps) * 1e3:.0f} ms; allowed "
          f"{(K * steady + MARGIN_S) * 1e3:.0f} ms; gaps over 2x the median (s after the change, ms): {long_ones}")
    seen = graphs(diagnostics)
    assert any("preparing 64x96 gamma 0.1" in g for g in seen), seen  # exported in the background, not cached
    assert not any("FAILED" in g for g in seen) and in_use
    assert len(list(onnx_folder().glob("*.onnx"))) == 2 and not list(onnx_folder().glob(".*"))  # no tower left
    assert max(gaps) <= K * steady + MARGIN_S


@pytest.mark.timeout(1200)
def test_ctrl_c_during_a_background_export_ends_the_node_and_its_export_cleanly(tmp_path, probe):
    node, camera, masks, diagnostics = started(tmp_path, probe)
    try:
        set_gamma("0.3")
        children = wait_until(lambda: export_children(node) or not node.alive(), 300, "the export process")
        assert node.alive(), node.log()
    finally:
        status = stopped(node, camera, probe, masks, diagnostics)
    assert status == 0, node.log()
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)  # terminated with the node
    assert not list(onnx_folder().glob(".*")), list(onnx_folder().iterdir())  # no partial file, no tower file
    assert len(list(onnx_folder().glob("*.onnx"))) == 1  # gamma 0.2's; 0.3's was never finished
