"""Entry point of ``clip_dinoiser_node``: signal handling first, heavy imports (torch, rclpy) after.

Ctrl-C while torch is still importing would otherwise print a KeyboardInterrupt traceback.
"""
import signal
import sys
import threading
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from .node import run

    if stop.is_set():
        return 0
    return run(stop, argv)


if __name__ == "__main__":
    sys.exit(main())
