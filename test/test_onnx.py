"""ONNX export and the ONNX Runtime backend: a checked file with its sidecar, the same results as torch fp32
on real frames (the real ViT-B/16 architecture, random weights), exports cached by what decides them."""
import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from abandoned_parts import plant_abandoned
from clip_dinoiser_ros.model import ClipDinoiser, DinoiserHeads, random_clip
from clip_dinoiser_ros.model import onnx_backend
from clip_dinoiser_ros.model.heads_download import cache_dir
from clip_dinoiser_ros.model.onnx_backend import OnnxRuntimeBackend, best_providers
from clip_dinoiser_ros.model.onnx_export_process import ExportProcesses
from conftest import TINY_MODEL
from frame_sources import camvid_frames

CAMVID_PROMPTS = ["sky", "building", "pole", "road", "sidewalk|pavement", "tree", "sign symbol", "fence", "car",
                  "pedestrian", "bicyclist"]
GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers())


def export_cli(*arguments: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "clip-dinoiser-export"
    return subprocess.run([str(script), *arguments], capture_output=True, text=True, timeout=600)


def test_the_export_command_writes_a_checked_graph_its_sidecar_and_a_trtexec_line(tmp_path):
    out = tmp_path / "camera.onnx"
    result = export_cli("--size", "480x640", "--short-side", "448", "--random-weights", "--clip-model", TINY_MODEL,
                        "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "graph input 448x608" in result.stderr  # 480x640 -> 448x597, padded to multiples of 16
    onnx.checker.check_model(str(out))
    model = onnx.load(str(out))
    dims = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in [*model.graph.input, *model.graph.output]}
    assert dims == {"pixels": ["batch", 3, 448, 608], "text_embeddings": ["synonyms", 32],
                    "synonym_logits": ["batch", "synonyms", 28, 38], "objectness": ["batch", 1, 28, 38]}
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) >= 17

    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["grid"] == [28, 38] and sidecar["input_size"] == [448, 608] and sidecar["opset"] >= 17
    assert sidecar["weights"] == {"clip_model": TINY_MODEL, "random_weights": True, "seed": 0}
    assert sidecar["versions"]["torch"] == torch.__version__ and len(sidecar["weights_fingerprint"]) == 32
    norms = [node.name for node in model.graph.node if node.op_type == "LayerNormalization"]
    assert norms and all(f"{name}:fp32" in sidecar["trtexec"] for name in norms)
    assert "--fp16" in sidecar["trtexec"] and "--precisionConstraints=obey" in sidecar["trtexec"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # copied to a robot by another user, too


def test_the_export_command_writes_the_text_input_of_a_vocabulary(tmp_path):
    out = tmp_path / "camera.onnx"
    abandoned = plant_abandoned(out)  # by an earlier export killed outright
    result = export_cli("--size", "120x160", "--short-side", "64", "--random-weights", "--clip-model", TINY_MODEL,
                        "--prompts", "road", "car|truck", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert not abandoned.exists() and not list(tmp_path.glob(".*.part"))
    text = np.load(tmp_path / "camera.text.npy")
    classes = json.loads((tmp_path / "camera.classes.json").read_text())
    assert text.shape == (3, 32) and text.dtype == np.float32
    assert classes == {"classes": ["road", "car"], "synonym_to_class": [0, 1, 1], "synonyms": ["road", "car", "truck"]}
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, objectness = session.run(None, {"pixels": np.zeros((1, 3, 64, 96), np.float32), "text_embeddings": text})
    assert logits.shape == (1, 3, 4, 6) and objectness.shape == (1, 1, 4, 6)
    assert export_cli("--size", "120x160", "--random-weights", "--clip-model", TINY_MODEL, "--prompts", "a", "A",
                      "--out", str(tmp_path / "x.onnx")).returncode == 2  # duplicate class names, before any export


def test_the_export_command_resolves_slide_mode_to_one_window(tmp_path):
    out = tmp_path / "window.onnx"
    result = export_cli("--size", "720x960", "--mode", "slide", "--random-weights", "--clip-model", TINY_MODEL,
                        "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.with_suffix(".json").read_text())["input_size"] == [448, 448]


def engines(clip_model, heads, **options):
    torch_engine = ClipDinoiser(clip_model, heads, precision="fp32", templates="simple", **options)
    onnx_engine = ClipDinoiser(clip_model, heads, precision="fp32", templates="simple", backend="onnxruntime",
                               **options)
    for engine in (torch_engine, onnx_engine):
        engine.set_prompts(CAMVID_PROMPTS)
    return torch_engine, onnx_engine


@pytest.mark.timeout(1500)
def test_onnxruntime_on_the_cpu_equals_torch_fp32_on_camvid_frames():
    """Two camera sizes (two graphs) in whole mode and the paper's slide mode, real ViT-B/16 architecture."""
    clip_model = random_clip("ViT-B-16", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        heads = DinoiserHeads(clip_model.visual.conv1.out_channels).state_dict()
    torch_engine, onnx_engine = engines(clip_model, heads)
    assert onnx_engine.runs_on == "onnxruntime/CPUExecutionProvider"
    frames = camvid_frames(2)
    cases = [(frame, "whole") for frame in frames] + [(frames[0][45:315], "whole"), (frames[1], "slide")]
    for image, mode in cases:  # 360x480 (a 448x608 graph), 270x480 (448x800), slide (448x448 windows)
        expected, got = (engine.segment(image, mode=mode) for engine in (torch_engine, onnx_engine))
        agreement = float((expected.labels == got.labels).mean())
        difference = float(np.abs(expected.probs - got.probs).max())
        print(f"{image.shape[0]}x{image.shape[1]} {mode}: labels agree {100 * agreement:.4f} %, "
              f"probabilities within {difference:.2e}")
        assert agreement >= 0.999 and difference <= 1e-4
    assert len(list(cache_dir("onnx").glob("*.onnx"))) == 3


def test_an_export_is_reused_only_for_the_same_weights_and_gamma(tiny_clip, monkeypatch):
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    heads = DinoiserHeads(tiny_clip.visual.conv1.out_channels).state_dict()
    _, first = engines(tiny_clip, heads)
    first.segment(image, short_side=64)
    exported = []  # the sizes exported, in this process (a first frame) or in a child (a live change)
    original, in_child = onnx_backend.export_graph, ExportProcesses.export
    monkeypatch.setattr(onnx_backend, "export_graph", lambda *a, **k: exported.append(a[3]) or original(*a, **k))
    monkeypatch.setattr(ExportProcesses, "export", lambda self, *a: exported.append(a[1]) or in_child(self, *a))

    _, restarted = engines(tiny_clip, heads)
    restarted.segment(image, short_side=64)
    assert exported == []  # the same weights, size and gamma: read from the cache
    restarted.gamma = 0.3
    restarted.segment(image, short_side=64)  # runs gamma 0.2 while 0.3 is exported in the background
    assert restarted.onnx.wait_prepared(timeout=300)
    _, other_weights = engines(random_clip(TINY_MODEL, seed=3), heads)
    other_weights.segment(image, short_side=64)
    assert exported == [(64, 96), (64, 96)]

    cached = sorted(cache_dir("onnx").glob("*.onnx"))
    for path in cached:
        path.write_bytes(path.read_bytes()[:1000])  # damaged (a full disk, a copy cut short)
    _, damaged = engines(tiny_clip, heads)
    with pytest.warns(RuntimeWarning, match="is not the one its sidecar describes"):
        result = damaged.segment(image, short_side=64)
    assert exported == [(64, 96)] * 3 and result.labels.shape == (60, 80)


def test_the_best_execution_provider_present_is_chosen():
    assert best_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert best_providers(["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert best_providers(["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider",
                           "AzureExecutionProvider"])[0] == "TensorrtExecutionProvider"


def test_backend_onnxruntime_refuses_a_reduced_precision(tiny_clip):
    with pytest.raises(ValueError, match="runs in fp32"):
        ClipDinoiser(tiny_clip, None, precision="bf16", backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        ClipDinoiser(tiny_clip, None, backend="tensorrt")


@pytest.mark.skipif(not GPU_PROVIDERS or not torch.cuda.is_available(), reason="needs onnxruntime-gpu and CUDA")
def test_a_gpu_execution_provider_agrees_with_torch_fp32(tiny_clip):
    heads = DinoiserHeads(tiny_clip.visual.conv1.out_channels).state_dict()
    torch_engine, onnx_engine = engines(tiny_clip.cuda(), heads, device="cuda")
    assert onnx_engine.onnx.provider in GPU_PROVIDERS
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    expected, got = (engine.segment(image) for engine in (torch_engine, onnx_engine))
    assert (expected.labels == got.labels).mean() >= 0.999
    assert np.abs(expected.probs - got.probs).max() <= 1e-3


def test_the_backend_serves_several_threads_with_one_session_per_size(tiny_clip):
    import threading

    engine = ClipDinoiser(tiny_clip, None)
    backend = OnnxRuntimeBackend(engine.encoder, engine.heads, engine.fingerprint)
    sessions = []
    threads = [threading.Thread(target=lambda: sessions.append(backend.session((64, 64), 0.2))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(session) for session in sessions}) == 1
