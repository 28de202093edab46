"""rosbags' messages as rclpy messages, field by field, so ROS 1 bags replay and re-record as ROS 2.

Fields the ROS 2 type lacks (ROS 1's ``Header.seq``) are dropped; byte arrays stay one bytes copy.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from rosidl_runtime_py.utilities import get_message


def message_class(msgtype: str) -> type:
    """The rclpy class of ``pkg/msg/Name``; a ROS 1 ``pkg/Name`` is taken as its ROS 2 twin."""
    package, *_, name = msgtype.split("/")
    try:
        return get_message(f"{package}/msg/{name}")
    except (AttributeError, ModuleNotFoundError, ValueError) as error:
        raise ValueError(f"no ROS 2 Python type for {msgtype} here: {error}") from error


def _value(source: Any, field_type: str) -> Any:
    if isinstance(source, np.ndarray):
        return source.tobytes() if source.dtype == np.uint8 else source.tolist()
    if "/" not in field_type:  # a primitive, string, or a sequence of them
        return source
    element = field_type.split("<", 1)[-1].rstrip(">").split("[", 1)[0]
    if isinstance(source, (list, tuple)):
        return [to_rclpy(item, element) for item in source]
    return to_rclpy(source, element)


def to_rclpy(source: Any, msgtype: str) -> Any:
    """A rosbags message (any ROS version) as an instance of the rclpy class of the same type."""
    cls = message_class(msgtype)
    target = cls()
    for name, field_type in cls.get_fields_and_field_types().items():
        if hasattr(source, name):
            setattr(target, name, _value(getattr(source, name), field_type))
    return target
