"""The optional parts of the install (setup.py's extras): which command needs which, and a clear error without.

The node and clip-dinoiser-segment/-bag need only setup.py's INSTALL_REQUIRES. Training, the benchmark
evaluation and the demo import a few more packages, lazily, where they use them; their commands ask
``missing_extra`` first, so that a user without the extra is told what to install before any work starts.
"""
from __future__ import annotations

from importlib.util import find_spec
from typing import Optional

PACKAGE = "clip_dinoiser_ros"

# extra -> {module it imports: distribution that provides it}; setup.py's EXTRAS_REQUIRE lists the same
# distributions (test/test_packaging.py checks both against the imports).
EXTRAS: dict[str, dict[str, str]] = {
    "train": {"timm": "timm", "matplotlib": "matplotlib"},
    "eval": {"matplotlib": "matplotlib", "scipy": "scipy"},
    "demo": {"skimage": "scikit-image"},
    "onnx": {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript"},
}


def importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module set to None in sys.modules
        return False


def missing_extra(extra: str) -> Optional[str]:
    """None when every module of ``extra`` can be imported; otherwise a message naming them and the fix."""
    missing = [distribution for module, distribution in EXTRAS[extra].items() if not importable(module)]
    if not missing:
        return None
    return (
        f"this command needs the optional dependencies [{extra}] ({', '.join(missing)} not installed): "
        f"pip install '{PACKAGE}[{extra}]'"
    )
