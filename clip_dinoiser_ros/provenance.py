"""What produced a result: package versions, for the run files of evaluation and training."""
from __future__ import annotations

import platform
from importlib import metadata

DISTRIBUTIONS = {  # the name in run files -> the pip distributions that provide it
    "clip_dinoiser_ros": ("clip_dinoiser_ros",),
    "torch": ("torch",),
    "open_clip": ("open_clip_torch",),
    "timm": ("timm",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python"),
}


def versions() -> dict[str, str]:
    """Python's version and those of this package and the libraries its numbers depend on (when installed)."""
    found = {"python": platform.python_version()}
    for name, distributions in DISTRIBUTIONS.items():
        for distribution in distributions:
            try:
                found[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found
