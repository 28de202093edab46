"""How far the trained heads agree with their teachers on held-out images: needs no labels.

For each held-out image (one fixed centre view) the student's correlations and objectness are compared
with the teachers' targets: the training loss terms (BCE) and the IoU of the binarised maps (correlation
>= gamma, objectness sigmoid > 0.5). This says whether the heads learned what DINO and FOUND teach; it
says nothing about segmentation quality, which needs the benchmarks (clip-dinoiser-eval).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .images import evaluation_view, load_rgb
from .student import FrozenClipFeatures, losses, predictions
from .teachers import CORRELATION_THRESHOLD, Teachers


def iou(predicted: torch.Tensor, target: torch.Tensor) -> float:
    union = (predicted | target).sum().item()
    return 1.0 if union == 0 else (predicted & target).sum().item() / union


@torch.no_grad()
def teacher_agreement(images: list[Path], features: FrozenClipFeatures, heads: nn.Module, teachers: Teachers,
                      size: int, device: torch.device, autocast: Callable) -> dict[str, float]:
    """Mean BCE and IoU over ``images`` (at least one)."""
    sums = dict.fromkeys(("correlation_bce", "correlation_iou", "objectness_bce", "objectness_iou"), 0.0)
    for path in images:
        padded = features.padded(evaluation_view(load_rgb(path), size)[None].to(device))
        grid = features.grid(size)
        with autocast():
            correlation_target, objectness_target = teachers.targets(padded, grid)
            head_input = features(padded)
        correlation, objectness = predictions(heads, head_input)
        terms = losses(correlation, objectness, correlation_target, objectness_target)
        sums["correlation_bce"] += terms.correlation.item()
        sums["objectness_bce"] += terms.objectness.item()
        sums["correlation_iou"] += iou(correlation >= CORRELATION_THRESHOLD, correlation_target)
        sums["objectness_iou"] += iou(objectness > 0, objectness_target)
    return {"images": len(images), **{key: value / len(images) for key, value in sums.items()}}
