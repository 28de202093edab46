"""Dense CLIP features in one pass: MaskCLIP's value path in the last block, block-10 features for the heads.

The positional embedding is resized per call into a cache owned by this object, never written back
into the model, so one model can serve several threads and input sizes.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

HEAD_FEATURE_BLOCK = -3  # the heads read ln_2 of block 10 of 12
POS_CACHE_SIZE = 16  # resized positional embeddings kept (least recently used dropped): input sizes vary


@dataclass(frozen=True)
class DenseFeatures:
    """``maskclip`` (B, E, h, w) in the joint text space; ``head_input`` (B, D, h, w) from block 10."""

    maskclip: torch.Tensor
    head_input: torch.Tensor


class DenseClipEncoder(nn.Module):
    """Wraps an open_clip ``VisionTransformer`` (read-only) to produce per-patch features."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj"):
            if getattr(visual, name, None) is None:
                raise TypeError(f"expected an open_clip VisionTransformer with a token projection, missing {name!r}")
        if getattr(visual, "attn_pool", None) is not None:
            raise TypeError("attention-pooled open_clip towers (CoCa) have no MaskCLIP value path")
        if not visual.transformer.batch_first:
            raise TypeError("open_clip transformer runs sequence-first; open_clip >= 2.26 (batch-first) is required")
        unsupported = {type(b).__name__ for b in visual.transformer.resblocks if type(b) is not ResidualAttentionBlock}
        if unsupported:
            raise TypeError(f"only standard pre-norm ViT blocks are supported, got {sorted(unsupported)}")
        self.visual = visual
        self.patch_size = int(visual.conv1.kernel_size[0])
        grid = visual.grid_size
        self.grid_size = (int(grid[0]), int(grid[1]))
        self._pos_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._pos_lock = threading.Lock()
        self._value_path: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def width(self) -> int:
        return int(self.visual.conv1.out_channels)

    def positional_embedding(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """(1 + h*w, D) embedding: CLS kept, patch grid resized bicubic (align_corners=False, no antialias)."""
        pos = self.visual.positional_embedding
        key = (grid, dtype, pos.device, pos._version)
        with self._pos_lock:
            cached = self._pos_cache.get(key)
            if cached is not None:
                self._pos_cache.move_to_end(key)
                return cached
        resized = self._resize_positional_embedding(pos, grid).detach().to(dtype)
        with self._pos_lock:
            self._pos_cache[key] = resized
            self._pos_cache.move_to_end(key)
            while len(self._pos_cache) > POS_CACHE_SIZE:
                self._pos_cache.popitem(last=False)
        return resized

    def _resize_positional_embedding(self, pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Computed outside the lock: two threads may both compute a new size, with equal results."""
        if grid == self.grid_size:
            return pos
        width = pos.shape[1]
        patch = pos[1:].reshape(1, *self.grid_size, width).permute(0, 3, 1, 2)
        patch = F.interpolate(patch.float(), size=grid, mode="bicubic", align_corners=False)
        return torch.cat([pos[:1].float(), patch.permute(0, 2, 3, 1).reshape(-1, width)], dim=0)

    def fused_value_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """out_proj(v_proj(y)) as one affine map: the last block's query/key are never needed."""
        attn = self.visual.transformer.resblocks[-1].attn
        width = attn.embed_dim
        w_v = attn.in_proj_weight[2 * width:]
        b_v = attn.in_proj_bias[2 * width:]
        w_o, b_o = attn.out_proj.weight, attn.out_proj.bias
        weight = (w_o.double() @ w_v.double()).to(w_o.dtype)
        bias = (w_o.double() @ b_v.double() + b_o.double()).to(b_o.dtype)
        return weight.detach(), bias.detach()

    def forward(self, pixels: torch.Tensor, positional: torch.Tensor | None = None) -> DenseFeatures:
        """``pixels``: normalised (B, 3, H, W) with H, W multiples of the patch size; ``positional``: the
        embedding for their grid when the caller holds it (an exported graph bakes it in), else resized here."""
        x, grid = self._tokens(pixels, positional)
        blocks = self.visual.transformer.resblocks
        head_block = len(blocks) + HEAD_FEATURE_BLOCK
        head_input = None
        for index, block in enumerate(blocks[:-1]):
            x, features = self._block(block, x)
            if index == head_block:
                head_input = features
        tokens = self._maskclip_last_block(blocks[-1], x[:, 1:])
        maskclip = self.visual.ln_post(tokens) @ self.visual.proj
        return DenseFeatures(maskclip=self._patch_map(maskclip, grid),
                             head_input=self._patch_map(head_input[:, 1:], grid))

    def head_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """Only the heads' input (B, D, h, w): the blocks after block -3 are skipped (training needs no more)."""
        x, grid = self._tokens(pixels)
        blocks = self.visual.transformer.resblocks
        for block in blocks[: len(blocks) + HEAD_FEATURE_BLOCK + 1]:
            x, features = self._block(block, x)
        return self._patch_map(features[:, 1:], grid)

    def _tokens(self, pixels: torch.Tensor,
                positional: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embedding, CLS and the resized positional embedding, through ln_pre; and the patch grid."""
        visual = self.visual
        batch, _, height, width = pixels.shape
        grid = (height // self.patch_size, width // self.patch_size)
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, 1, -1)
        if positional is None:
            positional = self.positional_embedding(grid, x.dtype)
        x = torch.cat([cls, x], dim=1) + positional
        return visual.ln_pre(x), grid

    @staticmethod
    def _patch_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, hw, C) patch tokens -> (B, C, h, w)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)

    @staticmethod
    def _block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A pre-norm block with one fused attention call; also returns its ln_2 output (the heads' input)."""
        attn = block.attn
        batch, tokens, width = x.shape
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
        x = x + block.ls_1(attn.out_proj(attended))
        features = block.ln_2(x)
        return x + block.ls_2(block.mlp(features)), features

    def _maskclip_last_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """v = out_proj(v_proj(ln_1(x))) + x; v = v + mlp(ln_2(v)), token by token."""
        weight, bias = self._fused_value_path(x)
        v = x + block.ls_1(F.linear(block.ln_1(x), weight, bias))
        return v + block.ls_2(block.mlp(block.ln_2(v)))

    def _fused_value_path(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._value_path
        if cached is None or cached[0].device != x.device or cached[0].dtype != x.dtype:
            weight, bias = self.fused_value_projection()
            cached = (weight.to(x.device, x.dtype), bias.to(x.device, x.dtype))
            self._value_path = cached
        return cached
