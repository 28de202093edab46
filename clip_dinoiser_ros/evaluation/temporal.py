"""Temporal consistency (VSPW's TC): how much a prediction flickers, with no ground truth.

The previous frame's labels are warped onto the current frame along dense optical flow (OpenCV's DIS),
then compared with the current labels by mIoU over the pixels where the flow is valid: inside both
frames and forward-backward consistent (occlusions and flow failures drop out). A predictor that
follows the scene scores 1.0; one that flickers or lags behind changing motion scores less.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

FLOW_METHOD = "OpenCV DIS optical flow (preset medium), backward flow, forward-backward check"
CONSISTENCY_PX = 1.0  # forward-backward residual allowed, plus CONSISTENCY_SHARE of the motion
CONSISTENCY_SHARE = 0.05
OUTSIDE = 0xFFFF  # where the previous frame has no pixel; like any id >= num_classes (255: unlabelled), no class


def dense_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32: for each pixel of ``source`` (grey uint8) where it is in ``target``."""
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return flow.calc(np.ascontiguousarray(source), np.ascontiguousarray(target), None)


def warp(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``labels`` of the previous frame at each current pixel, along ``flow`` (current -> previous), nearest;
    uint16 (cv2 cannot remap int32), OUTSIDE beyond the frame."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    ids = np.minimum(labels, OUTSIDE).astype(np.uint16)
    return cv2.remap(ids, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=OUTSIDE)


def valid_flow(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Current pixels whose backward flow lands inside the previous frame and whose round trip closes."""
    height, width = backward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    x, y = grid_x + backward[..., 0], grid_y + backward[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    returned = cv2.remap(forward, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    residual = np.linalg.norm(backward + returned, axis=-1)
    return inside & (residual <= CONSISTENCY_PX + CONSISTENCY_SHARE * np.linalg.norm(backward, axis=-1))


def pair_miou(warped: np.ndarray, current: np.ndarray, valid: np.ndarray, num_classes: int) -> Optional[float]:
    """mIoU of two label images over ``valid`` pixels, over the classes either holds; None with no such pixel."""
    keep = valid & (warped < num_classes) & (current < num_classes)  # both labelled (ids beyond: no class)
    if not keep.any():
        return None
    a, b = warped[keep].astype(np.int64), current[keep].astype(np.int64)
    counts = np.bincount(a * num_classes + b, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    intersection = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())


@dataclass
class TemporalConsistency:
    """Feed frames in order (grey image, labels); ``score`` is the mean TC over consecutive pairs."""

    num_classes: int
    per_pair: list[float] = field(default_factory=list)
    _previous: Optional[tuple[np.ndarray, np.ndarray]] = None

    def add(self, grey: np.ndarray, labels: np.ndarray, flow: Optional[np.ndarray] = None) -> Optional[float]:
        """This pair's TC (None for the first frame or with no valid pixel); ``flow``: a known backward flow
        (current -> previous) instead of the estimated one, for tests and ground-truth motion."""
        if grey.shape[:2] != labels.shape:
            raise ValueError(f"image {grey.shape[:2]} and labels {labels.shape} differ in size")
        previous, self._previous = self._previous, (grey, labels)
        if previous is None or previous[0].shape != grey.shape:
            return None
        if flow is None:
            backward, forward = dense_flow(grey, previous[0]), dense_flow(previous[0], grey)
            valid = valid_flow(backward, forward)
        else:
            backward, valid = flow, valid_flow(flow, -flow)
        score = pair_miou(warp(previous[1], backward), labels, valid, self.num_classes)
        if score is not None:
            self.per_pair.append(score)
        return score

    @property
    def score(self) -> Optional[float]:
        return float(np.mean(self.per_pair)) if self.per_pair else None
