"""The real ``ros2`` command line (ros2cli, ros2launch from ../shared/ros2-src, installed into the venv)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ros_harness import LoggedProcess, wait_until


def ros2_executable() -> str:
    script = Path(sys.executable).parent / "ros2"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `make install` (it installs ros2cli and launch)")
    return str(script)


# ros2cli waits for a service reply without any limit, and on a loaded 2-core machine a reply is lost now
# and then while discovery settles: every call is bounded, and queries (no effect) are asked again.
ATTEMPT_S = 20.0
QUERIES = {("lifecycle", "get"), ("param", "get"), ("topic", "list"), ("topic", "info"), ("node", "list"),
           ("interface", "show")}


def ros2(*arguments: str, timeout: float = ATTEMPT_S) -> subprocess.CompletedProcess:
    """One ``ros2`` command, as a user types it: ``stdout`` holds what the terminal shows (stderr too).

    Raises subprocess.TimeoutExpired when no attempt ended in time (queries get three attempts).
    """
    attempts = 3 if tuple(arguments[:2]) in QUERIES else 1
    for attempt in range(attempts):
        try:
            return _run([ros2_executable(), *arguments], timeout)
        except subprocess.TimeoutExpired:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run to its end; past ``timeout`` it gets SIGINT, so that it frees its shared memory, then SIGKILL."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ))
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, output)


def wait_for_state(node: str, state: str, launch: Optional["Launch"] = None, timeout: float = 120.0) -> None:
    """Until ``ros2 lifecycle get NODE`` shows ``state``."""
    def reached():
        if launch is not None:
            assert launch.alive(), launch.log()
        return f"{state} [" in ros2("lifecycle", "get", node).stdout

    wait_until(reached, timeout, f"{node} {state}", interval=0.5)


def lifecycle_set(node: str, transition: str, prints: str, state: str, timeout: float = 120.0) -> None:
    """``ros2 lifecycle set NODE TRANSITION``: it prints ``prints`` and the node is then in ``state``.

    When its reply was lost (see ATTEMPT_S) only the state can be checked; a node that is stuck fails both.
    """
    try:
        output = ros2("lifecycle", "set", node, transition, timeout=timeout).stdout
        assert prints in output, output
    except subprocess.TimeoutExpired:
        pass
    wait_for_state(node, state)


def stop_daemon() -> None:
    """``ros2`` starts a daemon per ROS_DOMAIN_ID on first use: the tests that started it stop it."""
    ros2("daemon", "stop", timeout=30)


class Launch(LoggedProcess):
    """``ros2 launch clip_dinoiser_ros clip_dinoiser.launch.py ARGS``; SIGINT is passed on to the node."""

    def __init__(self, directory: Path, *arguments: str) -> None:
        super().__init__([ros2_executable(), "launch", "clip_dinoiser_ros", "clip_dinoiser.launch.py", *arguments],
                         directory / "launch.log")

    def stop(self, timeout: float = 60.0) -> int:
        return super().stop(timeout)
