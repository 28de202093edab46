"""Open-vocabulary questions to a map: class probabilities of every voxel for texts given as embeddings.

The engine's rule, voxel by voxel: logits = 100 * cosine(the voxel's mean feature, each text embedding),
softmax over the texts; with a background class, a voxel that is uncertain (its best probability below
``delta``) and not an object (fused objectness <= 0.5) gets probability 1 for the background class. Unlike
the engine at patch level, the probabilities are then normalised again, so they sum to 1 (the argmax is
the same).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np
from threadpoolctl import ThreadpoolController

from .half import to_float32
from .voxel_map import VoxelMap

LOGIT_SCALE = 100.0  # as model.guided_pooling.LOGIT_SCALE (not imported: that module needs torch)
DEFAULT_DELTA = 0.99
CHUNK_ROWS = 1024  # rows converted to fp32 at a time: 2 MiB at E = 512, within the cache
BATCH_ROWS = 32  # rows per BLAS call; OpenBLAS's small-matrix kernels take up to ~1e6 multiply-adds (E=512: K<=61)
GROUP_ROWS = 8 * CHUNK_ROWS  # voxels whose softmax is taken together: fewer, longer array passes
MAX_THREADS = 8  # groups answered at once; past a few the 200 MB read of the features is the limit
BLAS_LIMIT = threading.Lock()  # one query at a time holds BLAS's process-wide thread count (and restores it)


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


def cosine_logits(features: np.ndarray, norms: np.ndarray, scaled_texts: np.ndarray) -> np.ndarray:
    """(K, n) float32: the scaled cosine of each of the (n, E) ``features`` (fp16 or fp32, their (n,) ``norms``)
    with each column of the (E, K) ``scaled_texts``, texts-major. CHUNK_ROWS rows at a time are converted and
    multiplied while they are in the cache (in one reused buffer), so the features are read once."""
    logits = np.empty((scaled_texts.shape[1], features.shape[0]), np.float32)
    buffer = np.empty((min(CHUNK_ROWS, features.shape[0]), features.shape[1]), np.float32)
    for start in range(0, features.shape[0], CHUNK_ROWS):
        chunk = slice(start, min(start + CHUNK_ROWS, features.shape[0]))
        rows = to_float32(features[chunk], out=buffer[:chunk.stop - start])
        logits[:, chunk] = products(rows, scaled_texts).T / norms[chunk]
    return logits


def products(rows: np.ndarray, scaled_texts: np.ndarray) -> np.ndarray:
    """(n, K) = (n, E) ``rows`` @ (E, K) ``scaled_texts``, as a stack of BATCH_ROWS-row products: OpenBLAS
    multiplies blocks that small without packing them first, ~30% faster than one (n x E) product here."""
    count, width = rows.shape
    if count % BATCH_ROWS:
        return rows @ scaled_texts
    return np.matmul(rows.reshape(count // BATCH_ROWS, BATCH_ROWS, width), scaled_texts).reshape(count, -1)


@dataclass(frozen=True)
class VoxelAnswers:
    """Per voxel of the rows asked: probabilities (n, K) float32, winning text (n,) int32, its probability (n,)."""

    probs: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def answer_group(features: np.ndarray, norms: np.ndarray, objectness: np.ndarray, scaled_texts: np.ndarray,
                 background_index: Optional[int], delta: float, out: VoxelAnswers) -> None:
    """Fill ``out`` (views of one group's rows) texts-major, so that the reductions over the K texts run along
    whole rows. After subtracting each voxel's best logit its best exponential is exactly 1, so its best
    probability is 1 / the sum: the background rule needs no second maximum, and setting the background's
    probability to 1 and normalising again is one division by the sum that includes it."""
    exps = cosine_logits(features, norms, scaled_texts)
    exps -= exps.max(axis=0)
    np.exp(exps, out=exps)
    total = exps.sum(axis=0)
    labels = first_best(exps)
    best = np.ones_like(total)
    if background_index is not None:
        rule = (total * delta > 1.0) & (objectness <= 0.5)  # best probability 1 / total < delta, not an object
        background = exps[background_index]
        renormalised = np.where(rule, 2.0 * total - background, total)  # the sum with the background set to total
        np.copyto(background, total, where=rule)
        np.copyto(best, total, where=rule)
        labels[rule] = background_index  # its probability total / (2 total - e) > 1/2 beats every other
        total = renormalised
    exps /= total
    cv2.transpose(exps, dst=out.probs)  # 2-3x numpy's strided copy
    out.labels[:] = labels
    out.scores[:] = best / total


def first_best(exps: np.ndarray) -> np.ndarray:
    """(n,) int32: for each column of (K, n) ``exps`` the first row holding its best value, exactly 1 (as
    ``argmax(axis=0)``, which transposes internally and is ~2x slower)."""
    labels = np.empty(exps.shape[1], np.int32)
    for text in range(exps.shape[0] - 1, -1, -1):
        np.copyto(labels, text, where=exps[text] == 1.0)
    return labels


def voxel_answers(features: np.ndarray, norms: np.ndarray, objectness: np.ndarray, texts: np.ndarray,
                  background_index: Optional[int] = None, delta: float = DEFAULT_DELTA,
                  threads: Optional[int] = None) -> VoxelAnswers:
    """(N, E) mean ``features`` (fp16 or fp32), their (N,) float32 ``norms`` (positive) and fused ``objectness``,
    and (K, E) unit ``texts`` -> every voxel's answer. GROUP_ROWS voxels at a time on ``threads`` threads
    (default: the CPUs this process may use, at most MAX_THREADS); meanwhile BLAS runs one thread per call, as
    its own threads would only contend with ours (and spin for a core on a loaded machine)."""
    count = features.shape[0]
    answers = VoxelAnswers(np.empty((count, texts.shape[0]), np.float32), np.empty(count, np.int32),
                           np.empty(count, np.float32))
    scaled = np.ascontiguousarray(LOGIT_SCALE * texts.T, dtype=np.float32)

    def answer(start: int) -> None:
        group = slice(start, start + GROUP_ROWS)
        answer_group(features[group], norms[group], objectness[group], scaled, background_index, delta,
                     VoxelAnswers(answers.probs[group], answers.labels[group], answers.scores[group]))

    starts = range(0, count, GROUP_ROWS)
    workers = min(threads or min(len(os.sched_getaffinity(0)), MAX_THREADS), len(starts))
    if workers <= 1:
        for start in starts:
            answer(start)
        return answers
    with BLAS_LIMIT, blas_controller().limit(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(answer, starts))  # re-raises a group's exception here
    return answers


@lru_cache(maxsize=1)
def blas_controller() -> ThreadpoolController:
    """The process's thread pools, found once (a scan of the loaded libraries, ~1 ms)."""
    return ThreadpoolController()


def query(voxel_map: VoxelMap, text_embeddings: np.ndarray, background_index: Optional[int] = None,
          delta: float = DEFAULT_DELTA, threads: Optional[int] = None) -> QueryResult:
    """Every live voxel's probabilities for the texts (see the module's docstring)."""
    texts = check_texts(text_embeddings, voxel_map.settings.feature_dim, background_index)
    rows, used = voxel_map.rows, voxel_map.slots_used
    slots = voxel_map.slots  # slot order, contiguous: no gather of the features; free slots cost a little
    answers = voxel_answers(slots["features"][:used], slots["norm"][:used], slots["objectness"][:used], texts,
                            background_index, delta, threads)
    return QueryResult(voxel_map.centres(rows), answers.probs[rows], answers.labels[rows], answers.scores[rows])
