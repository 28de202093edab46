"""The per-frame graph run by ONNX Runtime: exported on first use of each input size, cached on disk, run
with the best execution provider present (TensorRT, then CUDA, then the CPU)."""
from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .dense_clip import DenseClipEncoder
from .heads_download import cache_dir, sha256_of
from .onnx_export import OPSET, description_key, export_graph, graph_description

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def best_providers(available: Optional[list[str]] = None) -> list[str]:
    """The execution providers to ask for, best first, of those this onnxruntime build has."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    return [provider for provider in PROVIDER_ORDER if provider in available]


class OnnxRuntimeBackend:
    """Sessions per (input size, gamma), made from cached exports; ``run`` takes and gives torch tensors."""

    def __init__(self, encoder: DenseClipEncoder, heads: nn.Module, folder: Optional[Path] = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise RuntimeError("backend 'onnxruntime' needs the onnx extra: pip install 'clip_dinoiser_ros[onnx]' "
                               "(onnxruntime-gpu where CUDA is present)") from error
        self.encoder, self.heads = encoder, heads
        self.folder = folder or cache_dir("onnx")
        self.providers = best_providers()
        self._sessions: dict[tuple[tuple[int, int], float], Any] = {}
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        """The execution provider the sessions run on (the best one present)."""
        return self.providers[0]

    def run(self, pixels: torch.Tensor, text_embeddings: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised, padded pixels and (S, E) text -> synonym logits and objectness logits."""
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        session = self.session(size, gamma)
        logits, objectness = session.run(None, {
            "pixels": np.ascontiguousarray(pixels.detach().float().cpu().numpy()),
            "text_embeddings": np.ascontiguousarray(text_embeddings.detach().float().cpu().numpy()),
        })
        return torch.from_numpy(logits).to(pixels.device), torch.from_numpy(objectness).to(pixels.device)

    def session(self, size: tuple[int, int], gamma: float):
        """The session of this input size, made (and exported, when not cached) on first use."""
        key = (size, float(gamma))
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self._load(size, gamma)
            return session

    def _load(self, size: tuple[int, int], gamma: float):
        import onnxruntime

        description = graph_description(self.encoder, self.heads, gamma, size, OPSET)
        path = self.folder / f"{description_key(description)}.onnx"
        if not self._cached(path, description):
            export_graph(self.encoder, self.heads, gamma, size, path, OPSET)
        return onnxruntime.InferenceSession(str(path), providers=self.providers)

    @staticmethod
    def _cached(path: Path, description: dict[str, Any]) -> bool:
        """Whether ``path`` holds the export ``description`` names (its sidecar says so); a stale, corrupt or
        foreign pair is exported again, with a warning."""
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            return False
        try:
            recorded = json.loads(sidecar.read_text())
            same = all(recorded.get(name) == value for name, value in description.items())
            why = "its sidecar names other weights, settings or versions"
            if same and recorded.get("onnx_sha256") != sha256_of(path):
                same, why = False, "the file is not the one its sidecar describes (sha256)"
        except (OSError, ValueError, AttributeError) as error:
            same, why = False, f"unreadable sidecar ({error})"
        if not same:
            warnings.warn(f"ONNX cache: ignoring {path}: {why}; exporting again", RuntimeWarning, stacklevel=3)
        return same
