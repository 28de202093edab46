"""The CLIP-DINOiser engine (no ROS here): load CLIP, build the engine, segment images.

The public names load on first use (PEP 562), so the torch-free parts (prompt parsing, errors) can
be imported without torch: the node checks its parameters, and launch files read them, in well under
a second instead of the ~10 s torch and open_clip take to import.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_HOMES = {
    "CheckpointError": "errors",
    "ClassPrompt": "vocabulary",
    "ClipDinoiser": "engine",
    "DinoiserHeads": "heads",
    "EncodingCancelled": "errors",
    "Segmentation": "engine",
    "Vocabulary": "vocabulary",
    "WeightsUnavailableError": "errors",
    "build_heads": "heads",
    "load_clip": "clip_loading",
    "parse_prompts": "vocabulary",
    "random_clip": "clip_loading",
    "save_checkpoint": "heads",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from .clip_loading import load_clip, random_clip
    from .engine import ClipDinoiser, Segmentation
    from .errors import CheckpointError, EncodingCancelled, WeightsUnavailableError
    from .heads import DinoiserHeads, build_heads, save_checkpoint
    from .vocabulary import ClassPrompt, Vocabulary, parse_prompts


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
