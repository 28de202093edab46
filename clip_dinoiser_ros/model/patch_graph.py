"""The per-frame part of the engine for one padded input size, as one module: what the ONNX export holds.

In: normalised, zero-padded pixels (B, 3, H, W) and the vocabulary's text embeddings (S, E); out: the
synonyms' logits on the patch grid (B, S, h, w) and the objectness logits (B, 1, h, w). The host finishes
as the torch path does (a class takes its best synonym, softmax, background filtering, upsampling), so a
new vocabulary needs no new graph. The grid's positional embedding and the last block's fused value path
are computed once, here, and become constants of the graph.
"""
from __future__ import annotations

import torch
from torch import nn

from .dense_clip import DenseClipEncoder
from .guided_pooling import dinoised_logits
from .preprocessing import short_side_size

INPUT_NAMES = ("pixels", "text_embeddings")
OUTPUT_NAMES = ("synonym_logits", "objectness")


def padded(size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """``size`` zero-padded to multiples of the patch size, as preprocessing.pad_to_multiple pads."""
    return (-(-size[0] // patch_size) * patch_size, -(-size[1] // patch_size) * patch_size)


def padded_size(height: int, width: int, short_side: int, patch_size: int) -> tuple[int, int]:
    """The size a ``height`` x ``width`` camera frame reaches the ViT at in whole mode: resized, then padded."""
    return padded(short_side_size(height, width, short_side), patch_size)


class PatchGraph(nn.Module):
    def __init__(self, encoder: DenseClipEncoder, heads: nn.Module, gamma: float, size: tuple[int, int]) -> None:
        super().__init__()
        patch = encoder.patch_size
        if size[0] % patch or size[1] % patch:
            raise ValueError(f"a graph's input size must be a multiple of the patch size {patch}, got {size}")
        self.encoder, self.heads, self.gamma, self.size = encoder, heads, float(gamma), tuple(size)
        grid = (size[0] // patch, size[1] // patch)
        self.register_buffer("positional", encoder.positional_embedding(grid, torch.float32).detach().clone())
        encoder.fused_value_projection()  # fails early on an unsupported tower; the value is cached on first use

    def forward(self, pixels: torch.Tensor, text_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(pixels, positional=self.positional)
        projected, objectness = self.heads(features.head_input)
        return dinoised_logits(features.maskclip, projected, text_embeddings, self.gamma), objectness.float()
