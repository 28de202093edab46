"""The real ``ros2`` command line (ros2cli, ros2launch from ../shared/ros2-src, installed into the venv)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional


def ros2_executable() -> str:
    script = Path(sys.executable).parent / "ros2"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `make install` (it installs ros2cli and launch)")
    return str(script)


def ros2(*arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """One ``ros2`` command, as a user types it: ``stdout`` holds what the terminal shows (stderr too)."""
    return subprocess.run([ros2_executable(), *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, env=dict(os.environ))


def stop_daemon() -> None:
    """``ros2`` starts a daemon per ROS_DOMAIN_ID on first use: the tests that started it stop it."""
    ros2("daemon", "stop", timeout=30)


class Launch:
    """``ros2 launch clip_dinoiser_ros clip_dinoiser.launch.py ARGS`` in its own process, stopped with SIGINT."""

    def __init__(self, directory: Path, *arguments: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log_file = directory / "launch.log"
        self._log = open(self.log_file, "wb")
        self.process = subprocess.Popen(
            [ros2_executable(), "launch", "clip_dinoiser_ros", "clip_dinoiser.launch.py", *arguments],
            stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT (launch passes it on to the node), then wait; a forced kill is reported as -9."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            if self.wait(timeout) is None:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
