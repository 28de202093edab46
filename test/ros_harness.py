"""Real processes over real DDS: start the node from its console script, talk to it from a probe node.

The processes (node, ros2 launch, the bag tool) are clip_dinoiser_ros.supervision's, as the demo's are;
what is here is for tests only: the DDS environment of a test run, a probe node, waiting for answers.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from clip_dinoiser_ros.supervision import ChildProcess as LoggedProcess, node_executable  # noqa: F401
from clip_dinoiser_ros.supervision import NodeProcess as InstalledNode

DDS_ENVIRONMENT = {
    # Shared memory only, with segments large enough for camera frames: nothing leaves the machine.
    "FASTDDS_BUILTIN_TRANSPORTS": "SHM?sockets_size=33554432",
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "HF_HUB_OFFLINE": "1",
}


def configure_environment() -> None:
    """Called before rclpy is imported: DDS transports, a domain of this test run's own, SIGINT usable.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec:
    ``ros2 launch`` would then never pass Ctrl-C on to the node. With a handler here, the processes the
    tests start get SIGINT back at its default.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.update(DDS_ENVIRONMENT)
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))


# Domains whose shared-memory port numbers (7400 + 250 * domain + ...) stay below 65536; 0, the default
# domain of any stray process, is left out.
USABLE_DOMAINS = 230


def module_domain(first: int, index: int) -> int:
    """The domain of the index-th test module: the run's ROS_DOMAIN_ID (``first``), then the ones after it."""
    return 1 + (first - 1 + index) % USABLE_DOMAINS


class NodeProcess(InstalledNode):
    """The installed node as the tests start it: on the CPU unless a test says otherwise, so that the
    suite behaves the same on a CUDA workstation (device ``auto`` would pick the GPU there)."""

    DEFAULTS = {"device": "cpu"}

    def __init__(self, directory: Path, parameters: dict[str, Any], *ros_arguments: str, **options: Any) -> None:
        super().__init__(directory, {**self.DEFAULTS, **parameters}, *ros_arguments, **options)


@contextmanager
def running_node(directory: Path, parameters: dict[str, Any]):
    """A node for the duration of a fixture; it must exit cleanly (status 0) on SIGINT."""
    node = NodeProcess(directory, parameters)
    try:
        yield node
    finally:
        status = node.stop()
    assert status == 0, node.log()


def publish_until_answered(node: NodeProcess, publisher: Any, collector: "Collector", message: Any,
                           timeout: float = 30.0) -> Any:
    """Publish ``message`` until an output with its header arrives (DDS discovery takes a moment)."""
    from node_frames import same_header

    def answered():
        assert node.alive(), node.log()
        publisher.publish(message)
        found = collector.matching(lambda m: same_header(m.header, message.header))
        return found[0] if found else None

    return wait_until(answered, timeout, f"an answer to the frame sent on {publisher.topic_name}", interval=0.3)


def answer_to(probe: "Probe", node: Any, message: Any, input_topic: str, output_topic: str, output_type: Any,
              timeout: float = 30.0) -> Any:
    """Send ``message`` until its output arrives; the probe's publisher and subscription end with the call.

    Subscriptions that outlive their use keep receiving every frame of big image topics; a loaded probe
    made Jazzy's Fast DDS 2.14 spin forever in a take that failed to deserialize.
    """
    collector = probe.collect(output_type, output_topic)
    publisher = probe.node.create_publisher(type(message), input_topic, 10)
    try:
        return publish_until_answered(node, publisher, collector, message, timeout)
    finally:
        probe.node.destroy_subscription(collector.subscription)
        probe.node.destroy_publisher(publisher)


class Collector:
    """Messages of one topic with their arrival times (time.time())."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, float]] = []
        self.subscription: Any = None
        self._lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        with self._lock:
            self.messages.append((message, time.time()))

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def last(self) -> Any:
        with self._lock:
            return self.messages[-1][0] if self.messages else None

    def matching(self, predicate: Callable[[Any], bool]) -> list[Any]:
        with self._lock:
            return [m for m, _ in self.messages if predicate(m)]


class Probe:
    """A test-side node spun in a background thread."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def collect(self, message_type: Any, topic: str, qos: Any = 10) -> Collector:
        collector = Collector()
        collector.subscription = self.node.create_subscription(message_type, topic, collector, qos)
        return collector

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()

    def call(self, client: Any, request: Any, timeout: float = 20.0, attempts: int = 1) -> Any:
        """The service's answer; a query may be sent ``attempts`` times, each waiting ``timeout``: just after a
        node started, a reply is lost now and then while discovery settles (seen in CI)."""
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} did not appear")
        for attempt in range(1, attempts + 1):
            future = client.call_async(request)
            try:
                wait_until(future.done, timeout, f"no answer from {client.srv_name} ({attempt} of {attempts})")
            except AssertionError:
                client.remove_pending_request(future)
                if attempt == attempts:
                    raise
                continue
            return future.result()
        raise AssertionError("unreachable")


def parameter_client(probe: "Probe", node_name: str) -> Any:
    """A client of the node's parameter services, as ``ros2 param`` uses them.

    With the parameter services' own QoS (depth 1000): the default services QoS (depth 10) loses answers
    to a burst of requests (on Jazzy's Fast DDS 2.14 half of 50).
    """
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import qos_profile_parameters

    client = AsyncParameterClient(probe.node, node_name, qos_profile=qos_profile_parameters)
    if not client.wait_for_services(timeout_sec=30):
        raise AssertionError(f"the parameter services of {node_name} did not appear")
    return client


def set_parameter(client: Any, name: str, value: Any, type_: Any = None) -> Any:
    """Set one parameter as ``ros2 param set`` does; the SetParametersResult (successful, reason)."""
    from rclpy.parameter import Parameter

    parameter = Parameter(name, value=value) if type_ is None else Parameter(name, type_, value)
    future = client.set_parameters([parameter])
    wait_until(future.done, 20, "set_parameters answer")
    return future.result().results[0]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s: {what}")
