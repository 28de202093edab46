"""The one way to build the engine from settings: used by the node and by every command-line tool.

One device rule ("auto" is CUDA when present, an explicit "cuda" without CUDA is refused) and one
order of loading: the cheap checks, then the heads (a bad source fails before CLIP's slow load), then CLIP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .choices import DEFAULT_MODEL, DEFAULT_PRETRAINED
from .clip_loading import load_clip, random_clip
from .embedding_store import EmbeddingStore
from .engine import ClipDinoiser, check_backend
from .heads import read_checkpoint
from .heads_download import PUBLISHED, cache_dir
from .onnx_providers import parse_provider_options
from .precision import resolve_precision

RANDOM_SEED = 0  # random weights are the same in every run, so plumbing runs are comparable


@dataclass(frozen=True)
class EngineSettings:
    device: str = "auto"
    precision: str = "auto"
    clip_model: str = DEFAULT_MODEL
    clip_pretrained: str = DEFAULT_PRETRAINED
    heads: str = PUBLISHED
    templates: str = "imagenet"
    gamma: float = 0.2
    delta: float = 0.99
    random_weights: bool = False
    embedding_cache: bool = True  # class embeddings kept in the user cache (XDG_CACHE_HOME) across restarts
    backend: str = "torch"  # or "onnxruntime" (model.choices.BACKENDS)
    onnx_provider_options: str = ""  # "key=value,...", see model.onnx_providers; "" = fp16 and caches on


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; an explicit CUDA device without CUDA is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return resolved


def build_engine(settings: EngineSettings) -> ClipDinoiser:
    """Load (or, when asked explicitly, randomly initialise) CLIP and the heads; no vocabulary yet."""
    device = resolve_device(settings.device)
    check_backend(settings.backend, settings.precision)  # fail before the slow model load
    onnx_options = parse_provider_options(settings.onnx_provider_options)
    if settings.backend == "torch":
        resolve_precision(settings.precision, device)
    if settings.random_weights:
        clip_model, heads = random_clip(settings.clip_model, device=str(device), seed=RANDOM_SEED), None
    else:
        if not settings.heads:
            raise ValueError(
                "heads is empty: use 'published' (the paper's checkpoint, downloaded once), an http(s) URL or "
                "a local checkpoints/last.pt, or random weights for plumbing tests"
            )
        heads = read_checkpoint(settings.heads)
        clip_model = load_clip(settings.clip_model, settings.clip_pretrained, device=str(device))
    with torch.random.fork_rng(devices=[]):  # random heads: reproducible, the caller's stream untouched
        torch.manual_seed(RANDOM_SEED)
        return ClipDinoiser(
            clip_model, heads, device=device, gamma=settings.gamma, delta=settings.delta,
            templates=settings.templates, precision=settings.precision,
            embedding_store=EmbeddingStore(cache_dir("text_embeddings")) if settings.embedding_cache else None,
            backend=settings.backend, onnx_options=onnx_options,
        )
