"""Fingerprints of weights: what names a text embedding in the cache, or an exported graph."""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch

SAMPLES = 16384  # values hashed per tensor: a ViT-B/16 text tower in ~15 ms


def weights_fingerprint(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A hash of each tensor's name, shape, dtype and SAMPLES evenly spaced values (all of a smaller one).

    Reading every byte of a ViT-B/16 (600 MB) costs more than the restart a cache is for; another
    checkpoint, a fine-tune or a quantisation changes the values everywhere, so it gets another hash.
    """
    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, tensor in tensors:
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLES)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            digest.update(flat[::step][:SAMPLES].float().cpu().numpy().tobytes())
    return digest.hexdigest()
