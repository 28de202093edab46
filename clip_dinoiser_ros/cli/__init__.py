"""Command-line tools built on the engine (no ROS needed)."""
