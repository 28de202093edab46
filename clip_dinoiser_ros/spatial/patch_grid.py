"""Where the engine's patch grid lies on a camera image, so per-patch outputs can be read per pixel.

The engine resizes a frame (keeping its aspect) and zero-pads it right/bottom to a multiple of the patch
size; patch (i, j) covers rows [i p, (i + 1) p) and columns [j p, (j + 1) p) of the resized image. A pixel of
the original image lies in the patch that holds its centre after the resize. Torch-free: mappers use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class PatchGrid:
    """An ``image_size`` (height, width) frame resized to ``resized_size``, cut into ``patch_size`` patches."""

    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    patch_size: int

    def __post_init__(self) -> None:
        if min(*self.image_size, *self.resized_size, self.patch_size) < 1:
            raise ValueError(f"patch grid needs positive sizes, got image {self.image_size}, resized "
                             f"{self.resized_size}, patch {self.patch_size}")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of patches: the resized image padded to whole patches."""
        return (-(-self.resized_size[0] // self.patch_size), -(-self.resized_size[1] // self.patch_size))

    def patch_of(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Flat patch index (row * columns + column) of image pixels (``rows``, ``cols``)."""
        (height, width), (resized_h, resized_w) = self.image_size, self.resized_size
        patch_row = np.minimum(((rows + 0.5) * (resized_h / height)).astype(np.int64), resized_h - 1) // self.patch_size
        patch_col = np.minimum(((cols + 0.5) * (resized_w / width)).astype(np.int64), resized_w - 1) // self.patch_size
        return patch_row * self.shape[1] + patch_col

    def pixel_patches(self) -> np.ndarray:
        """(H, W) int64 flat patch index of every pixel of the image (computed once per grid, read-only)."""
        return _pixel_patches(self)


@dataclass(frozen=True)
class FrameFeatures:
    """What a mapper fuses, from the pass that segmented the frame: the guided-pooled MaskCLIP features,
    L2-normalised per patch (their 100 * cosine with a text embedding is that text's logit), and the
    objectness, on the patch grid that ``grid`` places on the image."""

    features: np.ndarray  # (E, h, w) float32, unit length along E
    objectness: np.ndarray  # (h, w) float32, sigmoid of the bkg_decoder logit
    grid: PatchGrid


@lru_cache(maxsize=8)
def _pixel_patches(grid: PatchGrid) -> np.ndarray:
    height, width = grid.image_size
    index = grid.patch_of(np.arange(height)[:, None], np.arange(width)[None, :])
    index.setflags(write=False)
    return index
