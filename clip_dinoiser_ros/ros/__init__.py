"""The ROS 2 shell: the lifecycle node, its parameters, entry point and diagnostics (all of rclpy is here)."""
