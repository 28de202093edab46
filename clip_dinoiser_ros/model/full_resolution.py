"""Outputs at the input image's resolution, computed a few classes at a time.

The K x H x W probability map at full resolution is large (1920x1080 with 100 classes: 830 MB per
copy) and most callers need only labels, confidence and each class's best score. So the final resize,
the per-pixel normalisation and the reductions run over chunks of classes, and the whole map is
written out only when the caller asks to keep it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .preprocessing import resize

# Full-resolution values normalised at once: a chunk of classes holds at most this many float32 values
# (64 MiB, e.g. 8 classes at 1920x1080), and its resize before normalising as many again.
CHUNK_VALUES = 1 << 24


@dataclass(frozen=True)
class FullResolution:
    """Tensors on the device of the input probabilities."""

    labels: torch.Tensor  # (H, W) int64, the first class with the highest probability
    confidence: torch.Tensor  # (H, W), the winning normalised probability
    class_max: torch.Tensor  # (K,), each class's highest normalised probability over all pixels
    probs: Optional[torch.Tensor]  # (K, H, W) normalised, only when kept


def classes_per_chunk(size: tuple[int, int]) -> int:
    """At least one class, however large the image."""
    return max(1, CHUNK_VALUES // (size[0] * size[1]))


def full_resolution(probs: torch.Tensor, size: tuple[int, int], *, keep_probs: bool) -> FullResolution:
    """(1, K, h, w) probabilities -> resized bilinearly to ``size``, normalised per pixel, reduced.

    Normalising is needed because background filtering sets class 0 to 1 without lowering the others.
    Bilinear resizing is linear, so the per-pixel sum over classes is the resize of the summed map:
    each chunk is normalised on its own, and its values do not depend on the chunking or on keeping.
    """
    classes = probs.shape[1]
    step = classes_per_chunk(size)
    total = resize(probs.sum(dim=1, keepdim=True), size)[0]
    kept = probs.new_empty((classes, *size)) if keep_probs else None
    scratch = None if keep_probs else probs.new_empty((min(step, classes), *size))
    class_max = probs.new_empty(classes)
    winner = RunningArgmax(size, probs)
    for start in range(0, classes, step):
        stop = min(start + step, classes)
        out = kept[start:stop] if kept is not None else scratch[: stop - start]
        chunk = torch.div(resize(probs[:, start:stop], size)[0], total, out=out)
        class_max[start:stop] = chunk.amax(dim=(1, 2))
        winner.update(chunk, start)
    return FullResolution(labels=winner.labels, confidence=winner.confidence, class_max=class_max, probs=kept)


class RunningArgmax:
    """Per-pixel maximum and argmax over classes that arrive chunk by chunk.

    Its H x W buffers are reused for every chunk, as is the scratch chunk of ``full_resolution``: fresh
    allocations per chunk (and their page faults) made this stage about 20 % slower on the CPU.
    """

    def __init__(self, size: tuple[int, int], like: torch.Tensor) -> None:
        self.confidence = torch.full(size, float("-inf"), dtype=like.dtype, device=like.device)
        self.labels = torch.zeros(size, dtype=torch.int64, device=like.device)
        self._best = torch.empty_like(self.confidence)
        self._index = torch.empty_like(self.labels)
        self._better = torch.empty(size, dtype=torch.bool, device=like.device)

    def update(self, chunk: torch.Tensor, first_class: int) -> None:
        """``chunk``: (C, H, W) values of classes ``first_class`` to ``first_class + C - 1``."""
        torch.max(chunk, dim=0, out=(self._best, self._index))
        torch.gt(self._best, self.confidence, out=self._better)  # strict: on a tie the earlier class wins
        torch.maximum(self._best, self.confidence, out=self.confidence)
        self._index += first_class
        torch.where(self._better, self._index, self.labels, out=self.labels)
