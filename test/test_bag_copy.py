"""``clip-dinoiser-bag segment`` keeps every topic it does not make byte for byte, whatever its type: /tf and
/tf_static (no tf2_msgs Python class is needed), a custom type known only from the bag's own definition, and
the camera's images; each under its recorded type, definition, type hash and offered QoS, at its log time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from clip_dinoiser_ros.cli.bag import main
from node_frames import synthetic_rgb

TINY = ["--clip-model", "ViT-Tiny-16-test", "--random-weights", "--short-side", "32"]
CUSTOM = "my_robot_msgs/msg/Odometer"
CUSTOM_DEFINITION = "float64 metres\nstring wheel\nuint8[] raw\n"
FRAMES = 4
FOREVER = QosTime(sec=9223372036, nsec=854775807)
LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, FOREVER, FOREVER,
              QosLiveliness.AUTOMATIC, FOREVER, False)  # as tf2_ros' static broadcaster offers it


def robot_store():
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(CUSTOM_DEFINITION, CUSTOM))
    return store


def write_robot_bag(path: Path, storage: StoragePlugin) -> None:
    """A camera, /tf at every frame, one /tf_static, and a custom type interleaved, as a robot records them."""
    store = robot_store()
    types = store.types
    stamp = lambda ns: types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)  # noqa: E731

    def transform(ns: int, parent: str, child: str, x: float):
        return types["geometry_msgs/msg/TransformStamped"](
            header=types["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=parent), child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=x, y=0.0, z=0.0),
                rotation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))

    with Writer(path, version=9, storage_plugin=storage) as writer:
        static = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=store,
                                       offered_qos_profiles=[LATCHED])
        tf = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=store)
        camera = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        custom = writer.add_connection("/odometer", CUSTOM, typestore=store)
        start = 100 * 10**9
        writer.write(static, start - 5, store.serialize_cdr(types["tf2_msgs/msg/TFMessage"](
            transforms=[transform(start, "base_link", "camera", 0.2)]), "tf2_msgs/msg/TFMessage"))
        for index in range(FRAMES):
            ns = start + index * 10**8
            rgb = synthetic_rgb(40, 30, seed=index)
            image = types["sensor_msgs/msg/Image"](
                header=types["std_msgs/msg/Header"](stamp=stamp(ns), frame_id="camera"), height=30, width=40,
                encoding="rgb8", is_bigendian=0, step=120, data=rgb.reshape(-1))
            writer.write(tf, ns - 1, store.serialize_cdr(types["tf2_msgs/msg/TFMessage"](
                transforms=[transform(ns, "odom", "base_link", index / 10)]), "tf2_msgs/msg/TFMessage"))
            writer.write(camera, ns, store.serialize_cdr(image, "sensor_msgs/msg/Image"))
            writer.write(custom, ns + 1, store.serialize_cdr(types[CUSTOM](
                metres=index * 0.5, wheel=f"left {index}", raw=np.arange(index, dtype=np.uint8)), CUSTOM))


def recorded(path: Path) -> dict[str, tuple]:
    """Per topic: its connection's (type, definition, hash, serialisation, QoS) and its (log time, bytes)."""
    with AnyReader([path]) as reader:
        connections = {c.topic: c for c in reader.connections}
        written: dict[str, list] = {topic: [] for topic in connections}
        for connection, timestamp, raw in reader.messages():
            written[connection.topic].append((timestamp, bytes(raw)))
    return {topic: ((c.msgtype, c.msgdef.data, c.digest, c.ext.serialization_format, c.ext.offered_qos_profiles),
                    written[topic]) for topic, c in connections.items()}


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_segment_keeps_every_other_topic_byte_for_byte(tmp_path, capsys, storage):
    source = tmp_path / "robot"
    write_robot_bag(source, storage)
    out = tmp_path / "labelled"
    assert main(["segment", str(source), "--topic", "/cam/image_raw", "--prompts", "floor", "wall", "--out",
                 str(out), *TINY]) == 0
    assert "not copied" not in capsys.readouterr().err
    before, after = recorded(source), recorded(out)
    assert set(before) == {"/tf", "/tf_static", "/cam/image_raw", "/odometer"}
    assert {"/cam/segmentation/mask", "/cam/segmentation/label_info"} <= set(after)
    for topic, (connection, messages) in before.items():
        assert after[topic][0] == connection, topic
        assert after[topic][1] == messages, topic
    assert len(after["/tf"][1]) == FRAMES and after["/odometer"][0][1] == CUSTOM_DEFINITION
    assert after["/tf_static"][0][4] == [LATCHED]
    with AnyReader([out]) as reader:  # and the copies read back as their types, from the definition carried
        (odometer,) = [c for c in reader.connections if c.topic == "/odometer"]
        last = list(reader.messages(connections=[odometer]))[-1]
        message = reader.deserialize(last[2], CUSTOM)
    assert message.wheel == f"left {FRAMES - 1}" and list(message.raw) == list(range(FRAMES - 1))
