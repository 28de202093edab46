"""The two frozen teachers of the heads: DINO's patch correlations and FOUND's objectness.

- correlation teacher: DINO ViT-B/16, the VALUE embeddings of its last block (from that block's qkv), CLS
  dropped, L2-normalised; the cosine matrix thresholded at gamma gives the target bits.
- objectness teacher: DINO ViT-S/8, the KEY embeddings of its last block through FOUND's 1x1 decoder,
  sigmoid, resized (bilinear, no antialias: the reference's tensor resize) to the CLIP patch grid, > 0.5.

Both DINO networks come from timm. FOUND's decoder was trained on the 300-epoch DINO ViT-S/8 release, which
timm's ``vit_small_patch8_224.dino`` tag does not name (it points at the 800-epoch file): the objectness
teacher therefore downloads that exact release by URL through timm, unless a local file is given.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..model.errors import CheckpointError, WeightsUnavailableError
from ..model.guided_pooling import patch_correlation
from ..model.heads_download import RemoteFile, cache_dir, cached_download
from ..model.preprocessing import pad_to_multiple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CORRELATION_THRESHOLD = 0.2  # gamma: DINO correlations below it are no target
OBJECTNESS_THRESHOLD = 0.5


@dataclass(frozen=True)
class DinoSpec:
    """A DINO network as timm names it, and the file it loads (None: timm's own default for the tag)."""

    timm_name: str
    features: str  # "v" (value) or "k" (key) of the last block's qkv
    url: Optional[str] = None


CORRELATION_TEACHER = DinoSpec("vit_base_patch16_224.dino", "v")
OBJECTNESS_TEACHER = DinoSpec(
    "vit_small_patch8_224.dino", "k",
    "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/dino_deitsmall8_300ep_pretrain.pth",
)
FOUND_DECODER = RemoteFile(
    "https://github.com/valeoai/FOUND/raw/1ad22bacf1a6854faff1b5d4be300d54cad6f277/data/weights/decoder_weights.pt",
    sha256="47ff2a4af3dbc6c80cb832cc81f8ed8ae81809e52576d0de5f9c754cf46ef9b5",
    what="FOUND decoder",
    local_option="--found-decoder /path/to/decoder_weights.pt",
)


class DinoTeacher(nn.Module):
    """A frozen timm DINO ViT that returns one kind of last-block qkv embedding per patch: (B, C, h, w)."""

    def __init__(self, vit: nn.Module, features: str) -> None:
        super().__init__()
        if features not in ("q", "k", "v"):
            raise ValueError(f"features must be one of q, k, v, got {features!r}")
        if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "no_embed_class", False):
            raise TypeError("the DINO teachers are ViTs with one CLS token that carries a position embedding")
        self.vit = vit.eval().requires_grad_(False)
        self.features = "qkv".index(features)
        self.patch_size = int(vit.patch_embed.patch_size[0])

    @property
    def width(self) -> int:
        return int(self.vit.embed_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: (B, 3, H, W) in [0, 1] with H, W multiples of the patch size."""
        vit = self.vit
        batch, _, height, width = images.shape
        grid = (height // self.patch_size, width // self.patch_size)
        patches = vit.patch_embed(normalize_imagenet(images)).reshape(batch, grid[0] * grid[1], -1)
        x = torch.cat([vit.cls_token.expand(batch, -1, -1), patches], dim=1) + self.positions(grid)
        x = vit.norm_pre(x)
        for block in vit.blocks[:-1]:
            x = block(x)
        last = vit.blocks[-1]
        qkv = last.attn.qkv(last.norm1(x))  # (B, N, 3 * C): heads are contiguous inside each of q, k, v
        chosen = qkv.view(batch, x.shape[1], 3, -1)[:, 1:, self.features]
        return chosen.transpose(1, 2).reshape(batch, -1, *grid)

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """DINO's own ``interpolate_pos_encoding``, which the reference ran: bicubic by the scale factor
        (g + 0.1) / n0 (timm resamples to a size instead, which samples slightly different points)."""
        pos = self.vit.pos_embed
        side = self.vit.patch_embed.grid_size[0]
        if grid == (side, side):
            return pos
        patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        scale = ((grid[0] + 0.1) / side, (grid[1] + 0.1) / side)
        patch = F.interpolate(patch, scale_factor=scale, mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])], dim=1)


def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def load_dino(spec: DinoSpec, weights: Optional[Union[str, Path]] = None, random: bool = False) -> DinoTeacher:
    """The teacher from a local file, else timm's hub (its tag, or ``spec.url``); ``random`` for plumbing."""
    import timm

    options = dict(dynamic_img_size=True, num_classes=0)
    if random:
        return DinoTeacher(timm.create_model(spec.timm_name, pretrained=False, **options), spec.features)
    if weights is not None:
        if not Path(weights).is_file():
            raise WeightsUnavailableError(f"DINO weights file {weights} ({spec.timm_name}) does not exist")
        overlay = dict(file=str(weights))
    else:
        overlay = dict(url=spec.url, hf_hub_id=None) if spec.url else {}
    try:
        vit = timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **options)
    except (OSError, RuntimeError, ValueError) as error:  # hub and urllib failures when offline
        source = weights or spec.url or f"the Hugging Face hub (timm/{spec.timm_name})"
        raise WeightsUnavailableError(
            f"DINO teacher {spec.timm_name} could not be loaded from {source} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). On a connected machine run\n    python -c "
            f"\"import timm; timm.create_model('{spec.timm_name}', pretrained=True"
            f"{', pretrained_cfg_overlay=dict(url=' + repr(spec.url) + ', hf_hub_id=None)' if spec.url else ''})\"\n"
            f"and copy its cache (~/.cache/huggingface, ~/.cache/torch) here, or pass the .pth file "
            f"({'--found-encoder' if spec.features == 'k' else '--dino'} PATH)"
        ) from error
    return DinoTeacher(vit, spec.features)


class FoundDecoder(nn.Conv2d):
    """FOUND's saliency decoder: a 1x1 convolution over DINO ViT-S/8 key features (384 -> 1)."""

    def __init__(self, width: int = 384) -> None:
        super().__init__(width, 1, 1)


def load_found_decoder(path: Optional[Union[str, Path]] = None, random: bool = False) -> FoundDecoder:
    """From ``path``, else the published file (downloaded once, sha256-checked on every use)."""
    decoder = FoundDecoder()
    if random:
        return decoder.eval().requires_grad_(False)
    if path is None:
        path = cached_download(FOUND_DECODER, cache_dir("found"), timeout=30.0)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"FOUND decoder {path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"FOUND decoder {path} is not a readable torch file: {error}") from error
    state = content.get("decoder") if isinstance(content, dict) else None
    expected = {"weight": (1, 384, 1, 1), "bias": (1,)}
    shapes = {key: tuple(value.shape) for key, value in state.items()} if isinstance(state, dict) else None
    if shapes != expected:
        raise CheckpointError(
            f"FOUND decoder {path} does not have FOUND's layout: expected {{'decoder': {expected}}}, found "
            f"{shapes if shapes is not None else type(content).__name__ + ' without a decoder entry'}"
        )
    decoder.load_state_dict(state)
    return decoder.eval().requires_grad_(False)


class Teachers(nn.Module):
    """Both teachers; ``targets`` gives the training targets for a batch on a given CLIP patch grid."""

    def __init__(self, correlation: DinoTeacher, objectness: DinoTeacher, decoder: FoundDecoder) -> None:
        super().__init__()
        self.correlation = correlation
        self.objectness = objectness
        self.decoder = decoder

    @torch.no_grad()
    def targets(self, images: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, hw, hw) bool correlation targets and (B, h, w) bool objectness targets.

        ``images`` (B, 3, H, W) in [0, 1] is what the student sees (padded to its patch size); the correlation
        teacher sees it resized to its own patch size times the grid, so both grids match.
        """
        size = (grid[0] * self.correlation.patch_size, grid[1] * self.correlation.patch_size)
        resized = images if tuple(images.shape[-2:]) == size else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        correlation = patch_correlation(self.correlation(resized).float()) >= CORRELATION_THRESHOLD
        found = pad_to_multiple(images, self.objectness.patch_size)
        saliency = torch.sigmoid(self.decoder(self.objectness(found).float()))
        saliency = F.interpolate(saliency, size=grid, mode="bilinear", align_corners=False, antialias=False)
        return correlation, saliency[:, 0] > OBJECTNESS_THRESHOLD

