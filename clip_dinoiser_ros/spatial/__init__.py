"""Geometry of one RGB-D frame, in numpy: camera models, registered depth, back-projection, objects.

No ROS messages here (pipeline/spatial_messages.py turns these into PointCloud2, CameraInfo and
vision_msgs detections), so the same code serves the node, the bag tool and the benchmark.
"""
from .cloud import back_project
from .depth import DepthError, registered_depth
from .intrinsics import CameraModelError, Intrinsics, same_aspect
from .objects import Box3D, Region, boxes_3d, regions
from .patch_grid import FrameFeatures, PatchGrid

__all__ = ["Box3D", "CameraModelError", "DepthError", "FrameFeatures", "Intrinsics", "PatchGrid", "Region", "back_project", "boxes_3d",
           "registered_depth", "regions", "same_aspect"]
