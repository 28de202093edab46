"""A cache folder that can be written, or else a private temporary one: a read-only home or container image
costs the next start its work (an export, an encoding, a download), never a failure."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

_fallbacks: dict[Path, Path] = {}
_lock = threading.Lock()


def writable(folder: Path) -> Path:
    """``folder`` when files can be created in it (made if absent); otherwise this process's private
    temporary stand-in for it, with one warning per folder, removed when the process ends."""
    folder = Path(folder)
    with _lock:
        if folder in _fallbacks:
            return _fallbacks[folder]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
            os.close(handle)
            os.unlink(probe)
            return folder
        except OSError as error:
            reason = f"{type(error).__name__}: {error}"
            stand_in = Path(tempfile.mkdtemp(prefix=f"clip_dinoiser_ros-{folder.name}-"))
            _fallbacks[folder] = stand_in
    warnings.warn(f"cache folder {folder} cannot be written ({reason}); using {stand_in} until this process ends, "
                  "so the next start repeats this work", RuntimeWarning, stacklevel=2)
    atexit.register(shutil.rmtree, stand_in, ignore_errors=True)
    return stand_in
