"""The real tf2_ros (built from geometry2 by .ci/install_ros2_tools.sh): what the mapping node and the bag tool
rely on. A Buffer filled by hand (as a bag reader fills it) answers without DDS; a TransformListener fills one
from another process's broadcasters; a time or frame with no transform raises a tf2 TransformException, which
the mapping node counts and skips."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from map_frames import quaternion_pose
from ros_harness import LoggedProcess, wait_until
from tf_publisher import MOUNT, PUBLISHING, base_in_map, camera_mount

TF_PUBLISHER = Path(__file__).resolve().parent / "tf_publisher.py"
SECOND = 1_000_000_000


def pose(transform) -> np.ndarray:
    """The 4x4 matrix of a TransformStamped."""
    t, r = transform.transform.translation, transform.transform.rotation
    return quaternion_pose(t.x, t.y, t.z, r.x, r.y, r.z, r.w)


def camera_in_map(nanoseconds: int, origin_s: int) -> np.ndarray:
    """Where the camera is at a stamp: the base's pose then the mount, as tf2 chains them."""
    return pose(base_in_map(nanoseconds, origin_s)) @ quaternion_pose(*MOUNT[0], *MOUNT[1])


def stamp_ns(transform) -> int:
    return transform.header.stamp.sec * SECOND + transform.header.stamp.nanosec


def assert_no_transform(buffer, target: str, source: str, at, exception) -> None:
    import tf2_ros

    with pytest.raises(exception) as raised:
        buffer.lookup_transform(target, source, at)
    assert isinstance(raised.value, tf2_ros.TransformException)  # the one class the mapping node catches


def test_a_buffer_filled_by_hand_chains_interpolates_and_refuses_times_it_has_no_data_for():
    import tf2_ros
    from rclpy.time import Time

    origin = 1000
    buffer = tf2_ros.Buffer()
    buffer.set_transform_static(camera_mount(), "bag")
    for seconds in (1010, 1011):
        buffer.set_transform(base_in_map(seconds * SECOND, origin), "bag")

    halfway = 1010 * SECOND + SECOND // 2
    found = buffer.lookup_transform("map", "camera", Time(nanoseconds=halfway))
    assert stamp_ns(found) == halfway
    np.testing.assert_allclose(pose(found), camera_in_map(halfway, origin), atol=1e-9)
    np.testing.assert_allclose(pose(buffer.lookup_transform("base_link", "camera", Time())),
                               quaternion_pose(*MOUNT[0], *MOUNT[1]), atol=1e-12)

    assert_no_transform(buffer, "map", "camera", Time(seconds=1012), tf2_ros.ExtrapolationException)
    assert_no_transform(buffer, "map", "camera", Time(seconds=1009), tf2_ros.ExtrapolationException)
    assert_no_transform(buffer, "map", "nowhere", Time(), tf2_ros.LookupException)


def test_a_listener_receives_another_processs_static_and_moving_transforms(probe, tmp_path):
    import tf2_ros
    from rclpy.time import Time

    origin = int(time.time())
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, probe.node)
    publisher = LoggedProcess([sys.executable, TF_PUBLISHER, "--origin", str(origin)], tmp_path / "tf.log",
                              name="the TF publisher")
    try:
        def latest():
            assert publisher.alive(), publisher.tail()
            if buffer.can_transform("map", "camera", Time()):
                return buffer.lookup_transform("map", "camera", Time())
            return None

        first = wait_until(latest, 60, f"map -> camera from the publisher ({publisher.tail()})")
        np.testing.assert_allclose(pose(first), camera_in_map(stamp_ns(first), origin), atol=1e-9)
        assert PUBLISHING in publisher.log()

        def newer():
            found = latest()
            return found if found is not None and stamp_ns(found) > stamp_ns(first) else None

        later = wait_until(newer, 30, "a second map -> base_link")
        between = (stamp_ns(first) + stamp_ns(later)) // 2
        found = buffer.lookup_transform("map", "camera", Time(nanoseconds=between))
        np.testing.assert_allclose(pose(found), camera_in_map(between, origin), atol=1e-9)
        np.testing.assert_allclose(pose(buffer.lookup_transform("base_link", "camera", Time())),
                                   quaternion_pose(*MOUNT[0], *MOUNT[1]), atol=1e-9)

        future = Time(nanoseconds=stamp_ns(later) + 3600 * SECOND)
        assert_no_transform(buffer, "map", "camera", future, tf2_ros.ExtrapolationException)
        assert_no_transform(buffer, "map", "camera", Time(seconds=origin - 3600), tf2_ros.ExtrapolationException)
        assert_no_transform(buffer, "map", "nowhere", Time(), tf2_ros.LookupException)
    finally:
        listener.unregister()
        status = publisher.stop()
    assert status == 0, publisher.tail()
