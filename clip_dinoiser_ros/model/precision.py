"""Which floating-point format the encoder and heads run in, per device.

Only the ViT and the heads run in reduced precision (autocast); the patch correlations (thresholded at
gamma), the guided pooling, the class softmax and everything after stay fp32 (see bench/README.md for
what bf16 there costs in agreement). ``CLIP_DINOISER_FORCE_FP32=1`` in the environment makes "auto" fp32 on
any device, so a machine with native bf16 (or CUDA) can run what a machine without it runs.
"""
from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch

from .choices import PRECISIONS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FORCE_FP32_VARIABLE = "CLIP_DINOISER_FORCE_FP32"


def fp32_forced() -> bool:
    """True when the environment asks "auto" to mean fp32 (``CLIP_DINOISER_FORCE_FP32=1``)."""
    return os.environ.get(FORCE_FP32_VARIABLE, "") == "1"


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 matmuls run in hardware (2.3x fp32 here); elsewhere they are emulated, slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA, bf16 on CPUs with native bf16, fp32 elsewhere (and wherever ``fp32_forced``); a
    choice the device lacks is refused."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto" and fp32_forced():
        return torch.float32
    if device.type == "cuda":
        return torch.float16 if precision == "auto" else DTYPES[precision]
    native_bf16 = cpu_has_native_bf16()
    if precision == "auto":
        return torch.bfloat16 if native_bf16 else torch.float32
    if precision == "fp16":
        raise ValueError("precision 'fp16' is for CUDA devices (CPUs run it slower than fp32); use 'bf16', "
                         "'fp32' or 'auto' on the CPU")
    if precision == "bf16" and not native_bf16:
        raise ValueError("precision 'bf16' needs a CPU with native bf16 (avx512_bf16 or AMX); this one has "
                         "neither and would emulate it slower than fp32: use 'fp32' or 'auto'")
    return DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype) -> ContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
