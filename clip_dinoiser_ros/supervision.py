"""Child processes that never outlive their parent: the node (or any command) a demo or a test starts.

One supervisor for the demo and the tests, free of rclpy so it can start a node before anything
touches DDS. A child gets its own process group (a terminal's Ctrl-C reaches only the parent, which
passes on exactly one SIGINT), SIGINT when its parent dies, even by SIGKILL (Linux), and its output
in a log file; it is stopped by PID: SIGINT, a wait, then SIGKILL.
"""
from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

PR_SET_PDEATHSIG = 1
NODE_SCRIPT = "clip_dinoiser_node"
LOG_TAIL_LINES = 30


def installed_script(name: str) -> Path:
    """A console script of this environment (next to its python): what ``make install`` put there."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `make install`")
    return script


def node_executable() -> Path:
    """The installed ``clip_dinoiser_node``."""
    return installed_script(NODE_SCRIPT)


def _death_signal() -> Optional[Callable[[], None]]:
    """What the child runs before exec: SIGINT to it when its parent dies; None where Linux's prctl is not.

    prctl is looked up here, in the parent: a dlopen between fork and exec could deadlock on a lock that
    another thread of the parent (DDS, an executor) held at the fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class ChildProcess:
    """A command in its own process group, its output in ``log_file``, stopped with SIGINT (then killed)."""

    def __init__(self, command: Sequence[Union[str, Path]], log_file: Path,
                 env: Optional[Mapping[str, str]] = None, name: str = "the process") -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self.name = name
        self._log = open(log_file, "wb")
        self.process = subprocess.Popen(
            [str(part) for part in command], stdout=self._log, stderr=subprocess.STDOUT,
            env=None if env is None else dict(env), process_group=0, preexec_fn=_death_signal(),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The log's last ``lines`` lines, for an error message."""
        text = self.log().splitlines()
        return "\n".join(text[-lines:]) if text else f"({self.name} wrote nothing)"

    def threads(self) -> int:
        """Threads of the process now (for a node: Python's, DDS's, torch's)."""
        with open(f"/proc/{self.pid}/status") as status:
            return int(next(line.split()[1] for line in status if line.startswith("Threads:")))

    def wait(self, timeout: float) -> Optional[int]:
        """The exit status, or None when it still runs after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT to this PID, then wait; returns the exit status (-9 if it had to be killed)."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            if self.wait(timeout) is None:
                print(f"{self.name} (pid {self.pid}) did not stop within {timeout:.0f} s of SIGINT: killing it",
                      file=sys.stderr, flush=True)
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class NodeProcess(ChildProcess):
    """The installed clip_dinoiser node, started with a params file (``params.yaml``) in ``directory``.

    ``node_name`` is the params file's key: ``/**`` (every node) unless a caller wants the file to name it.
    """

    def __init__(self, directory: Path, parameters: dict[str, Any], *ros_arguments: str,
                 node_name: str = "/**", env: Optional[Mapping[str, str]] = None) -> None:
        self.params_file = write_params_file(directory, parameters, node_name)
        super().__init__([node_executable(), "--ros-args", "--params-file", self.params_file, *ros_arguments],
                         directory / "node.log", env=env, name="the node")


def write_params_file(directory: Path, parameters: dict[str, Any], node_name: str = "/**") -> Path:
    """``directory``/params.yaml giving ``parameters`` to ``node_name``: what a node is started with."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    params_file = directory / "params.yaml"
    params_file.write_text(yaml.safe_dump({node_name: {"ros__parameters": parameters}}))
    return params_file
