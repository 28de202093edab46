"""Real processes over real DDS: start the node from its console script, talk to it from a probe node."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

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


def node_executable() -> str:
    script = Path(sys.executable).parent / "clip_dinoiser_node"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: run `make install` (the tests use the installed package)")
    return str(script)


class LoggedProcess:
    """A process of a test, its output in a log file, stopped with SIGINT (then killed, reported as -9)."""

    def __init__(self, command: list[str], log_file: Path) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self._log = open(log_file, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> Optional[int]:
        """The exit status, or None when it still runs after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT, then wait; returns the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            if self.wait(timeout) is None:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class NodeProcess(LoggedProcess):
    """The clip_dinoiser node in its own process, started with --params-file."""

    def __init__(self, directory: Path, parameters: dict[str, Any], *ros_arguments: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.params_file = directory / "params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
        super().__init__([node_executable(), "--ros-args", "--params-file", str(self.params_file), *ros_arguments],
                         directory / "node.log")

    def threads(self) -> int:
        """Threads of the node process now (Python's, DDS's, torch's)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            return int(next(line.split()[1] for line in status if line.startswith("Threads:")))


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

    def call(self, client: Any, request: Any, timeout: float = 20.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} did not appear")
        future = client.call_async(request)
        wait_until(future.done, timeout, f"no answer from {client.srv_name}")
        return future.result()


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
