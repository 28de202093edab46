"""The per-frame graph of one input size written to ONNX, with a sidecar JSON that says what made it.

Fixed height and width (TensorRT and Isaac ROS refuse dynamic ones), batch and the number of synonyms
dynamic. The sidecar names the weights (their fingerprint, and the files' sha256 when the caller knows
them), the size and grid, gamma, the opset and the tool versions: an ONNX Runtime cache keyed by it never
runs a graph of other weights or settings.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..atomic_file import atomic_path, atomic_write, remove_abandoned
from .dense_clip import DenseClipEncoder
from .heads_download import sha256_of
from .patch_graph import INPUT_NAMES, OUTPUT_NAMES, PatchGraph

OPSET = 18  # >= 17 (LayerNormalization); what TensorRT 10 and ONNX Runtime >= 1.14 read
FORMAT = 1
MAX_BATCH = 64
MAX_SYNONYMS = 4096
EXAMPLE_BATCH = 2  # torch.export specialises a dimension traced at size 1: the example must not be 1


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def graph_description(encoder: DenseClipEncoder, gamma: float, size: tuple[int, int], fingerprint: str,
                      opset: int = OPSET) -> dict[str, Any]:
    """Everything that decides the graph's results: the cache key of an exported file. ``fingerprint``: the
    engine's of the image tower and the heads (``engine.fingerprint(GRAPH_PARTS)``)."""
    patch = encoder.patch_size
    width = int(encoder.visual.output_dim)
    return {
        "format": FORMAT,
        "weights_fingerprint": fingerprint,
        "input_size": list(size),
        "grid": [size[0] // patch, size[1] // patch],
        "patch_size": patch,
        "gamma": float(gamma),
        "opset": opset,
        "inputs": {"pixels": ["batch", 3, *size], "text_embeddings": ["synonyms", width]},
        "outputs": {"synonym_logits": ["batch", "synonyms", size[0] // patch, size[1] // patch],
                    "objectness": ["batch", 1, size[0] // patch, size[1] // patch]},
        "versions": {"torch": torch.__version__,  # with its build (+cu130, +cpu)
                     **{name: _version(name) for name in ("onnx", "onnxscript", "open_clip_torch", "clip_dinoiser_ros")}},
    }


def description_key(description: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def export_graph(encoder: DenseClipEncoder, heads: nn.Module, gamma: float, size: tuple[int, int], path: Path,
                 fingerprint: str, opset: int = OPSET, weights: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Write ``path`` (.onnx) and its sidecar (``path`` with .json), each atomically; returns the sidecar.

    ``fingerprint``: the engine's of the image tower and the heads; ``weights``: what the caller knows of
    the weight files (names, sha256), recorded as given. The sidecar names the graph's LayerNormalization
    nodes and asks for them in fp32 under fp16 (``layer_norm_fp32``): TensorRT builds honour it.
    """
    try:
        import onnx
    except ImportError as error:
        raise RuntimeError("ONNX export needs the onnx extra: pip install 'clip_dinoiser_ros[onnx]'") from error
    description = graph_description(encoder, gamma, size, fingerprint, opset)
    device = encoder.visual.conv1.weight.device
    graph = PatchGraph(encoder, heads, gamma, size).eval()
    pixels = torch.zeros(EXAMPLE_BATCH, 3, *size, device=device)
    text = torch.nn.functional.normalize(torch.ones(EXAMPLE_BATCH + 1, description["inputs"]["text_embeddings"][1],
                                                    device=device), dim=1)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    synonyms = torch.export.Dim("synonyms", min=1, max=MAX_SYNONYMS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(graph, (pixels, text), None, input_names=list(INPUT_NAMES),
                                    output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=True,
                                    dynamic_shapes={"pixels": {0: batch}, "text_embeddings": {0: synonyms}},
                                    external_data=False, verbose=False)
    remove_abandoned(path)  # earlier exports of this file killed outright: a ViT-B/16 graph is ~350 MB
    with atomic_path(path) as temporary:
        program.save(str(temporary))  # an ONNX program saves to a path, not a stream
        onnx.checker.check_model(str(temporary))
        norms = [node.name for node in onnx.load(str(temporary), load_external_data=False).graph.node
                 if node.op_type == "LayerNormalization"]
        digest = sha256_of(temporary)
    sidecar = {**description, "key": description_key(description), "onnx_sha256": digest,
               "weights": dict(weights or {}), "layer_norms": norms, "layer_norm_fp32": bool(norms)}
    write_sidecar(path, sidecar)
    return sidecar


def write_sidecar(onnx_path: Path, content: Mapping[str, Any]) -> None:
    """``content`` as the JSON next to ``onnx_path`` (same name, .json), atomically."""
    with atomic_write(onnx_path.with_suffix(".json")) as sink:
        sink.write((json.dumps(content, indent=2, sort_keys=True) + "\n").encode())
