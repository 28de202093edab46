"""Temporary files as writers killed outright leave them (clip_dinoiser_ros.atomic_file), for the tests of the
writers that must remove them."""
import os
import time
from pathlib import Path

from clip_dinoiser_ros.atomic_file import ABANDONED_AFTER_S


def age(path: Path, seconds: float = 2 * ABANDONED_AFTER_S) -> None:
    """Set ``path``'s times ``seconds`` into the past."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def plant_abandoned(target: Path) -> Path:
    """An unlocked, old temporary file of ``target``: what a write killed outright leaves."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.abcd1234.part"
    path.write_bytes(b"half of it")
    age(path)
    return path
