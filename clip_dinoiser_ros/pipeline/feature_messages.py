"""FrameFeatures <-> clip_dinoiser_ros/SegmentationFeatures: the one place that knows the message's layout.

Features travel as float16 bytes, patch-major (h, w, E), so a consumer reads one patch's vector contiguously
and the message is a quarter of the float32 size (512 x 30 x 40 patches: 1.2 MB).
"""
from __future__ import annotations

import numpy as np
from std_msgs.msg import Header

from clip_dinoiser_ros.msg import SegmentationFeatures

from ..spatial.patch_grid import FrameFeatures, PatchGrid

LITTLE_ENDIAN_FP16 = np.dtype("<f2")


def features_message(features: FrameFeatures, header: Header, vocabulary_version: int,
                     logit_scale: float) -> SegmentationFeatures:
    """The message of one frame's ``features`` (the image's ``header``, stamp and frame_id unchanged)."""
    grid = features.grid
    channels, rows, cols = features.features.shape
    patch_major = np.ascontiguousarray(features.features.transpose(1, 2, 0), dtype=LITTLE_ENDIAN_FP16)
    message = SegmentationFeatures(header=header, vocabulary_version=int(vocabulary_version))
    message.image_height, message.image_width = (int(v) for v in grid.image_size)
    message.resized_height, message.resized_width = (int(v) for v in grid.resized_size)
    message.patch_size = int(grid.patch_size)
    message.grid_height, message.grid_width, message.channels = int(rows), int(cols), int(channels)
    message.logit_scale = float(logit_scale)
    message.features = patch_major.tobytes()
    message.objectness = np.ascontiguousarray(features.objectness, dtype=np.float32).ravel()
    return message


def frame_features(message: SegmentationFeatures) -> FrameFeatures:
    """The FrameFeatures a message carries: (E, h, w) float32 features, (h, w) objectness, the grid.

    ValueError naming the field when the message does not describe itself consistently."""
    grid = PatchGrid((message.image_height, message.image_width), (message.resized_height, message.resized_width),
                     message.patch_size)
    rows, cols, channels = message.grid_height, message.grid_width, message.channels
    if (rows, cols) != grid.shape:
        raise ValueError(f"grid_height x grid_width is {rows}x{cols}, but a {grid.resized_size} resize in "
                         f"{grid.patch_size}-pixel patches makes {grid.shape[0]}x{grid.shape[1]}")
    expected = rows * cols * channels * LITTLE_ENDIAN_FP16.itemsize
    data = bytes(message.features) if not isinstance(message.features, (bytes, bytearray)) else message.features
    if channels < 1 or len(data) != expected:
        raise ValueError(f"features holds {len(data)} bytes, {rows}x{cols} patches x {channels} channels of "
                         f"float16 need {expected}")
    objectness = np.asarray(message.objectness, dtype=np.float32)
    if objectness.size != rows * cols:
        raise ValueError(f"objectness has {objectness.size} values, the grid {rows * cols} patches")
    values = np.frombuffer(data, LITTLE_ENDIAN_FP16).reshape(rows, cols, channels)
    return FrameFeatures(values.transpose(2, 0, 1).astype(np.float32), objectness.reshape(rows, cols), grid)
