"""Image geometry shared by whole-image and sliding-window inference.

Frames are resized as the paper's evaluation does (mmcv's ``imrescale``): bilinear by cv2 on the uint8
image, the scale capped so the long side stays within 2048/448 of the short side's target. That also
keeps the upload small: a frame reaches the device at inference size.
"""
from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


LONG_TO_SHORT = 2048 / 448  # the protocol's img_scale: the long side is capped at this multiple


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}".strip()
        raise ValueError(f"image must be an HxWx3 uint8 RGB numpy array, got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty ({image.shape[0]}x{image.shape[1]})")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 at ``size`` (height, width): cv2 bilinear on uint8, as mmcv; a no-op at that size."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def image_to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 1x3xHxW float in [0, 1] on ``device`` (uploads the small uint8 array)."""
    check_image(image)
    pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device, non_blocking=True)
    return pixels.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """mmcv's keep-ratio size: the short side to ``short_side`` unless the long side would pass its cap."""
    scale = min(short_side / min(height, width), short_side * LONG_TO_SHORT / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False); a no-op when the size already matches."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)


def pad_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad right/bottom so both sides are multiples of the patch size (before normalising)."""
    height, width = pixels.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return pixels
    return F.pad(pixels, (0, pad_w, 0, pad_h), value=0.0)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of mmseg's slide inference: the last window is shifted to end at the border."""
    window = min(window, length)
    count = max(length - window + stride - 1, 0) // stride + 1
    return [min(i * stride, length - window) for i in range(count)]


def sliding_windows(height: int, width: int, window: int, stride: int) -> Iterator[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every window covering the image."""
    win_h, win_w = min(window, height), min(window, width)
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            yield top, left, top + win_h, left + win_w
