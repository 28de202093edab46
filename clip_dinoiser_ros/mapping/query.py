"""Open-vocabulary questions to a map: class probabilities of every voxel for texts given as embeddings.

The engine's rule, voxel by voxel: logits = 100 * cosine(the voxel's mean feature, each text embedding),
softmax over the texts; with a background class, a voxel that is uncertain (its best probability below
``delta``) and not an object (fused objectness <= 0.5) gets probability 1 for the background class. Unlike
the engine at patch level, the probabilities are then normalised again, so they sum to 1 (the argmax is
the same).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .half import to_float32
from .voxel_map import VoxelMap

LOGIT_SCALE = 100.0  # as model.guided_pooling.LOGIT_SCALE (not imported: that module needs torch)
DEFAULT_DELTA = 0.99
CHUNK_ROWS = 1024  # rows converted to fp32 at a time: 2 MiB at E = 512, within the cache
GROUP_ROWS = 8 * CHUNK_ROWS  # voxels whose softmax is taken together: fewer, longer array passes


@dataclass(frozen=True)
class QueryResult:
    """Per live voxel (in ``VoxelMap.rows`` order): centres, probabilities, winning text and its score."""

    centres: np.ndarray  # (N, 3) float64, map frame
    probs: np.ndarray  # (N, K) float32
    labels: np.ndarray  # (N,) int32, index of the winning text
    scores: np.ndarray  # (N,) float32, its probability

    def winners(self, text: int) -> tuple[np.ndarray, np.ndarray]:
        """Centres (M, 3) of the voxels where text ``text`` wins, and its scores there (M,)."""
        where = self.labels == text
        return self.centres[where], self.scores[where]


def check_texts(text_embeddings: np.ndarray, feature_dim: int, background_index: Optional[int]) -> np.ndarray:
    texts = np.asarray(text_embeddings, dtype=np.float32)
    if texts.ndim != 2 or texts.shape[0] < 1 or texts.shape[1] != feature_dim:
        raise ValueError(f"text embeddings must be (K, {feature_dim}), got {texts.shape}")
    if not np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-3):
        raise ValueError("text embeddings must be unit vectors (L2-normalised rows), as the engine makes them")
    if background_index is not None and not (0 <= background_index < texts.shape[0] and texts.shape[0] >= 2):
        raise ValueError(f"background_index {background_index} needs 2+ texts and to name one of the "
                         f"{texts.shape[0]}")
    return texts


def cosine_logits(features: np.ndarray, scaled_texts: np.ndarray) -> np.ndarray:
    """(K, n) float32: the scaled cosine of each of the (n, E) ``features`` (fp16 or fp32) with each column of
    the (E, K) ``scaled_texts``, texts-major. CHUNK_ROWS rows at a time are converted, multiplied and
    normalised while they are in the cache, so the features are read once."""
    logits = np.empty((scaled_texts.shape[1], features.shape[0]), np.float32)
    for start in range(0, features.shape[0], CHUNK_ROWS):
        chunk = to_float32(features[start:start + CHUNK_ROWS])
        squares = np.matmul(chunk[:, None, :], chunk[:, :, None]).reshape(-1)  # row-wise dots, ~2x einsum's speed
        logits[:, start:start + CHUNK_ROWS] = (chunk @ scaled_texts).T / np.maximum(np.sqrt(squares), 1e-12)
    return logits


def voxel_probabilities(features: np.ndarray, objectness: np.ndarray, texts: np.ndarray,
                        background_index: Optional[int] = None, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """(N, E) mean ``features`` (fp16 or fp32), their (N,) fused ``objectness`` and (K, E) unit ``texts`` ->
    (N, K) float32 probabilities. GROUP_ROWS voxels at a time, texts-major, so that the softmax's
    reductions over the K texts run along whole rows instead of K values at a time."""
    probs = np.empty((features.shape[0], texts.shape[0]), np.float32)
    scaled = np.ascontiguousarray(LOGIT_SCALE * texts.T, dtype=np.float32)
    for start in range(0, features.shape[0], GROUP_ROWS):
        group = slice(start, start + GROUP_ROWS)
        logits = cosine_logits(features[group], scaled)
        logits -= logits.max(axis=0)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=0)
        if background_index is not None:
            rule = np.flatnonzero((logits.max(axis=0) < delta) & (objectness[group] <= 0.5))
            logits[background_index, rule] = 1.0
            logits[:, rule] /= logits[:, rule].sum(axis=0)
        probs[group] = logits.T
    return probs


def query(voxel_map: VoxelMap, text_embeddings: np.ndarray, background_index: Optional[int] = None,
          delta: float = DEFAULT_DELTA) -> QueryResult:
    """Every live voxel's probabilities for the texts (see the module's docstring)."""
    texts = check_texts(text_embeddings, voxel_map.settings.feature_dim, background_index)
    rows, used = voxel_map.rows, voxel_map.slots_used
    slots = voxel_map.slots  # slot order, contiguous: no gather of the features; free slots cost a little
    probs = voxel_probabilities(slots["features"][:used], slots["objectness"][:used], texts, background_index,
                                delta)[rows]
    labels = probs.argmax(axis=1).astype(np.int32)
    return QueryResult(voxel_map.centres(rows), probs, labels, probs[np.arange(rows.size), labels])
