"""The real clip_dinoiser node with a model whose speed the test sets, for tests whose verdict must not
depend on how fast the CPU is (native bf16 or AVX2 fp32, idle or loaded).

Run as a script (``PacedNode`` starts it): the node's own ``main`` after two patches of the engine, nothing
in the product changed.

- ``--frame-time-s T``: each pass of the node's inference worker (one frame, or one batch of cameras:
  decoding, the real model, publishing) runs, then sleeps until T seconds have passed since it started, so
  a pass takes max(T, the real time). It prints ``paced frame started`` and, once the pass's outputs are
  published, ``paced frame finished after S s`` (stdout, the node's log): how a test finds a frame in
  progress, or knows that none is.
- ``--text-batch-time-s B``: each text batch of a vocabulary encoding waits B seconds before its
  between-batches cancellation check, and prints ``paced text batch``; the encoding stays cancellable.

torch is imported before the node's signal handlers are set: SIGINT during start-up prints a traceback,
so a test signals the node only once it answers.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ros_harness import LoggedProcess, NodeProcess

FRAME_STARTED = "paced frame started"
FRAME_FINISHED = "paced frame finished"
TEXT_BATCH = "paced text batch"


class PacedNode(LoggedProcess):
    """The node as ros_harness.NodeProcess starts it (its parameters, on the CPU), through this wrapper."""

    def __init__(self, directory: Path, parameters: dict[str, Any], frame_time_s: float = 0.0,
                 text_batch_time_s: float = 0.0) -> None:
        from clip_dinoiser_ros.supervision import write_params_file

        self.params_file = write_params_file(directory, {**NodeProcess.DEFAULTS, **parameters})
        super().__init__([sys.executable, Path(__file__).resolve(), "--frame-time-s", str(frame_time_s),
                          "--text-batch-time-s", str(text_batch_time_s), "--ros-args", "--params-file",
                          self.params_file], directory / "node.log", name="the paced node")

    def frames_started(self) -> int:
        return self.log().count(FRAME_STARTED)

    def frames_finished(self) -> int:
        return self.log().count(FRAME_FINISHED)

    def text_batches(self, after: Optional[str] = None) -> int:
        """Text batches begun, all or only those after the last line containing ``after``."""
        log = self.log()
        if after is not None:
            log = log[log.rfind(after):] if after in log else ""
        return log.count(TEXT_BATCH)


def paced(function: Callable, seconds: float) -> Callable:
    """``function`` taking at least ``seconds``, announced on stdout."""
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        print(FRAME_STARTED, flush=True)
        try:
            return function(*args, **kwargs)
        finally:
            time.sleep(max(0.0, started + seconds - time.monotonic()))
            print(f"{FRAME_FINISHED} after {time.monotonic() - started:.3f} s", flush=True)
    return run


def slowed(check: Callable, seconds: float) -> Callable:
    """The between-batches check of the text encoder, ``seconds`` later."""
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> Any:
        print(TEXT_BATCH, flush=True)
        time.sleep(seconds)
        return check(*args, **kwargs)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame-time-s", type=float, default=0.0)
    parser.add_argument("--text-batch-time-s", type=float, default=0.0)
    options, node_arguments = parser.parse_known_args()
    from clip_dinoiser_ros.model import text_encoder
    from clip_dinoiser_ros.ros.activation import Activation
    from clip_dinoiser_ros.ros.run_node import main as node_main

    Activation._process = paced(Activation._process, options.frame_time_s)  # one pass of the worker
    text_encoder._checked = slowed(text_encoder._checked, options.text_batch_time_s)
    return node_main([sys.argv[0], *node_arguments])


if __name__ == "__main__":
    sys.exit(main())
