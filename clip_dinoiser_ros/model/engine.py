"""The CLIP-DINOiser engine: one CLIP pass, the two heads, guided pooling, and full-resolution outputs."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import preprocessing as pre
from .dense_clip import DenseClipEncoder
from .full_resolution import full_resolution
from .guided_pooling import class_probabilities, filter_background, guided_pool, patch_correlation
from .heads import HeadsSource, build_heads
from .text_encoder import PromptEncoder, Vocabulary
from .templates import TemplatesSpec
from .choices import MODES
from .vocabulary import uses_background

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MAX_WHOLE_PATCHES = 16384  # beyond this one attention pass needs gigabytes: use slide mode
SLIDE_BATCH = 4


@dataclass(frozen=True)
class Segmentation:
    """Per-pixel results at the input image's resolution."""

    labels: np.ndarray  # (H, W) int32 class ids
    probs: Optional[np.ndarray]  # (K, H, W) float32, sums to 1 over K at every pixel; None if not asked for
    confidence: np.ndarray  # (H, W) float32, the winning probability
    class_max: np.ndarray  # (K,) float32, each class's highest probability anywhere in the image
    prompts: tuple[str, ...]


class ClipDinoiser:
    """Open-vocabulary segmentation with a frozen open_clip ViT and the CLIP-DINOiser heads."""

    def __init__(
        self,
        clip_model: nn.Module,
        heads: HeadsSource,
        *,
        device: str | torch.device = "cpu",
        gamma: float = 0.2,
        delta: float = 0.99,
        templates: TemplatesSpec = "imagenet",
        precision: str = "auto",
        tokenizer=None,
    ) -> None:
        if not hasattr(clip_model, "visual") or not hasattr(clip_model, "encode_text"):
            raise TypeError(f"clip_model must be an open_clip CLIP model, got {type(clip_model).__name__}")
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.clip_model = clip_model.to(self.device).eval()
        self.encoder = DenseClipEncoder(clip_model.visual)
        self.heads = build_heads(heads, self.encoder.width).to(self.device)
        tokenizer = tokenizer or open_clip.tokenizer.SimpleTokenizer(context_length=clip_model.context_length)
        self.prompt_encoder = PromptEncoder(clip_model, tokenizer, templates)
        self._vocabulary: Optional[Vocabulary] = None
        self._text_on_device: dict[int, tuple[Vocabulary, torch.Tensor, torch.Tensor]] = {}

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def vocabulary(self) -> Optional[Vocabulary]:
        return self._vocabulary

    def encode_prompts(self, prompts: Sequence[str], **limits: int) -> Vocabulary:
        """Embeddings for ``prompts`` without changing the active vocabulary (thread-safe)."""
        with torch.inference_mode():
            return self.prompt_encoder.encode(prompts, **limits)

    def set_prompts(self, prompts: Sequence[str]) -> Vocabulary:
        """Encode and activate ``prompts``; the switch is a single assignment."""
        vocabulary = self.encode_prompts(prompts)
        self._vocabulary = vocabulary
        return vocabulary

    def segment(
        self,
        image: np.ndarray,
        *,
        mode: str = "whole",
        short_side: int = 448,
        window: int = 448,
        stride: int = 224,
        background: Optional[bool] = None,
        vocabulary: Optional[Vocabulary] = None,
        probs: bool = True,
    ) -> Segmentation:
        """Segment an HxWx3 uint8 RGB image with the active (or the given) vocabulary.

        ``probs=False`` skips the (K, H, W) map (``Segmentation.probs`` is None): labels, confidence and
        ``class_max`` are then computed a few classes at a time, with the same values.
        """
        vocabulary = vocabulary or self._vocabulary
        if vocabulary is None:
            raise RuntimeError("no vocabulary: call set_prompts([...]) before segment()")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if short_side < self.patch_size or window < self.patch_size or stride < 1:
            raise ValueError(
                f"short_side ({short_side}) and window ({window}) must be >= the patch size {self.patch_size}, "
                f"stride ({stride}) >= 1"
            )
        use_background = uses_background(vocabulary, background)
        with torch.inference_mode():
            pixels = pre.image_to_tensor(image, self.device)
            height, width = pixels.shape[-2:]
            resized = pre.resize(pixels, pre.short_side_size(height, width, short_side))
            if mode == "whole":
                inference_probs = self._crop_probabilities(resized, vocabulary, use_background)
            else:
                inference_probs = self._slide_probabilities(resized, vocabulary, use_background, window, stride)
            outputs = full_resolution(inference_probs, (height, width), keep_probs=probs)
            return Segmentation(
                labels=outputs.labels.to(torch.int32).cpu().numpy(),
                probs=None if outputs.probs is None else outputs.probs.cpu().numpy(),
                confidence=outputs.confidence.cpu().numpy(),
                class_max=outputs.class_max.cpu().numpy(),
                prompts=vocabulary.names,
            )

    def _slide_probabilities(
        self, pixels: torch.Tensor, vocabulary: Vocabulary, use_background: bool, window: int, stride: int
    ) -> torch.Tensor:
        """The paper's protocol: overlapping windows, each upsampled to its crop, overlaps averaged."""
        height, width = pixels.shape[-2:]
        boxes = list(pre.sliding_windows(height, width, window, stride))
        total = torch.zeros(1, len(vocabulary), height, width, device=self.device)
        count = torch.zeros(1, 1, height, width, device=self.device)
        for start in range(0, len(boxes), SLIDE_BATCH):
            chunk = boxes[start:start + SLIDE_BATCH]
            crops = torch.cat([pixels[:, :, t:b, l:r] for t, l, b, r in chunk])
            probs = self._crop_probabilities(crops, vocabulary, use_background)
            for (top, left, bottom, right), crop_probs in zip(chunk, probs):
                total[:, :, top:bottom, left:right] += crop_probs
                count[:, :, top:bottom, left:right] += 1
        return total / count

    def _crop_probabilities(self, crops: torch.Tensor, vocabulary: Vocabulary, use_background: bool) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, K, H, W) class probabilities (background-filtered if asked)."""
        height, width = crops.shape[-2:]
        padded = pre.pad_to_multiple(crops, self.patch_size)
        patches = (padded.shape[-2] // self.patch_size) * (padded.shape[-1] // self.patch_size)
        if patches > MAX_WHOLE_PATCHES:
            raise ValueError(
                f"{padded.shape[-2]}x{padded.shape[-1]} input gives {patches} patches in one pass "
                f"(max {MAX_WHOLE_PATCHES}); use mode='slide' for such extreme aspect ratios"
            )
        with self._autocast():
            features = self.encoder(pre.normalize(padded))
            projected, objectness = self.heads(features.head_input)
        correlation = patch_correlation(projected.float())
        pooled = guided_pool(features.maskclip.float(), correlation, self.gamma)
        embeddings, owners = self._text_tensors(vocabulary)
        probs = class_probabilities(pooled, embeddings, owners, len(vocabulary))
        if use_background:
            probs = filter_background(probs, objectness.float(), self.delta)
        upsampled = F.interpolate(probs, scale_factor=self.patch_size, mode="bilinear", align_corners=False)
        return upsampled[:, :, :height, :width]

    def _text_tensors(self, vocabulary: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
        """The vocabulary's tensors on the engine's device, copied once per vocabulary."""
        cached = self._text_on_device.get(id(vocabulary))
        if cached is None or cached[0] is not vocabulary:
            cached = (
                vocabulary,
                vocabulary.text_embeddings.to(self.device),
                vocabulary.synonym_to_class.to(self.device),
            )
            self._text_on_device = {id(vocabulary): cached}
        return cached[1], cached[2]

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """fp16 autocast on CUDA by default, fp32 on the CPU (where half precision is slower)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if device.type != "cuda" and dtype != torch.float32:
        raise ValueError(f"precision {precision!r} needs a CUDA device; use 'fp32' on {device.type}")
    return dtype
