"""Message definitions for bags: the standard ROS 2 types plus vision_msgs and our own.

rosbag2 files carry each topic's definition (mcap needs it to decode). rosbags ships the standard
ones; vision_msgs and clip_dinoiser_ros/ClassConfidences are read from the installed ``.msg`` files.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from .errors import BagError

EXTRA_PACKAGES = ("vision_msgs", "clip_dinoiser_ros")


def _share_directory(package: str) -> Path:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError as error:
        raise BagError(f"the message package {package} is not installed (make install builds it)") from error


@lru_cache(maxsize=1)
def ros2_typestore() -> Typestore:
    """The Jazzy (LTS) store; Kilted's standard messages are the same."""
    store = get_typestore(Stores.ROS2_JAZZY)
    definitions = {}
    for package in EXTRA_PACKAGES:
        for path in sorted((_share_directory(package) / "msg").glob("*.msg")):
            definitions.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(definitions)
    return store


def message_type_name(message_class: type) -> str:
    """``sensor_msgs.msg._image.Image`` -> ``sensor_msgs/msg/Image``."""
    return f"{message_class.__module__.split('.')[0]}/msg/{message_class.__name__}"
