"""The student: the frozen CLIP's block -3 features (the engine's own encoder) through the two heads."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model.dense_clip import DenseClipEncoder
from ..model.guided_pooling import patch_correlation
from ..model.heads import DEFAULT_PROJECTION_DIM, DinoiserHeads
from ..model.preprocessing import normalize, pad_to_multiple


class FrozenClipFeatures(nn.Module):
    """Images in [0, 1] -> the heads' input (B, D, h, w), padded and normalised exactly as the engine does."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.encoder = DenseClipEncoder(clip_model.visual.eval().requires_grad_(False))

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def width(self) -> int:
        return self.encoder.width

    def padded(self, images: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(images, self.patch_size)

    def grid(self, size: int) -> tuple[int, int]:
        side = -(-size // self.patch_size)
        return side, side

    @torch.no_grad()
    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        return self.encoder.head_input(normalize(padded))


def new_heads(width: int, seed: int, projection_dim: int = DEFAULT_PROJECTION_DIM) -> DinoiserHeads:
    """Freshly initialised heads, the same for a given seed in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DinoiserHeads(width, projection_dim)


@dataclass(frozen=True)
class Losses:
    total: torch.Tensor
    correlation: torch.Tensor
    objectness: torch.Tensor


def predictions(heads: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, hw, hw) predicted correlations with negatives clamped to 0, and (B, h, w) objectness logits."""
    projected, objectness = heads(features.float())
    return patch_correlation(projected).clamp(min=0.0), objectness[:, 0]


def losses(correlation: torch.Tensor, objectness: torch.Tensor, correlation_target: torch.Tensor,
           objectness_target: torch.Tensor) -> Losses:
    """The reference's loss: BCE-with-logits on the (clamped) cosine and on the objectness logit, 1:1."""
    correlation_loss = F.binary_cross_entropy_with_logits(correlation, correlation_target.float())
    objectness_loss = F.binary_cross_entropy_with_logits(objectness, objectness_target.float())
    return Losses(correlation_loss + objectness_loss, correlation_loss, objectness_loss)
