"""Rosbags in and out: reading camera bags, writing the node's outputs, replaying and recording live.

Built on the pure-Python ``rosbags`` package (ROS 1 bags, rosbag2 in sqlite3 and mcap). Reading and
metrics need no ROS installation; writing uses the ROS 2 message classes so the bytes are exactly what
the live node publishes.
"""
