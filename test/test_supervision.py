"""The one supervisor of the demo and the tests: children never outlive their parent, stop by SIGINT then SIGKILL."""
import os
import subprocess
import sys
import time

from clip_dinoiser_ros.supervision import ChildProcess

IGNORES_SIGINT = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def test_a_child_gets_sigint_when_its_parent_is_killed(tmp_path):
    parent = subprocess.run([sys.executable, "-c", (
        "import os, pathlib; from clip_dinoiser_ros.supervision import ChildProcess\n"
        f"child = ChildProcess(['sleep', '60'], pathlib.Path({str(tmp_path / 'sleep.log')!r}))\n"
        "print(child.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )], capture_output=True, text=True, timeout=30)
    assert parent.returncode == -9, parent.stderr
    pid = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:  # reaped by init once it ends
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} outlived its parent"


def test_a_child_that_ignores_sigint_is_killed_and_said_so(tmp_path, capfd):
    child = ChildProcess([sys.executable, "-c", IGNORES_SIGINT], tmp_path / "stubborn.log", name="the stubborn one")
    deadline = time.monotonic() + 20
    while "up" not in child.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.alive() and child.tail() == "up" and child.threads() >= 1
    assert os.getpgid(child.pid) == child.pid  # its own group: a terminal's Ctrl-C reaches only the parent
    assert child.stop(timeout=0.5) == -9
    assert f"the stubborn one (pid {child.pid}) did not stop within 0 s of SIGINT: killing it" in capfd.readouterr().err


def test_a_quiet_child_is_named_in_its_empty_tail(tmp_path):
    child = ChildProcess(["true"], tmp_path / "quiet.log", name="the node")
    assert child.wait(20) == 0 and not child.alive()
    assert child.tail() == "(the node wrote nothing)"
    assert child.stop() == 0
