"""Fingerprints of an engine's weights, by part: what names a text embedding in the cache (the text tower),
an exported graph (the image tower and the heads) or a fleet's output bag (all of them)."""
from __future__ import annotations

import hashlib
import threading
from typing import Iterable, Iterator, Optional

import torch
from torch import nn

SAMPLES = 16384  # values hashed per tensor: a ViT-B/16 text tower in ~15 ms
TEXT, IMAGE, HEADS = PARTS = ("text", "image", "heads")
GRAPH_PARTS = (IMAGE, HEADS)  # what the exported per-frame graph holds


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


class EngineFingerprint:
    """``fingerprint(parts)``: one hash of the named parts of a CLIP model and its heads.

    Each part is hashed once, on first use, and combinations are made from the parts' hashes: the
    embedding store, every input size's export and the fleet's resume record ask without hashing again.
    """

    def __init__(self, clip_model: nn.Module, heads: Optional[nn.Module] = None) -> None:
        self._modules = {TEXT: clip_model, IMAGE: clip_model.visual, HEADS: heads}
        self._parts: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, parts: Iterable[str] = PARTS) -> str:
        wanted = tuple(dict.fromkeys(parts))
        unknown = [part for part in wanted if part not in PARTS]
        if unknown or not wanted:
            raise ValueError(f"fingerprint parts must be some of {PARTS}, got {list(wanted)}")
        with self._lock:
            digests = [f"{part}={self._part(part)}" for part in PARTS if part in wanted]
        return hashlib.blake2b("\x1e".join(digests).encode(), digest_size=16).hexdigest()

    def _part(self, part: str) -> str:
        if part not in self._parts:
            module = self._modules[part]
            if module is None:
                raise ValueError(f"no {part} module to fingerprint")
            self._parts[part] = weights_fingerprint(_tensors(module, part))
        return self._parts[part]


def _tensors(module: nn.Module, part: str) -> Iterator[tuple[str, torch.Tensor]]:
    """The part's parameters and buffers by name; the text part is the CLIP model less its image tower."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if part != TEXT or not name.startswith("visual."):
            yield f"{part}.{name}", tensor
