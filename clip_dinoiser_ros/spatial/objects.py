"""Objects from a label image: connected regions per class and their robust 3D extent."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

# A box spans these percentiles of its region's points on each axis: a few stray depth pixels (edges,
# reflections) would decide a min/max box alone.
BOX_PERCENTILES = (2.0, 98.0)
MIN_BOX_POINTS = 3
# Percentiles of a large region are taken over an even grid of about this many of its pixels: the same
# box to within a pixel's depth, at a fixed cost per region.
MAX_BOX_SAMPLES = 1024


@dataclass(frozen=True)
class Region:
    """One 8-connected region of one class; pixel box (x, y, width, height) of the pixels it covers."""

    class_id: int
    x: int
    y: int
    width: int
    height: int
    pixels: int
    score: float  # mean winning probability over the region
    mask: np.ndarray  # (height, width) bool inside the box


@dataclass(frozen=True)
class Box3D:
    region: Region
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    points: int


def class_pixels(labels: np.ndarray, classes: int) -> np.ndarray:
    """Pixels per class id below ``classes``: a histogram for uint8 masks (cv2, 10x a bincount), else a bincount."""
    if labels.dtype == np.uint8:
        return cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()[:classes]
    return np.bincount(labels.ravel().astype(np.intp), minlength=classes)[:classes]


def label_type(width: int, height: int) -> int:
    """16-bit component labels when they cannot overflow (measured 20-30 % faster), else 32-bit.

    8-connected regions are at least one pixel apart, so a box holds at most one per 2x2 block, plus the
    background's label 0.
    """
    return cv2.CV_16U if -(-width // 2) * -(-height // 2) < 0xFFFF else cv2.CV_32S


def regions(labels: np.ndarray, confidence: np.ndarray, classes: int, min_pixels: int) -> list[Region]:
    """Every region of at least ``min_pixels`` pixels of each class id below ``classes`` (unlabelled skipped).

    Each class is labelled inside the box around all its pixels only: most classes cover a part of the
    frame, and labelling is the cost that grows with the pixels.
    """
    found: list[Region] = []
    present = np.flatnonzero(class_pixels(labels, classes) >= min_pixels)
    for class_id in present:
        pixels = (labels == class_id).view(np.uint8)
        left, top, width, height = cv2.boundingRect(pixels)
        _, components, stats, _ = cv2.connectedComponentsWithStats(
            np.ascontiguousarray(pixels[top:top + height, left:left + width]), connectivity=8,
            ltype=label_type(width, height))
        for component in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels) + 1:
            x, y, w, h, area = (int(v) for v in stats[component])
            inside = components[y:y + h, x:x + w] == component
            x, y = x + left, y + top
            score = cv2.mean(confidence[y:y + h, x:x + w], mask=inside.view(np.uint8))[0]
            found.append(Region(int(class_id), x, y, w, h, area, score, inside))
    return found


def box_3d(region: Region, xyz: np.ndarray) -> Optional[Box3D]:
    """The region's extent over the percentiles of its finite points (``xyz``: back_project's planes);
    None with fewer than MIN_BOX_POINTS."""
    step = max(1, int(np.sqrt(region.pixels / MAX_BOX_SAMPLES)))  # an even grid over the region's pixels
    rows, columns = np.nonzero(region.mask[::step, ::step])
    width = xyz.shape[2]
    pixels = (rows * step + region.y) * width + (columns * step + region.x)  # flat indices: take() is fast
    z = xyz[2].reshape(-1).take(pixels)
    valid = np.isfinite(z)
    if np.count_nonzero(valid) < MIN_BOX_POINTS:
        return None
    pixels = pixels[valid]
    points = np.stack([xyz[0].reshape(-1).take(pixels), xyz[1].reshape(-1).take(pixels), z[valid]])  # (3, n)
    points.sort(axis=1)  # nearest-rank percentiles: np.percentile costs more than the sort
    low, high = (points[:, round(q / 100.0 * (points.shape[1] - 1))] for q in BOX_PERCENTILES)
    center = tuple(float(v) for v in (low + high) / 2.0)
    size = tuple(float(v) for v in high - low)
    return Box3D(region, center, size, points.shape[1])  # type: ignore[arg-type]


def boxes_3d(found: list[Region], xyz: np.ndarray) -> list[Box3D]:
    return [box for region in found if (box := box_3d(region, xyz)) is not None]
