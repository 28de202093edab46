"""The ROS 2 shell: the lifecycle node, its parameters, entry point and diagnostics (all of rclpy is here),
and the node's own concurrency pieces beside it (frame mailbox, vocabulary switcher, short-lived torch
threads), which the bag tool and the demo do not use."""
