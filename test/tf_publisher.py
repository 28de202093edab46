"""A robot's TF as a driver and robot_state_publisher send it, for TF tests over real DDS.

Run as a script: the camera mount ``base_link -> camera`` once on /tf_static (StaticTransformBroadcaster),
and ``map -> base_link`` at 30 Hz on /tf (TransformBroadcaster), stamped with the node's clock. The base
drives along x at ``SPEED`` from ``--origin`` (seconds), turned 90 degrees: linear in time, so a test knows
the pose at any stamp, interpolated ones included. Prints ``PUBLISHING`` once both broadcasters exist.
"""
from __future__ import annotations

import argparse
import math

from geometry_msgs.msg import TransformStamped

PUBLISHING = "PUBLISHING"
RATE_HZ = 30.0
SPEED = 0.5  # m/s along the map's x
BASE_Y = 0.5
YAW = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))  # x, y, z, w: 90 degrees about z
# An optical frame (z forward, x right, y down) 20 cm ahead of the base and 1 m up.
MOUNT = ((0.2, 0.0, 1.0), (-0.5, 0.5, -0.5, 0.5))


def stamped(parent: str, child: str, nanoseconds: int, translation, rotation) -> TransformStamped:
    """The TransformStamped of ``child`` in ``parent`` at ``nanoseconds`` (rotation as x, y, z, w)."""
    transform = TransformStamped()
    transform.header.frame_id, transform.child_frame_id = parent, child
    transform.header.stamp.sec, transform.header.stamp.nanosec = divmod(nanoseconds, 1_000_000_000)
    t, r = transform.transform.translation, transform.transform.rotation
    t.x, t.y, t.z = (float(value) for value in translation)
    r.x, r.y, r.z, r.w = (float(value) for value in rotation)
    return transform


def base_in_map(nanoseconds: int, origin_s: int) -> TransformStamped:
    """Where the base is at a stamp (the time since the origin in integers first: no float rounding of epochs)."""
    x = SPEED * ((nanoseconds - origin_s * 1_000_000_000) * 1e-9)
    return stamped("map", "base_link", nanoseconds, (x, BASE_Y, 0.0), YAW)


def camera_mount() -> TransformStamped:
    return stamped("base_link", "camera", 0, *MOUNT)


def main() -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--origin", type=int, required=True, help="when the base was at x = 0 (seconds)")
    origin = parser.parse_args().origin
    rclpy.init()
    node = rclpy.create_node("tf_publisher")
    static = StaticTransformBroadcaster(node)
    static.sendTransform(camera_mount())
    moving = TransformBroadcaster(node)
    node.create_timer(1.0 / RATE_HZ, lambda: moving.sendTransform(
        base_in_map(node.get_clock().now().nanoseconds, origin)))
    print(PUBLISHING, flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
