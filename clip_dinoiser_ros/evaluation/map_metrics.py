"""A voxel map scored against a labelled point cloud, with the definitions of ConceptGraphs' Replica protocol.

ConceptGraphs (github.com/concept-graphs/concept-graphs, ``conceptgraph/utils/eval.py`` ``compute_metrics``;
``conceptgraph/scripts/eval_replica_semseg.py`` ``eval_replica``), which HOV-SG and later papers reuse:

- the classes scored are those present in the scene's ground truth minus the excluded ones ("other");
  predictions are the argmax over those classes only (the others' similarities are set to -1e10);
- confusion matrix: rows ground truth, columns prediction;
- per class: accuracy (their "recall") = C[c, c] / max(1, row_c); IoU = C[c, c] / max(1, row_c + col_c - C[c, c]);
  a scored class that no pair reached keeps 0 (it is not left out of the mean);
- mAcc = the mean of the accuracies; F-mIoU = sum_c IoU_c * row_c / sum(rows) (weighted by ground-truth share).

The pairs: ConceptGraphs gives each predicted point the label of its nearest ground-truth point, at any distance
(``map-to-gt`` here, with an unlimited radius). ``gt-to-map`` (the default, as the issue asks) gives each
ground-truth point the label of its nearest voxel within the radius; a point without one stays in its class's
row as a miss (the "no class" column of ``ConfusionMatrix``), so unmapped surface lowers accuracy and IoU.
Unlabelled (negative) and excluded ground truth is left out in both directions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from scipy.spatial import cKDTree

from ..mapping import VoxelMap, query
from .metrics import ConfusionMatrix
from .ply import read_ply_vertices

ASSOCIATIONS = ("gt-to-map", "map-to-gt")
NO_VOXEL = -1  # the prediction of a ground-truth point with no voxel within the radius
LABEL_PROPERTIES = ("label", "class_id", "class", "semantic")  # the vertex property a .ply's class ids are in


@dataclass(frozen=True, eq=False)
class LabelledPoints:
    """Ground truth: (N, 3) points in the map's frame (metres) and their (N,) class ids; negative = unlabelled."""

    points: np.ndarray
    labels: np.ndarray


def read_labelled_points(path: Union[str, Path], num_classes: int) -> LabelledPoints:
    """A .npz with arrays ``points`` (N, 3) and ``labels`` (N,), or a .ply whose vertices have x y z and one of
    LABEL_PROPERTIES; ValueError saying what is wrong."""
    points, labels = ply_points(path) if Path(path).suffix.lower() == ".ply" else npz_points(path)
    if points.ndim != 2 or points.shape[1] != 3 or labels.shape != (points.shape[0],) or not points.shape[0]:
        raise ValueError(f"{path}: points must be (N, 3) and labels (N,) with N > 0, got {points.shape} and "
                         f"{labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or not np.isfinite(points).all():
        raise ValueError(f"{path}: labels must be integers and points finite")
    if labels.max() >= num_classes:
        raise ValueError(f"{path}: label {labels.max()} but the classes file names {num_classes} classes")
    return LabelledPoints(points.astype(np.float64), labels.astype(np.int64))


def npz_points(path: Union[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as content:
            return content["points"], content["labels"]
    except (KeyError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not an .npz holding 'points' (N, 3) and 'labels' (N,): {error}") from error


def ply_points(path: Union[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """x y z and the label property of the vertices; an ASCII file's labels must be whole numbers."""
    try:
        vertices = read_ply_vertices(path)
    except OSError as error:
        raise ValueError(f"{path}: {error}") from error
    label = next((name for name in LABEL_PROPERTIES if name in vertices), None)
    if label is None or not {"x", "y", "z"} <= set(vertices):
        raise ValueError(f"{path}: the vertices need x, y, z and one of {', '.join(LABEL_PROPERTIES)}; they have "
                         f"{', '.join(vertices)}")
    labels = vertices[label]
    if np.issubdtype(labels.dtype, np.floating):  # an ASCII file's values are read as floats
        whole = np.isfinite(labels).all() and np.array_equal(labels, np.round(labels))
        labels = labels.astype(np.int64) if whole else labels
    return np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1), labels


def scored_classes(labels: np.ndarray, excluded: Sequence[int] = ()) -> np.ndarray:
    """ConceptGraphs' keep_index: the class ids present in the ground truth, less the excluded ones."""
    present = np.unique(labels[labels >= 0])
    return np.setdiff1d(present, np.asarray(excluded, np.int64))


def voxel_labels(voxel_map: VoxelMap, text_embeddings: np.ndarray, text_class: np.ndarray,
                 candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 3) and class ids (N,) of the live voxels: the argmax of ``mapping.query`` over the texts of the
    ``candidates`` classes only. ``text_class`` (T,) is the class of each of the (T, E) ``text_embeddings``
    (several texts per class: synonyms); no background rule, as ConceptGraphs' plain argmax."""
    texts = np.isin(text_class, candidates)
    answer = query(voxel_map, text_embeddings[texts])
    return answer.centres, text_class[texts][answer.labels]


def pairs(truth: LabelledPoints, centres: np.ndarray, labels: np.ndarray, radius: float,
          association: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(ground-truth class, predicted class) pairs, and the voxels left out for want of a ground-truth point
    within ``radius`` (map-to-gt; gt-to-map keeps its points without a voxel as NO_VOXEL predictions)."""
    if association not in ASSOCIATIONS:
        raise ValueError(f"association must be one of {ASSOCIATIONS}, got {association!r}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if association == "gt-to-map":
        if not centres.shape[0]:
            return truth.labels, np.full(truth.labels.shape, NO_VOXEL), 0
        distance, nearest = cKDTree(centres).query(truth.points)
        return truth.labels, np.where(distance <= radius, labels[nearest], NO_VOXEL), 0
    if not centres.shape[0]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    distance, nearest = cKDTree(truth.points).query(centres)
    near = distance <= radius
    return truth.labels[nearest[near]], labels[near], int((~near).sum())


@dataclass(frozen=True, eq=False)
class MapScores:
    """Scores over the ``classes`` scored (ids); fractions, NaN when nothing was scored."""

    classes: np.ndarray
    points: np.ndarray  # ground-truth pairs per class (the F-mIoU weights)
    accuracy: np.ndarray
    iou: np.ndarray
    macc: float
    fmiou: float
    miou: float


def map_scores(matrix: np.ndarray, classes: np.ndarray) -> MapScores:
    """ConceptGraphs' ``compute_metrics`` on the rows and columns of ``classes`` of a (K, K + 1) matrix; each row
    keeps its misses (the last column) in its total."""
    rows = matrix[classes].sum(axis=1).astype(np.float64)
    inside = matrix[np.ix_(classes, classes)].astype(np.float64)
    hits = np.diag(inside)
    accuracy = hits / np.maximum(1.0, rows)
    iou = hits / np.maximum(1.0, rows + inside.sum(axis=0) - hits)
    total = rows.sum()
    if not classes.size:
        return MapScores(classes, rows, accuracy, iou, float("nan"), float("nan"), float("nan"))
    fmiou = float((iou * rows / total).sum()) if total else float("nan")
    return MapScores(classes, rows, accuracy, iou, float(accuracy.mean()), fmiou, float(iou.mean()))


@dataclass(frozen=True, eq=False)
class MapEvaluation:
    matrix: np.ndarray  # (K, K + 1): rows ground truth, columns prediction, last column no voxel
    scores: MapScores
    pairs: int  # pairs counted in the matrix
    missed: int  # of which ground-truth points without a voxel within the radius (gt-to-map)
    far_voxels: int  # voxels without a ground-truth point within the radius, left out (map-to-gt)


def evaluate_map(voxel_map: VoxelMap, truth: LabelledPoints, text_embeddings: np.ndarray, text_class: np.ndarray,
                 num_classes: int, radius: float, association: str = "gt-to-map",
                 excluded: Sequence[int] = ()) -> MapEvaluation:
    """The whole protocol: label the voxels, pair them with the ground truth, count, score."""
    classes = scored_classes(truth.labels, excluded)
    if not classes.size:
        raise ValueError("the ground truth has no labelled point of a class that is scored")
    centres, labels = voxel_labels(voxel_map, text_embeddings, text_class, classes)
    actual, predicted, far_voxels = pairs(truth, centres, labels, radius, association)
    scored = np.isin(actual, classes)
    confusion = ConfusionMatrix(num_classes)
    confusion.update(predicted[scored], actual[scored], ignore_index=NO_VOXEL)  # no scored truth is negative
    matrix = confusion.matrix
    return MapEvaluation(matrix, map_scores(matrix, classes), int(scored.sum()), int(matrix[:, -1].sum()),
                         far_voxels)
