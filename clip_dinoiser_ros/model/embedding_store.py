"""Class-name embeddings kept on disk, so that a restart with the same prompts encodes nothing.

An entry is one prompt text's embedding under one text tower, one template set and one tokenizer. Its
file is named by a hash of that key and repeats the key inside, so a file that does not answer to its
own name (truncated, corrupt, written by another tower, tokenizer or format) is ignored with a warning
and never used. Files are written atomically; the oldest go once the folder is over its size bound.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from ..atomic_file import atomic_write
from .user_cache import writable

FORMAT = 1  # bump when what an entry means changes (how embeddings are averaged, normalised, stored)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # ~25 000 entries of a 512-wide tower
NORM_TOLERANCE = 1e-3
SUFFIX = ".npz"


def encoder_key(tower: str, templates: Sequence[Callable[[str], str]], tokenizer: object) -> str:
    """What besides the prompt text decides an embedding: the tower, the rendered templates, the tokenizer."""
    rendered = "\x1f".join(template("{}") for template in templates)
    tokenizer_name = f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"
    context = getattr(tokenizer, "context_length", "")
    return f"format {FORMAT}\x1e{tower}\x1e{rendered}\x1e{tokenizer_name}/{context}"


class EmbeddingStore:
    """A folder of entries ``<hash>.npz`` (the key and a float32 vector), bounded to ``max_bytes``."""

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._written_to: Optional[Path] = None

    def load(self, key: str, width: int) -> Optional[np.ndarray]:
        """The stored (width,) unit vector for ``key``; None when absent or not trustworthy (warned)."""
        folders = dict.fromkeys((self.folder, self._target()))  # the stand-in holds what this process wrote
        path = next((path for path in (self._path(key, folder) for folder in folders) if path.is_file()), None)
        if path is None:
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                stored_key, vector = str(entry["key"]), entry["embedding"]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            return self._ignored(path, f"unreadable ({type(error).__name__}: {error})")
        if stored_key != key:
            return self._ignored(path, "it holds another entry's key (a hash collision or a foreign file)")
        if vector.dtype != np.float32 or vector.shape != (width,):
            return self._ignored(path, f"it holds a {vector.dtype} {vector.shape} array, not float32 ({width},)")
        if not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1.0) > NORM_TOLERANCE:
            return self._ignored(path, "its vector is not a finite unit vector")
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:  # a read-only cache: the entry is as good, it only loses its place in the pruning order
            pass
        return vector

    def save(self, entries: Iterable[tuple[str, np.ndarray]]) -> None:
        """Write each (key, vector) atomically, then drop the least recently used files beyond the bound.

        A cache that cannot be written (read-only home, full disk) only costs the next start its encoding.
        """
        target = self._target()
        try:
            for key, vector in entries:
                with atomic_write(self._path(key, target)) as sink:
                    np.savez(sink, key=np.array(key), embedding=np.asarray(vector, dtype=np.float32))
            self._prune(target)
        except OSError as error:
            warnings.warn(f"text embedding cache {target} not written: {error}", RuntimeWarning, stacklevel=2)

    def _target(self) -> Path:
        """Where entries are written: the folder, or its private stand-in when it cannot be (user_cache)."""
        if self._written_to is None:
            self._written_to = writable(self.folder)
        return self._written_to

    @staticmethod
    def _path(key: str, folder: Path) -> Path:
        return folder / (hashlib.sha256(key.encode()).hexdigest() + SUFFIX)

    def _ignored(self, path: Path, why: str) -> None:
        warnings.warn(f"text embedding cache: ignoring {path}: {why}; the prompt is encoded again",
                      RuntimeWarning, stacklevel=3)
        return None

    def _prune(self, folder: Path) -> None:
        files = []
        for path in folder.glob("*" + SUFFIX):
            try:
                status = path.stat()
            except FileNotFoundError:  # pruned by another process meanwhile
                continue
            files.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
