"""ROS 2 side of the package: message conversions and the segmentation node."""
