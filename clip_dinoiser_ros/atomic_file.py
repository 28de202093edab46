"""Files that appear whole or not at all: checkpoints and cached targets that other processes may read."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PUBLIC_MODE = 0o644  # as open() under the usual umask: mkstemp's 0600 would hide a checkpoint or export from others


@contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A binary file written under a hidden temporary name next to ``target`` and renamed onto it when the
    block ends; on any failure (Ctrl-C included) the temporary file is removed and ``target`` is untouched."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.chmod(temporary, PUBLIC_MODE)
        with os.fdopen(handle, "wb") as sink:
            yield sink
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
