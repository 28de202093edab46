"""Builds the engine from the node's parameters (no rclpy: testable and reusable by other shells)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import ClipDinoiser, load_clip, random_clip
from ..model.precision import resolve_precision
from ..model.heads import read_checkpoint



@dataclass(frozen=True)
class EngineSettings:
    device: str
    precision: str
    clip_model: str
    clip_pretrained: str
    heads: str
    templates: str
    gamma: float
    delta: float
    random_weights: bool


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def build_engine(settings: EngineSettings) -> ClipDinoiser:
    """Load (or, when asked explicitly, randomly initialise) CLIP and the heads."""
    device = resolve_device(settings.device)
    resolve_precision(settings.precision, device)  # fail before the slow model load
    if settings.random_weights:
        clip_model, heads = random_clip(settings.clip_model, device=str(device)), None
    else:
        if not settings.heads:
            raise ValueError(
                "parameter 'heads' is empty: set it to 'published' (the paper's checkpoint, downloaded once), "
                "an http(s) URL or a local checkpoints/last.pt, or set random_weights:=true for plumbing tests"
            )
        heads = read_checkpoint(settings.heads)  # download and read first: a bad source fails before CLIP loads
        clip_model = load_clip(settings.clip_model, settings.clip_pretrained, device=str(device))
    return ClipDinoiser(
        clip_model,
        heads,
        device=device,
        gamma=settings.gamma,
        delta=settings.delta,
        templates=settings.templates,
        precision=settings.precision,
    )
