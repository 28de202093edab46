"""ONNX exports in a child process, so that a live change's export never stalls the frames of this one.

``torch.onnx.export`` is mostly Python and holds the GIL for long stretches: on a thread of the node's
process it stalled the inference worker for hundreds of milliseconds at a time. The child gets the image
tower and the heads through a private file (a pickle: it stays in this user's cache, mode 0600, and is
removed when the exports are done), exports on the CPU with one thread at a lower priority (the graph does
not depend on the device it was traced on) and writes the .onnx and its sidecar atomically, as an export
in this process would. It ends when its parent does (its stdin closes), and a terminate lets it remove its
partial file first (onnx_export_worker is the child's side).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .dense_clip import DenseClipEncoder

TERMINATE_WAIT_S = 10.0  # for the child to remove its partial file after SIGTERM, before SIGKILL
LOG_TAIL = 600  # characters of the child's output that a failure reports
WORKER = f"{__package__}.onnx_export_worker"


class ExportProcesses:
    """Exports of one engine's graph in child processes, one at a time; ``close`` ends the one running."""

    def __init__(self, encoder: DenseClipEncoder, heads: nn.Module) -> None:
        self.encoder, self.heads = encoder, heads
        self._tower: Optional[Path] = None
        self._child: Optional[subprocess.Popen] = None
        self._closed = False
        self._lock = threading.Lock()

    def export(self, gamma: float, size: tuple[int, int], path: Path, fingerprint: str, opset: int) -> None:
        """Write ``path`` and its sidecar from a child process; RuntimeError saying why when it did not."""
        with self._lock:
            self._refuse_when_closed()
            tower = self._tower = self._tower or self._save_tower(path.parent)
        command = [sys.executable, "-m", WORKER, str(tower), str(path), repr(float(gamma)), *map(str, size),
                   fingerprint, str(opset)]
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        with tempfile.TemporaryFile() as log:
            with self._lock:
                self._refuse_when_closed()
                child = self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log,
                                                       stderr=subprocess.STDOUT, env=environment)
            code = child.wait()
            with self._lock:
                self._child = None
            if code != 0:
                log.seek(0)
                raise RuntimeError(f"the export process {_ended(code)}: {_tail(log.read())}")

    def release(self) -> None:
        """Remove the tower file (no export is queued); the next export writes it again."""
        with self._lock:
            tower, self._tower = self._tower, None
        if tower is not None:
            tower.unlink(missing_ok=True)

    def close(self) -> None:
        """Terminate the export running (it removes its partial file), refuse new ones, remove the tower file."""
        with self._lock:
            self._closed, child = True, self._child
        if child is not None:
            child.terminate()
            try:
                child.wait(TERMINATE_WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.release()

    def _refuse_when_closed(self) -> None:
        if self._closed:
            raise RuntimeError("the engine was closed: no more exports")

    def _save_tower(self, folder: Path) -> Path:
        """The image tower (pickled: the child cannot rebuild an arbitrary open_clip tower from a state dict)
        and the heads' state, in a private file of ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix=".export-tower-", suffix=".pt")
        try:
            with os.fdopen(handle, "wb") as sink:
                torch.save({"visual": self.encoder.visual, "heads": self.heads.state_dict()}, sink)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)


def _ended(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _tail(output: bytes) -> str:
    """The last lines of the child's output (its exception), on one line."""
    text = output.decode(errors="replace").strip()
    return " | ".join(text[-LOG_TAIL:].splitlines()[-3:]) or "no output"


