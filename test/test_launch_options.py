"""The launch file's own arguments as users give them to the real ``ros2 launch``: ``log_level`` reaches
the node's logger (and only it), ``respawn`` starts the node again after it exits, until the launch stops."""
import os
import re
import signal
from pathlib import Path

import pytest
import yaml

from ros2_cli import Launch, stop_daemon, wait_for_state
from ros_harness import wait_until

TINY = {"clip_model": "ViT-Tiny-16-test", "random_weights": True, "device": "cpu"}
DEBUG_LINE = "configuring EngineSettings("  # the node's one debug line, at configure
STARTED = re.compile(r"\[clip_dinoiser_node-1\]: process started with pid \[(\d+)\]")


@pytest.fixture(scope="module", autouse=True)
def daemon():
    yield
    stop_daemon()


def params_file(path: Path, topic: str) -> Path:
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"image_topics": [topic], **TINY}}}))
    return path


def log_lines(launch: Launch, level: str) -> list[str]:
    return [line for line in launch.log().splitlines() if f"[{level}]" in line]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_log_level_sets_the_nodes_logger_only(tmp_path, level):
    file = params_file(tmp_path / "mine.yaml", "/log_cam/image_raw")
    launch = Launch(tmp_path, f"params_file:={file}", f"log_level:={level}", "namespace:=logs")
    try:
        wait_for_state("/logs/clip_dinoiser", "active", launch)
    finally:
        assert launch.stop() == 0, launch.log()
    debug = log_lines(launch, "DEBUG")
    assert any("[logs.clip_dinoiser]: active on" in line for line in log_lines(launch, "INFO")), launch.log()
    if level == "info":
        assert not debug, debug
    else:
        assert any(DEBUG_LINE in line for line in debug), launch.log()
        others = [line for line in debug if "[logs.clip_dinoiser]:" not in line]
        assert not others, others[:5]  # rcl and rmw stay at info: the level is the node's logger's


def test_a_refused_log_level_names_the_choices(tmp_path):
    file = params_file(tmp_path / "mine.yaml", "/log_bad/image_raw")
    launch = Launch(tmp_path, f"params_file:={file}", "log_level:=verbose", "namespace:=bad_level")
    try:
        assert launch.wait(120) is not None, launch.log()
    finally:
        launch.stop()
    assert '"log_level" provided value "verbose" is not valid' in launch.log() and "fatal" in launch.log(), launch.log()
    assert STARTED.search(launch.log()) is None  # refused before the node was started


def gone(pid: int) -> bool:
    """No such process any more (an unreaped child would show as a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_respawn_brings_the_node_back_after_it_exits_until_the_launch_stops(tmp_path):
    file = params_file(tmp_path / "mine.yaml", "/again_cam/image_raw")
    launch = Launch(tmp_path, f"params_file:={file}", "respawn:=true", "respawn_delay:=0.5", "namespace:=again")
    started = lambda: [int(pid) for pid in STARTED.findall(launch.log())]  # noqa: E731
    try:
        wait_for_state("/again/clip_dinoiser", "active", launch)
        (first,) = started()
        os.kill(first, signal.SIGINT)  # SIGINT to the node alone, as if it had stopped by itself
        wait_until(lambda: f"process has finished cleanly [pid {first}]" in launch.log(), 60, "the node's exit")
        wait_until(lambda: len(started()) == 2, 60, "the node started again")
        second = started()[1]
        assert second != first and gone(first)
        wait_for_state("/again/clip_dinoiser", "active", launch)  # autostart again, in the new process
        assert launch.alive()
    finally:
        status = launch.stop()
    assert status == 0, launch.log()
    assert len(started()) == 2 and all(gone(pid) for pid in started()), launch.log()  # not respawned on stop
    assert "Traceback" not in launch.log()
