"""Semantic segmentation scores with mmseg's definitions, so our numbers compare with published ones.

Everything is derived from one confusion matrix: rows are ground-truth classes, columns predicted
classes plus a last "no class" column for predictions outside the class ids (e.g. 255 where a
confidence threshold left a pixel unlabelled). Such pixels never intersect, yet they count in their
ground-truth class's area, which is how mmseg 0.27's ``intersect_and_union`` treats them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(side) for side in shape)


class ConfusionMatrix:
    """Counts accumulated over frames; a plain int64 matrix so it can be summed across processes."""

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self._matrix = np.zeros((num_classes, num_classes + 1), np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the (num_classes, num_classes + 1) counts."""
        return self._matrix.copy()

    def update(self, prediction: np.ndarray, ground_truth: np.ndarray, ignore_index: int = 255) -> np.ndarray:
        """Add one frame and return its own matrix, for per-frame scores."""
        prediction, ground_truth = np.asarray(prediction), np.asarray(ground_truth)
        if prediction.shape != ground_truth.shape:
            raise ValueError(
                f"prediction {_size(prediction.shape)} and ground truth {_size(ground_truth.shape)} differ in size"
            )
        for name, labels in (("prediction", prediction), ("ground truth", ground_truth)):
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")
        classes = self.num_classes
        kept = ground_truth != ignore_index
        truth = ground_truth[kept].astype(np.int64)
        unknown = (truth < 0) | (truth >= classes)
        if unknown.any():
            values = ", ".join(str(value) for value in np.unique(truth[unknown])[:10])
            raise ValueError(
                f"ground truth holds values {values} that are neither a class id (0..{classes - 1}) "
                f"nor ignore_index ({ignore_index})"
            )
        predicted = prediction[kept].astype(np.int64)
        predicted[(predicted < 0) | (predicted >= classes)] = classes  # the "no class" column
        counts = np.bincount(truth * (classes + 1) + predicted, minlength=classes * (classes + 1))
        frame = counts.reshape(classes, classes + 1)
        self._matrix += frame
        return frame

    def add(self, matrix: np.ndarray) -> None:
        """Add counts made elsewhere, e.g. by another process."""
        matrix = np.asarray(matrix)
        if matrix.shape != self._matrix.shape:
            raise ValueError(f"matrix {_size(matrix.shape)} does not match {_size(self._matrix.shape)}")
        self._matrix += matrix.astype(np.int64)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare or hash
class Scores:
    """Per-class and summary scores; NaN marks what cannot be measured (a class nobody saw)."""

    iou: np.ndarray
    accuracy: np.ndarray
    miou: float
    mean_accuracy: float
    pixel_accuracy: float
    pixels: int


def _nanmean(values: np.ndarray) -> float:
    """Mean over measured values; NaN, without a RuntimeWarning, when there are none."""
    measured = values[~np.isnan(values)]
    return float(measured.mean()) if measured.size else float("nan")


def scores(matrix: np.ndarray) -> Scores:
    """Scores of a (K, K + 1) confusion matrix, as mmseg's ``total_area_to_metrics`` computes them."""
    matrix = np.asarray(matrix)
    classes = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != classes + 1:
        raise ValueError(f"confusion matrix must be K x (K + 1), got {_size(matrix.shape)}")
    counts = matrix.astype(np.float64)
    intersect = np.diag(counts[:, :classes])
    area_label = counts.sum(axis=1)
    area_pred = counts[:, :classes].sum(axis=0)
    union = area_pred + area_label - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersect / union, np.nan)
        accuracy = np.where(area_label > 0, intersect / area_label, np.nan)
    pixels = int(matrix.sum())
    return Scores(
        iou=iou,
        accuracy=accuracy,
        miou=_nanmean(iou),
        mean_accuracy=_nanmean(accuracy),
        pixel_accuracy=float(intersect.sum() / pixels) if pixels else float("nan"),
        pixels=pixels,
    )
