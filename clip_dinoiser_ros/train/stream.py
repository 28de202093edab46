"""The order in which training samples are seen: one endless stream, cut into global batches.

Epoch ``e`` is a permutation of the training images drawn from (seed, e); the epochs are laid end to end
and step ``t`` takes positions ``t*B .. t*B+B-1``, so every batch is full and step ``t`` is the same batch
whether the run started at 0, resumed at ``t`` or runs on N processes (each takes its own slice of B).
Image ``i`` in epoch ``e`` is shown as view ``e % views`` (see ``images.augmented_view``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from .images import augmented_view, load_rgb, view_generator


@dataclass(frozen=True)
class Sample:
    image: int  # index into the training images
    view: int


class SampleStream:
    def __init__(self, count: int, seed: int, views: int) -> None:
        self.count, self.seed, self.views = count, seed, views
        self._epoch: tuple[int, list[int]] = (-1, [])

    def _permutation(self, epoch: int) -> list[int]:
        if self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch = (epoch, torch.randperm(self.count, generator=generator).tolist())
        return self._epoch[1]

    def __getitem__(self, position: int) -> Sample:
        epoch, offset = divmod(position, self.count)
        return Sample(self._permutation(epoch)[offset], epoch % self.views)


class RankPositions(Sampler[int]):
    """This process's positions in the stream from ``first_step`` to ``last_step`` (exclusive)."""

    def __init__(self, first_step: int, last_step: int, batch: int, rank: int, world: int) -> None:
        self.first_step, self.last_step = first_step, last_step
        self.local = batch // world
        self.batch, self.rank = batch, rank

    def __iter__(self) -> Iterator[int]:
        for step in range(self.first_step, self.last_step):
            start = step * self.batch + self.rank * self.local
            yield from range(start, start + self.local)

    def __len__(self) -> int:
        return (self.last_step - self.first_step) * self.local


class AugmentedImages(Dataset):
    """Position in the stream -> (augmented image (3, S, S), image index, view): decoded in loader workers."""

    def __init__(self, images: list[Path], stream: SampleStream, size: int) -> None:
        self.images, self.stream, self.size = images, stream, size

    def __len__(self) -> int:
        raise TypeError("the stream is endless: use RankPositions")

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        sample = self.stream[position]
        generator = view_generator(self.stream.seed, sample.image, sample.view)
        view = augmented_view(load_rgb(self.images[sample.image]), self.size, generator)
        return view, sample.image, sample.view
