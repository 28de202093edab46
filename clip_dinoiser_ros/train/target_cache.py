"""The teachers' targets on disk, one small file per (image, view): bits, packed.

A 448-pixel ViT-B/16 view has 784x784 correlation bits (77 KB) and 784 objectness bits. The folder is
keyed by everything the targets depend on (teachers and their weights, image folder, size, grid, seed),
so a changed setting never reads another run's targets. Files are written to a temporary name and renamed,
so several processes may share the folder and an interrupted write is never read.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..atomic_file import atomic_write


class TargetCache:
    def __init__(self, root: Path, key: dict[str, Any]) -> None:
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = root / fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True, default=str))

    def _path(self, image: int, view: int) -> Path:
        return self.folder / f"{image:07d}-{view:04d}.npz"

    def load(self, image: int, view: int, grid: tuple[int, int]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """(hw, hw) and (h, w) bool tensors, or None when not cached (or unreadable: computed again)."""
        path = self._path(image, view)
        if not path.is_file():
            return None
        patches = grid[0] * grid[1]
        try:
            with np.load(path) as stored:
                correlation = np.unpackbits(stored["correlation"], count=patches * patches)
                objectness = np.unpackbits(stored["objectness"], count=patches)
        except (OSError, ValueError, KeyError):
            return None
        return (torch.from_numpy(correlation.reshape(patches, patches).astype(bool)),
                torch.from_numpy(objectness.reshape(grid).astype(bool)))

    def store(self, image: int, view: int, correlation: torch.Tensor, objectness: torch.Tensor) -> None:
        with atomic_write(self._path(image, view)) as sink:
            np.savez(sink, correlation=np.packbits(correlation.cpu().numpy().ravel()),
                     objectness=np.packbits(objectness.cpu().numpy().ravel()))
