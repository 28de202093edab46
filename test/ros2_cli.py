"""The real ``ros2`` command line (ros2cli, ros2launch from ../shared/ros2-src, installed into the venv)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ros_harness import LoggedProcess, wait_until


def ros2_executable() -> str:
    script = Path(sys.executable).parent / "ros2"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `make install` (it installs ros2cli and launch)")
    return str(script)


# ros2cli waits for a service reply without any limit, and on a loaded 2-core machine a reply is lost now
# and then while discovery settles: every call is bounded, and the calls that may be repeated (queries and
# setting a parameter to a value) get three attempts. ``ros2 param`` also gives up by itself when the node's
# parameter services are not discovered within 5 s: it then printed SERVICE_NOT_FOUND and sent nothing.
ATTEMPT_S = 20.0
ATTEMPTS = 3
REPEATABLE = {("lifecycle", "get"), ("param", "get"), ("param", "set"), ("topic", "list"), ("topic", "info"),
              ("node", "list"), ("interface", "show")}
SERVICE_NOT_FOUND = "Wait for service timed out"
# A daemon that has just started (the first ros2 call of a module) may not list the node yet: every verb
# that checks the node list first (lifecycle set among them) then prints this and sends nothing, so any
# command, a transition too, is safely asked again.
NODE_NOT_LISTED = "Node not found"
RETRY_PAUSE_S = 1.0


def ros2(*arguments: str, timeout: float = ATTEMPT_S) -> subprocess.CompletedProcess:
    """One ``ros2`` command, as a user types it: ``stdout`` holds what the terminal shows (stderr too).

    Raises subprocess.TimeoutExpired when no attempt ended in time.
    """
    repeatable = tuple(arguments[:2]) in REPEATABLE
    not_yet_seen = (NODE_NOT_LISTED, SERVICE_NOT_FOUND) if repeatable else (NODE_NOT_LISTED,)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = _run([ros2_executable(), *arguments], timeout)
        except subprocess.TimeoutExpired:
            if not repeatable or attempt == ATTEMPTS:
                raise
            continue
        if not any(text in result.stdout for text in not_yet_seen) or attempt == ATTEMPTS:
            return result
        time.sleep(RETRY_PAUSE_S)
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


def lifecycle_state(node: str) -> str:
    """What ``ros2 lifecycle get NODE`` prints, e.g. ``active [3]``."""
    return ros2("lifecycle", "get", node).stdout.strip()


def wait_for_state(node: str, state: str, launch: Optional[LoggedProcess] = None, timeout: float = 120.0) -> None:
    """Until ``ros2 lifecycle get NODE`` shows ``state``; a failure shows the last answer and the node's log."""
    last = ""

    def reached():
        nonlocal last
        if launch is not None:
            assert launch.alive(), launch.log()
        last = lifecycle_state(node)
        return f"{state} [" in last

    try:
        wait_until(reached, timeout, f"{node} {state}", interval=0.5)
    except AssertionError as error:
        log = f"\n--- node log ---\n{launch.log()[-4000:]}" if launch is not None else ""
        raise AssertionError(f"{error}; lifecycle get printed {last!r}{log}") from None


def lifecycle_set(node: str, transition: str, prints: str, state: str,
                  launch: Optional[LoggedProcess] = None, attempts: int = 3) -> None:
    """``ros2 lifecycle set NODE TRANSITION``: it prints ``prints`` and the node is then in ``state``.

    ``set`` asks for the available transitions before it changes state, and waits for each reply without
    limit: when it hangs and the node is still where it was, the request never took effect and is sent again,
    as a user would after Ctrl-C; when the node got there, only the change's reply was lost.
    """
    for _ in range(attempts):
        try:
            output = ros2("lifecycle", "set", node, transition, timeout=3 * ATTEMPT_S).stdout
        except subprocess.TimeoutExpired:
            if f"{state} [" in lifecycle_state(node):
                return
            continue
        assert prints in output, output
        break
    wait_for_state(node, state, launch)


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
