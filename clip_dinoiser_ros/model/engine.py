"""The CLIP-DINOiser engine: one CLIP pass, the two heads, guided pooling, and full-resolution outputs."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import preprocessing as pre
from .dense_clip import DenseClipEncoder
from .embedding_store import EmbeddingStore
from .full_resolution import FullResolution, full_resolution
from ..spatial.patch_grid import FrameFeatures, PatchGrid
from .guided_pooling import class_probabilities, filter_background, pooled_features, synonym_logits
from .heads import HeadsSource, build_heads
from .fingerprint import GRAPH_PARTS, EngineFingerprint
from .onnx_backend import OnnxRuntimeBackend
from .onnx_providers import ProviderOptions
from .patch_graph import padded as padded_to_patches
from .precision import autocast, resolve_precision
from .text_encoder import PromptEncoder
from .vocabulary import Vocabulary
from .templates import TemplatesSpec
from .choices import BACKENDS, MODES
from .vocabulary import uses_background

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
    features: Optional[FrameFeatures] = None  # only when asked for (``features=True``)


def check_backend(backend: str, precision: str) -> None:
    """ValueError for an unknown backend, or a precision the backend cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnxruntime" and precision not in ("auto", "fp32"):
        raise ValueError(f"precision {precision!r} with backend 'onnxruntime': its exported graph runs in fp32 "
                         "(use auto or fp32; fp16 is a TensorRT build of the export, see the README)")


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
        embedding_store: Optional[EmbeddingStore] = None,
        backend: str = "torch",
        onnx_options: ProviderOptions = ProviderOptions(),
    ) -> None:
        if not hasattr(clip_model, "visual") or not hasattr(clip_model, "encode_text"):
            raise TypeError(f"clip_model must be an open_clip CLIP model, got {type(clip_model).__name__}")
        check_backend(backend, precision)
        self.device = torch.device(device)
        self.dtype = torch.float32 if backend == "onnxruntime" else resolve_precision(precision, self.device)
        self.gamma = float(gamma)
        self.delta = float(delta)
        self.clip_model = clip_model.to(self.device).eval()
        self.encoder = DenseClipEncoder(clip_model.visual)
        self.heads = build_heads(heads, self.encoder.width).to(self.device)
        self.fingerprint = EngineFingerprint(clip_model, self.heads)  # fingerprint(parts): each part hashed once
        tokenizer = tokenizer or open_clip.tokenizer.SimpleTokenizer(context_length=clip_model.context_length)
        self.prompt_encoder = PromptEncoder(clip_model, tokenizer, templates, store=embedding_store,
                                            fingerprint=self.fingerprint)
        # ONNX Runtime runs the per-frame graph (fp32, exported per input size on first use); torch the rest.
        self.onnx = OnnxRuntimeBackend(
            self.encoder, self.heads, lambda: self.fingerprint(GRAPH_PARTS),
            options=onnx_options.on_device(self.device.index if self.device.type == "cuda" else None),
        ) if backend == "onnxruntime" else None
        self._vocabulary: Optional[Vocabulary] = None
        self._text_on_device: dict[int, tuple[Vocabulary, torch.Tensor, torch.Tensor]] = {}

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def runs_on(self) -> str:
        """What runs the per-frame graph: ``torch`` or ``onnxruntime/<its execution provider>``."""
        return "torch" if self.onnx is None else f"onnxruntime/{self.onnx.provider}"

    @property
    def graph_status(self) -> Optional[str]:
        """With onnxruntime: the graphs loaded, being prepared and failed (for /diagnostics); else None."""
        return None if self.onnx is None else self.onnx.status

    @property
    def vocabulary(self) -> Optional[Vocabulary]:
        return self._vocabulary

    def close(self) -> None:
        """End background work that outlives a frame (with onnxruntime: an export's child process)."""
        if self.onnx is not None:
            self.onnx.close()

    def encode_prompts(self, prompts: Sequence[str], cancelled: Optional[Callable[[], bool]] = None,
                       **limits: int) -> Vocabulary:
        """Embeddings for ``prompts`` without changing the active vocabulary (thread-safe, cancellable)."""
        with torch.inference_mode():
            return self.prompt_encoder.encode(prompts, cancelled, **limits)

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
        features: bool = False,
    ) -> Segmentation:
        """Segment an HxWx3 uint8 RGB image with the active (or the given) vocabulary.

        ``probs=False`` skips the (K, H, W) map (``Segmentation.probs`` is None): labels, confidence and
        ``class_max`` are then computed a few classes at a time, with the same values. Slide mode with
        the defaults is the paper's evaluation protocol (``evaluation.protocol``). ``features=True`` (whole
        mode) also returns the frame's ``FrameFeatures`` from the same pass.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "whole":
            return self.segment_batch([image], short_side=short_side, background=background,
                                      vocabulary=vocabulary, probs=probs, features=features)[0]
        if features:
            raise ValueError("features=True needs mode='whole': slide mode has one patch grid per window")
        vocabulary = self._checked_vocabulary(vocabulary, short_side, window, stride)
        use_background = uses_background(vocabulary, background)
        short_side, gamma = self._graph_settings([image], short_side, window, stride)
        with torch.inference_mode():
            resized = self._resized_tensor(image, short_side)
            inference_probs = self._slide_probabilities(resized, vocabulary, use_background, window, stride, gamma)
            size = image.shape[:2]
            (result,) = self._to_host([full_resolution(inference_probs, size, keep_probs=probs)], vocabulary)
            return result

    def segment_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        short_side: int = 448,
        background: Optional[bool] = None,
        vocabulary: Optional[Vocabulary] = None,
        probs: bool = True,
        features: bool = False,
    ) -> list[Segmentation]:
        """Whole-image segmentation of several images (cameras of one robot), in input order.

        Images that resize to the same size share one ViT pass; each result equals ``segment`` of that
        image alone (up to float rounding). ``features=True`` adds each image's ``FrameFeatures``.
        """
        if features and self.onnx is not None:
            raise ValueError("features=True needs backend 'torch': the exported onnxruntime graph ends at the logits")
        vocabulary = self._checked_vocabulary(vocabulary, short_side, self.patch_size, 1)
        use_background = uses_background(vocabulary, background)
        short_side, gamma = self._graph_settings(images, short_side)
        with torch.inference_mode():
            resized = [self._resized_tensor(image, short_side) for image in images]
            groups: dict[tuple[int, ...], list[int]] = {}
            for index, tensor in enumerate(resized):
                groups.setdefault(tuple(tensor.shape[-2:]), []).append(index)
            outputs: list[Optional[FullResolution]] = [None] * len(images)
            frame_features: list[Optional[FrameFeatures]] = [None] * len(images)
            for members in groups.values():
                pixels = torch.cat([resized[i] for i in members])
                patch_probs, pooled, objectness = self._patch_outputs(pixels, vocabulary, use_background, gamma)
                batch = self._upsampled_by_patch(patch_probs, pixels.shape[-2:])
                for slot, (index, inference_probs) in enumerate(zip(members, batch)):
                    size = images[index].shape[:2]
                    outputs[index] = full_resolution(inference_probs.unsqueeze(0), size, keep_probs=probs)
                    if features:
                        grid = PatchGrid(tuple(size), tuple(pixels.shape[-2:]), self.patch_size)
                        frame_features[index] = FrameFeatures(F.normalize(pooled[slot], dim=0).cpu().numpy(),
                                                              torch.sigmoid(objectness[slot, 0]).cpu().numpy(), grid)
            results = self._to_host(outputs, vocabulary)
            return [replace(result, features=extra) for result, extra in zip(results, frame_features)]

    def _graph_settings(self, images: Sequence[np.ndarray], short_side: int, window: Optional[int] = None,
                        stride: int = 1) -> tuple[int, float]:
        """The (short side, gamma) to run with: the asked ones, or with onnxruntime the ones in use while
        the graphs of the asked ones are prepared in the background (OnnxRuntimeBackend.settle)."""
        if self.onnx is None:
            return short_side, self.gamma
        for image in images:
            pre.check_image(image)
        shapes = {image.shape[:2] for image in images}

        def graphs(settings: tuple[int, float]) -> set[tuple[tuple[int, int], float]]:
            side, gamma = settings
            sizes = set()
            for height, width in shapes:
                resized = pre.short_side_size(height, width, side)
                boxes = [(0, 0, *resized)] if window is None else pre.sliding_windows(*resized, window, stride)
                sizes |= {padded_to_patches((bottom - top, right - left), self.patch_size) for top, left, bottom, right in boxes}
            return {(size, gamma) for size in sizes}

        return self.onnx.settle((short_side, self.gamma), graphs)

    def _resized_tensor(self, image: np.ndarray, short_side: int) -> torch.Tensor:
        """(1, 3, h, w) in [0, 1] on the device, resized on the host as uint8 (see preprocessing)."""
        pre.check_image(image)
        return pre.image_to_tensor(pre.resize_image(image, pre.short_side_size(*image.shape[:2], short_side)),
                                   self.device)

    def _checked_vocabulary(self, vocabulary: Optional[Vocabulary], short_side: int, window: int,
                            stride: int) -> Vocabulary:
        vocabulary = vocabulary or self._vocabulary
        if vocabulary is None:
            raise RuntimeError("no vocabulary: call set_prompts([...]) before segment()")
        if short_side < self.patch_size or window < self.patch_size or stride < 1:
            raise ValueError(
                f"short_side ({short_side}) and window ({window}) must be >= the patch size {self.patch_size}, "
                f"stride ({stride}) >= 1"
            )
        return vocabulary

    def _to_host(self, outputs: Sequence[FullResolution], vocabulary: Vocabulary) -> list[Segmentation]:
        """Every result copied to the host with one wait: on CUDA the copies are queued, then synchronised once."""
        queued = self.device.type == "cuda"
        host = [
            [None if t is None else t.to("cpu", non_blocking=queued)
             for t in (out.labels.to(torch.int32), out.probs, out.confidence, out.class_max)]
            for out in outputs
        ]
        if queued:
            torch.cuda.current_stream(self.device).synchronize()
        return [
            Segmentation(labels=labels.numpy(), probs=None if kept is None else kept.numpy(),
                         confidence=confidence.numpy(), class_max=class_max.numpy(), prompts=vocabulary.names)
            for labels, kept, confidence, class_max in host
        ]

    def _slide_probabilities(
        self, pixels: torch.Tensor, vocabulary: Vocabulary, use_background: bool, window: int, stride: int,
        gamma: float,
    ) -> torch.Tensor:
        """The paper's protocol: overlapping windows, each upsampled to its crop, overlaps averaged."""
        height, width = pixels.shape[-2:]
        boxes = list(pre.sliding_windows(height, width, window, stride))
        total = torch.zeros(1, len(vocabulary), height, width, device=self.device)
        count = torch.zeros(1, 1, height, width, device=self.device)
        for start in range(0, len(boxes), SLIDE_BATCH):
            chunk = boxes[start:start + SLIDE_BATCH]
            crops = torch.cat([pixels[:, :, t:b, l:r] for t, l, b, r in chunk])
            # As the benchmarks' encode_decode: the padded grid's map is stretched onto the window.
            probs = pre.resize(self._patch_outputs(crops, vocabulary, use_background, gamma)[0], crops.shape[-2:])
            for (top, left, bottom, right), crop_probs in zip(chunk, probs):
                total[:, :, top:bottom, left:right] += crop_probs
                count[:, :, top:bottom, left:right] += 1
        return total / count

    def _upsampled_by_patch(self, probs: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """As the reference demo: the patch grid scaled by the patch size, then the padding cut off."""
        upsampled = F.interpolate(probs, scale_factor=self.patch_size, mode="bilinear", align_corners=False)
        return upsampled[:, :, :size[0], :size[1]]

    def _patch_outputs(self, crops: torch.Tensor, vocabulary: Vocabulary, use_background: bool,
                       gamma: float) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> (B, K, h, w) class probabilities (background-filtered if asked) on the
        patch grid of the crops zero-padded to a multiple of the patch size; with them, from the same pass,
        the guided-pooled features (B, E, h, w) fp32, not normalised (None with onnxruntime), and the
        objectness logits (B, 1, h, w) fp32."""
        padded = pre.pad_to_multiple(crops, self.patch_size)
        patches = (padded.shape[-2] // self.patch_size) * (padded.shape[-1] // self.patch_size)
        if patches > MAX_WHOLE_PATCHES:
            raise ValueError(
                f"{padded.shape[-2]}x{padded.shape[-1]} input gives {patches} patches in one pass "
                f"(max {MAX_WHOLE_PATCHES}); use mode='slide' for such extreme aspect ratios"
            )
        embeddings, owners = self._text_tensors(vocabulary)
        if self.onnx is not None:
            logits, objectness = self.onnx.run(pre.normalize(padded), embeddings, gamma)
            pooled = None
        else:
            with autocast(self.device, self.dtype):
                features = self.encoder(pre.normalize(padded))
                projected, objectness = self.heads(features.head_input)
            pooled = pooled_features(features.maskclip, projected, gamma)
            logits = synonym_logits(pooled, embeddings)
        probs = class_probabilities(logits, owners, len(vocabulary))
        objectness = objectness.float()
        if use_background:
            probs = filter_background(probs, objectness, self.delta)
        return probs, pooled, objectness

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
