"""The node as users start and drive it: the real ``ros2 launch``, ``ros2 run``, ``ros2 param``,
``ros2 lifecycle`` and ``ros2 topic echo``, with their own params files, with and without a namespace."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from sensor_msgs.msg import Image

from node_frames import rgb_message, synthetic_rgb
from ros2_cli import Launch, lifecycle_set, ros2, ros2_executable, stop_daemon, wait_for_state
from ros_harness import wait_until

ROOT = Path(__file__).resolve().parents[1]
TINY = {"clip_model": "ViT-Tiny-16-test", "random_weights": True, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def daemon():
    """The first ``ros2`` call starts a daemon for this ROS_DOMAIN_ID: stop it when the module ends."""
    yield
    stop_daemon()


def params_file(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return path


def param_get(node: str, name: str):
    result = ros2("param", "get", node, name)
    assert result.returncode == 0, result.stdout
    kind, _, value = result.stdout.strip().partition(" is: ") if " is: " in result.stdout else \
        result.stdout.strip().partition(" are: ")
    return yaml.safe_load(value) if "values" in kind else value


def echo_once(probe, topic: str, message_type: str, frame_topic: str, *options: str) -> str:
    """``ros2 topic echo --once`` while frames are sent: what it printed."""
    echo = subprocess.Popen([ros2_executable(), "topic", "echo", "--once", *options, topic, message_type],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    publisher = probe.node.create_publisher(Image, frame_topic, 10)
    try:
        deadline = time.monotonic() + 60
        while echo.poll() is None and time.monotonic() < deadline:
            publisher.publish(rgb_message(synthetic_rgb(160, 120)))
            time.sleep(0.3)
    finally:
        if echo.poll() is None:
            echo.send_signal(signal.SIGINT)
        output, _ = echo.communicate(timeout=30)
        probe.node.destroy_publisher(publisher)
    return output


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The node from ``ros2 launch`` with a user's params file and no namespace."""
    directory = tmp_path_factory.mktemp("launch_plain")
    file = params_file(directory / "mine.yaml", image_topics=["/cli_front/image_raw"], prompts=["road", "car|truck"],
                       heads="/opt/robot/heads.pt", **TINY)
    launch = Launch(directory, f"params_file:={file}")
    try:  # stopped even when the set-up fails: a node left running would answer the next module's calls
        wait_for_state("/clip_dinoiser", "active", launch)
        yield launch
    finally:
        status = launch.stop()
    assert status == 0, launch.log()
    assert "Traceback" not in launch.log()


def test_launch_takes_the_users_params_file(launched):
    assert param_get("/clip_dinoiser", "prompts") == ["road", "car|truck"]
    assert param_get("/clip_dinoiser", "image_topics") == ["/cli_front/image_raw"]
    assert param_get("/clip_dinoiser", "heads") == "/opt/robot/heads.pt"


def test_topic_echo_shows_label_info_mask_and_summary(launched, probe):
    mask = echo_once(probe, "/cli_front/segmentation/mask", "sensor_msgs/msg/Image", "/cli_front/image_raw", "--no-arr")
    assert "encoding: mono8" in mask and "width: 160" in mask and "height: 120" in mask, mask
    # latched, and sent with the first mask: a later echo still gets it
    info = ros2("topic", "echo", "--once", "--qos-durability", "transient_local", "--qos-reliability", "reliable",
                "/cli_front/segmentation/label_info", "vision_msgs/msg/LabelInfo")
    assert "class_name: road" in info.stdout and "class_name: car" in info.stdout, info.stdout
    summary = echo_once(probe, "/cli_front/segmentation/class_confidences", "clip_dinoiser_ros/msg/ClassConfidences",
                        "/cli_front/image_raw")
    assert "- road" in summary and "- car" in summary and "vocabulary_version: 1" in summary, summary


def test_param_set_and_get_with_refusals_naming_what_is_allowed(launched):
    assert "Set parameter successful" in ros2("param", "set", "/clip_dinoiser", "mode", "slide").stdout
    assert param_get("/clip_dinoiser", "mode") == "slide"
    refused = ros2("param", "set", "/clip_dinoiser", "mode", "foo")
    assert "Setting parameter failed: mode: 'foo' is refused; allowed: one of whole, slide" in refused.stdout
    refused = ros2("param", "set", "/clip_dinoiser", "prompts", "[sky, Sky]")
    assert "Setting parameter failed" in refused.stdout and "duplicate class names" in refused.stdout
    assert param_get("/clip_dinoiser", "mode") == "slide"
    assert "Set parameter successful" in ros2("param", "set", "/clip_dinoiser", "max_rate_hz", "5").stdout
    assert ros2("param", "set", "/clip_dinoiser", "mode", "whole").returncode == 0


def test_lifecycle_set_stops_and_restarts_streaming(launched, probe):
    mask = "/cli_front/segmentation/mask"
    lifecycle_set("/clip_dinoiser", "deactivate", "Transitioning successful", "inactive", launched)
    wait_until(lambda: mask not in ros2("topic", "list").stdout.split(), 20, "the mask topic gone")
    lifecycle_set("/clip_dinoiser", "activate", "Transitioning successful", "active", launched)
    # Counted by a node of this test, not the ros2 daemon: once, on a loaded CI machine, the daemon's graph
    # had not shown the new publisher 20 s after the transition.
    wait_until(lambda: probe.node.count_publishers(mask) == 1, 20, "the mask publisher back")


def shipped_yaml_with(**changes) -> dict:
    content = yaml.safe_load((ROOT / "config" / "clip_dinoiser.yaml").read_text())
    (key,) = content
    content[key]["ros__parameters"].update(changes)
    return content


def test_namespace_launch_applies_the_shipped_yaml(tmp_path):
    """The shipped config's structure applies under namespace:=perception (its values edited by a user)."""
    file = tmp_path / "edited.yaml"
    file.write_text(yaml.safe_dump(shipped_yaml_with(image_topics=["cam/image_raw"], prompts=["grass", "path"],
                                                     **TINY)))
    launch = Launch(tmp_path, f"params_file:={file}", "namespace:=perception")
    try:
        wait_for_state("/perception/clip_dinoiser", "active", launch)
        assert param_get("/perception/clip_dinoiser", "prompts") == ["grass", "path"]
        topics = ros2("topic", "list").stdout.split()
        assert "/perception/cam/segmentation/label_info" in topics and "/perception/cam/segmentation/mask" in topics
    finally:
        assert launch.stop() == 0, launch.log()


def test_qos_overrides_in_a_params_file_apply_through_ros2_launch(tmp_path, probe):
    """Per-topic QoS from the user's params file, as image_pipeline's nodes take it; the mask is read by a
    subscriber that matches only the overridden publisher (transient local), never the default (volatile).
    An input's reliability is input_reliability's alone (it applies at every activate), its other policies
    are the file's."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    camera, mask = "/qos_cam/image_raw", "/qos_cam/segmentation/mask"
    file = tmp_path / "qos.yaml"
    file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "image_topics": [camera], "prompts": ["road", "car"], **TINY,
        "qos_overrides": {
            mask: {"publisher": {"durability": "transient_local", "depth": 3, "reliability": "reliable"}},
            camera: {"subscription": {"durability": "transient_local", "depth": 2}},
        },
    }}}))
    launch = Launch(tmp_path, f"params_file:={file}")
    try:
        wait_for_state("/clip_dinoiser", "active", launch)
        discovered = lambda query, topic: wait_until(lambda: query(topic), 20, f"{topic} discovered")  # noqa: E731
        (publisher,) = discovered(probe.node.get_publishers_info_by_topic, mask)
        assert publisher.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL  # the graph does not carry depth
        (subscription,) = discovered(probe.node.get_subscriptions_info_by_topic, camera)
        assert subscription.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert subscription.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # input_reliability's
        (confidence,) = discovered(probe.node.get_publishers_info_by_topic, "/qos_cam/segmentation/confidence")
        assert confidence.qos_profile.durability == DurabilityPolicy.VOLATILE  # only what the file names changes
        late = QoSProfile(depth=3, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        masks = probe.collect(Image, mask, late)
        sender = probe.node.create_publisher(Image, camera, late)  # a volatile one would not match the input
        try:
            def answered():
                sender.publish(rgb_message(synthetic_rgb(160, 120)))
                return masks.messages
            wait_until(answered, 60, "a mask on the transient-local subscription", interval=0.3)
        finally:
            probe.node.destroy_publisher(sender)
            probe.node.destroy_subscription(masks.subscription)
    finally:
        assert launch.stop() == 0, launch.log()


def test_ros2_run_with_a_namespace_remap_applies_the_shipped_yaml(tmp_path):
    file = tmp_path / "edited.yaml"
    file.write_text(yaml.safe_dump(shipped_yaml_with(image_topics=["/run_cam/image_raw"], prompts=["sand", "rock"],
                                                     **TINY)))
    # A session of its own: Ctrl-C reaches ros2 run and the node it started, as in a terminal.
    run = subprocess.Popen([ros2_executable(), "run", "clip_dinoiser_ros", "clip_dinoiser_node", "--ros-args",
                            "-r", "__ns:=/perception", "--params-file", str(file)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
                           start_new_session=True)
    try:
        wait_for_state("/perception/clip_dinoiser", "active")
        assert param_get("/perception/clip_dinoiser", "prompts") == ["sand", "rock"]
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            output, _ = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            output, _ = run.communicate()
    assert run.returncode == 0 and "Traceback" not in output, output


def test_launch_arguments_override_the_file_only_when_given(tmp_path):
    file = params_file(tmp_path / "mine.yaml", image_topics=["/cli_over/image_raw"], prompts=["road", "car"],
                       heads="/opt/robot/heads.pt", max_rate_hz=2.0, **TINY)
    launch = Launch(tmp_path, f"params_file:={file}", "prompts:=['sky', 'tree']", "namespace:=over")
    try:
        wait_for_state("/over/clip_dinoiser", "active", launch)
        assert param_get("/over/clip_dinoiser", "prompts") == ["sky", "tree"]
        assert param_get("/over/clip_dinoiser", "image_topics") == ["/cli_over/image_raw"]
        assert param_get("/over/clip_dinoiser", "heads") == "/opt/robot/heads.pt"
        assert param_get("/over/clip_dinoiser", "max_rate_hz") == "2.0"
    finally:
        assert launch.stop() == 0, launch.log()


def test_a_refused_launch_argument_stops_the_node_with_the_reason(tmp_path):
    file = params_file(tmp_path / "mine.yaml", image_topics=["/cli_bad/image_raw"], **TINY)
    launch = Launch(tmp_path, f"params_file:={file}", "mode:=foo", "namespace:=bad")
    try:
        assert launch.wait(120) is not None, launch.log()
    finally:
        launch.stop()
    log = launch.log()
    assert "mode: 'foo' is refused; allowed: one of whole, slide" in log and "exit code 1" in log
    assert "Traceback" not in log


def test_autostart_false_with_a_refused_value_stays_unconfigured_until_fixed(tmp_path):
    file = params_file(tmp_path / "mine.yaml", image_topics=["/cli_fix/image_raw"], **TINY)
    launch = Launch(tmp_path, f"params_file:={file}", "autostart:=false", "mode:=foo", "namespace:=fix")
    try:
        wait_for_state("/fix/clip_dinoiser", "unconfigured", launch)
        assert "staying unconfigured" in launch.log() and "mode: 'foo' is refused" in launch.log()
        lifecycle_set("/fix/clip_dinoiser", "configure", "Transitioning failed", "unconfigured", launch)
        wait_until(lambda: "configure refused until these start-up values are set" in launch.log(), 10, "the reason")
        assert ros2("param", "set", "/fix/clip_dinoiser", "mode", "slide").returncode == 0
        lifecycle_set("/fix/clip_dinoiser", "configure", "Transitioning successful", "inactive", launch)
        lifecycle_set("/fix/clip_dinoiser", "activate", "Transitioning successful", "active", launch)
    finally:
        assert launch.stop() == 0, launch.log()


def test_show_args_lists_every_parameter():
    from clip_dinoiser_ros.ros.parameters import PARAMETERS

    shown = ros2("launch", "clip_dinoiser_ros", "clip_dinoiser.launch.py", "--show-args").stdout
    missing = [spec.name for spec in PARAMETERS if f"'{spec.name}':" not in shown]
    assert not missing and "'params_file':" in shown and "'namespace':" in shown, shown
