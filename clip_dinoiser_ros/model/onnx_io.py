"""One run of an exported graph's session: through host arrays on the CPU provider, through I/O binding on
the CUDA and TensorRT providers, so that tensors on the GPU stay there (no copy to the host and back)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .onnx_providers import GPU_PROVIDERS
from .patch_graph import INPUT_NAMES, OUTPUT_NAMES

Outputs = tuple[torch.Tensor, torch.Tensor]


def run_session(session: Any, provider: str, pixels: torch.Tensor, text: torch.Tensor, grid: tuple[int, int]) -> Outputs:
    """(B, 3, H, W) pixels and (S, E) text -> (B, S, h, w) synonym logits and (B, 1, h, w) objectness on
    ``pixels``' device; ``provider``: the one the session runs on (read from it)."""
    if provider in GPU_PROVIDERS:
        return run_bound(session, pixels, text, grid)
    return run_on_host(session, pixels, text)


def run_on_host(session: Any, pixels: torch.Tensor, text: torch.Tensor) -> Outputs:
    logits, objectness = session.run(None, {
        "pixels": np.ascontiguousarray(pixels.detach().float().cpu().numpy()),
        "text_embeddings": np.ascontiguousarray(text.detach().float().cpu().numpy()),
    })
    return torch.from_numpy(logits).to(pixels.device), torch.from_numpy(objectness).to(pixels.device)


def run_bound(session: Any, pixels: torch.Tensor, text: torch.Tensor, grid: tuple[int, int]) -> Outputs:
    """Inputs and outputs bound to torch's memory where it is (the GPU, or the host for a CPU engine), the
    outputs allocated by torch with the graph's known shapes."""
    pixels = pixels.detach().float().contiguous()
    text = text.detach().float().to(pixels.device).contiguous()
    logits = torch.empty((pixels.shape[0], text.shape[0], *grid), dtype=torch.float32, device=pixels.device)
    objectness = torch.empty((pixels.shape[0], 1, *grid), dtype=torch.float32, device=pixels.device)
    binding = session.io_binding()
    for name, tensor in zip(INPUT_NAMES, (pixels, text)):
        binding.bind_input(name, *_where(tensor), np.float32, tuple(tensor.shape), tensor.data_ptr())
    for name, tensor in zip(OUTPUT_NAMES, (logits, objectness)):
        binding.bind_output(name, *_where(tensor), np.float32, tuple(tensor.shape), tensor.data_ptr())
    if pixels.is_cuda:  # ONNX Runtime reads on its own stream: what torch queued must be done first
        torch.cuda.current_stream(pixels.device).synchronize()
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    return logits, objectness


def _where(tensor: torch.Tensor) -> tuple[str, int]:
    """ONNX Runtime's (device_type, device_id) of a torch tensor's memory."""
    return tensor.device.type, tensor.device.index or 0
