"""Entry point of ``clip_dinoiser_node``: signal handling first, heavy imports (torch, rclpy) after.

Ctrl-C while torch is still importing would otherwise print a KeyboardInterrupt traceback. Signals
only set ``stop``: the node is shut down by the main thread while the ROS context is still valid, so
no callback races a dying context.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from typing import Callable, Optional

REPLY_GRACE_S = 0.3


def executor_type() -> type:
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor
    except ImportError:  # rclpy before Jazzy
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor


def segmentation_node() -> tuple[str, type, type]:
    """The segmentation node's name, class and executor (imported on call: rclpy loads after the signals)."""
    from .node import NODE_NAME, ClipDinoiserNode

    return NODE_NAME, ClipDinoiserNode, executor_type()


def mapping_node() -> tuple[str, type, type]:
    """The mapping node's name, class and executor: a SingleThreadedExecutor, which runs its coroutine service
    callbacks (EventsExecutor does not)."""
    from rclpy.executors import SingleThreadedExecutor

    from .mapping_node import NODE_NAME, MappingNode

    return NODE_NAME, MappingNode, SingleThreadedExecutor


def run(stop: threading.Event, argv: Optional[list[str]] = None,
        node_kind: Callable[[], tuple[str, type, type]] = segmentation_node) -> int:
    """Run the node ``node_kind`` names until ``stop`` is set (a signal, or the shutdown transition); 1 when
    start-up fails. The node takes ``stop`` and has ``param``, ``refused_at_start`` and ``finalized``."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.signals import SignalHandlerOptions

    node_name, node_class, executor_class = node_kind()
    if stop.is_set():  # interrupted while torch and rclpy were importing
        return 0
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as error:  # a params file that cannot be read or parsed, a malformed -p
        reason = re.sub(r", at /\S+:\d+", "", str(error).splitlines()[0])
        print(f"[ERROR] [{node_name}]: cannot start: {reason}", flush=True)
        return 1
    node = node_class(stop)
    executor = executor_class()
    executor.add_node(node)
    status = 0
    try:
        autostart = node.param("autostart")
        if node.refused_at_start:
            node.get_logger().error(
                f"refused start-up values: {'; '.join(node.refused_at_start.values())}"
                + ("" if autostart else "; staying unconfigured until they are set (ros2 param set)")
            )
            status = 1 if autostart else 0
        elif autostart and not stop.is_set():
            configured = node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            if not stop.is_set() and (not configured or node.trigger_activate() != TransitionCallbackReturn.SUCCESS):
                status = 1
        while status == 0 and not stop.is_set():
            # spin_once, never spin(): EventsExecutor.spin() hung at 100 % CPU (rclpy 9.1) as soon as another
            # thread created a publisher.
            executor.spin_once(timeout_sec=0.1)
        if node.finalized:  # the shutdown transition: its reply goes out before the node is destroyed
            deadline = time.monotonic() + REPLY_GRACE_S
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
    finally:
        node.on_shutdown(None)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


# the torch threads a stop may leave behind (the activation's worker, configure's loader and encoder, the switcher's,
# the ONNX backend's, which loads a session once its export process has ended)
LEFT_BEHIND_THREADS = ("inference", "model-loader", "vocabulary-encoder", "onnx-export")


def _exit(status: int) -> int:
    """Exit now when a detached torch thread (a frame or an encoding left behind) still runs.

    Interpreter finalisation would wait for it or abort in torch's teardown (SIGABRT); everything the
    node owns is already destroyed, so only the stdio buffers need flushing.
    """
    if any(thread.is_alive() and thread.name in LEFT_BEHIND_THREADS for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def main(argv: Optional[list[str]] = None,
         node_kind: Callable[[], tuple[str, type, type]] = segmentation_node) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return _exit(run(stop, argv, node_kind))


def map_main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``clip-dinoiser-map-node``."""
    return main(argv, mapping_node)


if __name__ == "__main__":
    sys.exit(main())
