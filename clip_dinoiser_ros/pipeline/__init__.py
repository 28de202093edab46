"""Camera frames in, the node's output messages out: the frame pipeline, without rclpy.

The live node, ``clip-dinoiser-bag segment`` and the demo all go through this package, so a labelled
bag holds exactly what the node publishes. It builds ROS messages (the message classes need no rclpy)
and decides when each camera's LabelInfo goes out; creating publishers and publishing stay in ``ros/``.
"""
