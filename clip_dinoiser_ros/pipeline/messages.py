"""Segmentation results as standard, self-describing ROS messages (no rclpy here).

The live node publishes these messages and the bag tool writes them, so both carry the same types and
encodings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo, VisionClass

from ..msg import ClassConfidences
from ..visualization import overlay
from .image_codec import array_to_image

if TYPE_CHECKING:
    from ..model import Segmentation

UNLABELLED_MONO8 = 255  # vision_msgs' convention: the largest id of the mask's type is "unlabelled"
UNLABELLED_MONO16 = 65535


@dataclass(frozen=True)
class Wanted:
    """The outputs of one frame that somebody wants (the mask is always made)."""

    confidence: bool
    class_confidences: bool
    overlay: bool
    class_maps: bool
    points: bool = False
    detections: bool = False
    detections_3d: bool = False
    features: bool = False  # the engine's patch features (SegmentationFeatures)


def stamp_ns(message: Any) -> int:
    """The header stamp in ns: frames are paired, and masks matched with labels, by it."""
    return int(message.header.stamp.sec) * 1_000_000_000 + int(message.header.stamp.nanosec)


def thresholded_labels(segmentation: Segmentation, threshold: float) -> np.ndarray:
    """Class ids with pixels below ``threshold`` set to the unlabelled value of the mask encoding."""
    classes = len(segmentation.prompts)
    dtype, unlabelled = (np.uint8, UNLABELLED_MONO8) if classes <= 255 else (np.uint16, UNLABELLED_MONO16)
    labels = segmentation.labels.astype(dtype)
    if threshold > 0.0:
        labels[segmentation.confidence < threshold] = unlabelled
    return labels


def mask_image(labels: np.ndarray, header: Header) -> Image:
    return array_to_image(labels, "mono8" if labels.dtype == np.uint8 else "mono16", header)


def float_image(values: np.ndarray, header: Header) -> Image:
    return array_to_image(np.ascontiguousarray(values, dtype=np.float32), "32FC1", header)


def confidence_image(confidence: np.ndarray, encoding: str, header: Header) -> Image:
    """32FC1: the probability; mono8: round(255 * p), the 0-255 confidence Nav2's layer reads."""
    if encoding == "mono8":
        scaled = np.rint(np.clip(confidence, 0.0, 1.0) * 255.0).astype(np.uint8)
        return array_to_image(scaled, "mono8", header)
    return float_image(confidence, header)


def overlay_image(rgb: np.ndarray, labels: np.ndarray, names: tuple[str, ...], header: Header) -> Image:
    return array_to_image(overlay(rgb, labels, names), "rgb8", header)


def label_info(names: Sequence[str], threshold: float, header: Header) -> LabelInfo:
    """Which mask value means which class (vision_msgs/LabelInfo: class ids 0..N-1 by prompt order)."""
    return LabelInfo(
        header=header,
        class_map=[VisionClass(class_id=index, class_name=name) for index, name in enumerate(names)],
        threshold=float(threshold),
    )


def class_statistics(segmentation: Segmentation, labels: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Per class: coverage (pixel fraction), mean winning probability over its pixels, max probability.

    Unlabelled pixels (255 or 65535) fall in bins past the classes and are cut off with them.
    """
    classes = len(segmentation.prompts)
    flat = labels.ravel().astype(np.intp)  # bincount casts anything else on a slow path (8x slower)
    counts = np.bincount(flat, minlength=classes)[:classes].astype(np.float64)
    weights = segmentation.confidence.ravel().astype(np.float64)
    confidence_sums = np.bincount(flat, weights=weights, minlength=classes)[:classes]
    coverage = counts / max(flat.size, 1)
    mean_confidence = np.divide(confidence_sums, counts, out=np.zeros(classes), where=counts > 0)
    return coverage.tolist(), mean_confidence.tolist(), segmentation.class_max.astype(np.float64).tolist()


def class_confidences(segmentation: Segmentation, labels: np.ndarray, version: int, header: Header) -> ClassConfidences:
    coverage, mean_confidence, max_confidence = class_statistics(segmentation, labels)
    return ClassConfidences(
        header=header, vocabulary_version=version, labels=list(segmentation.prompts),
        coverage=coverage, mean_confidence=mean_confidence, max_confidence=max_confidence,
    )


def camera_messages(segmentation: Segmentation, labels: np.ndarray, rgb: np.ndarray, header: Header, *,
                    version: int, confidence_encoding: str, wanted: Wanted) -> dict[str, Any]:
    """One frame's 2D messages by output name (``labels``: thresholded), the mask first; per-class maps and
    the 3D outputs are not among them."""
    messages: dict[str, Any] = {"mask": mask_image(labels, header)}
    if wanted.confidence:
        messages["confidence"] = confidence_image(segmentation.confidence, confidence_encoding, header)
    if wanted.class_confidences:
        messages["class_confidences"] = class_confidences(segmentation, labels, version, header)
    if wanted.overlay:
        messages["overlay"] = overlay_image(rgb, labels, segmentation.prompts, header)
    return messages
