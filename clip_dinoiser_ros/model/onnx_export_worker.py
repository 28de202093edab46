"""The child process of an ONNX export (see onnx_export_process): rebuilds the image tower and the heads
from the parent's private file and exports one graph, on the CPU, with one thread, at a lower priority.

Run as ``python -m clip_dinoiser_ros.model.onnx_export_worker TOWER OUT GAMMA HEIGHT WIDTH FINGERPRINT OPSET``;
it ends when its parent does (its stdin closes), and SIGTERM unwinds the export so that its partial file
is removed. SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group, and the parent decides.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .dense_clip import DenseClipEncoder
from .heads import build_heads
from .onnx_export import export_graph

NICE = 19  # the lowest priority: frames first; the export takes the CPU time they leave


def _end_with_parent() -> None:
    """The parent holds our stdin open: EOF means it has gone (even when killed), so end too, cleanly.
    os.read, not sys.stdin: a daemon thread holding stdin's buffer lock aborts the interpreter's exit."""
    while os.read(0, 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _terminated(*_: Any) -> None:
    raise SystemExit(128 + signal.SIGTERM)  # unwinds the export: its partial file is removed


def main(argv: Optional[Sequence[str]] = None) -> int:
    tower, out, gamma, height, width, fingerprint, opset = argv if argv is not None else sys.argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches us too: the parent decides
    signal.signal(signal.SIGTERM, _terminated)
    threading.Thread(target=_end_with_parent, name="parent-watch", daemon=True).start()
    os.nice(NICE)
    torch.set_num_threads(1)
    saved = torch.load(tower, map_location="cpu", weights_only=False)  # this user's private file, see above
    encoder = DenseClipEncoder(saved["visual"].float().eval())
    heads = build_heads(saved["heads"], encoder.width)
    export_graph(encoder, heads, float(gamma), (int(height), int(width)), Path(out), fingerprint, int(opset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
