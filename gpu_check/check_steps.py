"""The steps of the GPU check; each returns its figures or raises ``Skipped`` with the reason.

Random weights of the real architectures throughout: the figures are arithmetic and timing, never
segmentation quality. ``Check`` says what one run covers: ViT-B/16 and every case on CUDA, the tiny tower
and the shortest cases on the CPU (the test suite's run).
"""
from __future__ import annotations

import importlib.util
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

CAMVID_PROMPTS = ["sky", "building", "pole", "road", "sidewalk|pavement", "tree", "sign symbol", "fence", "car",
                  "pedestrian", "bicyclist"]
MIN_LABEL_AGREEMENT = 0.95  # reduced precision vs fp32, as the engine's CUDA test asks


class Skipped(Exception):
    """The step cannot run here; the message says why."""


@dataclass(frozen=True)
class Check:
    device: torch.device
    model: str
    frames: list[np.ndarray]
    out: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def engine(check: Check, heads: dict, **options: Any):
    from clip_dinoiser_ros.model import ClipDinoiser, random_clip

    result = ClipDinoiser(random_clip(check.model), heads, device=check.device, **options)
    result.set_prompts(CAMVID_PROMPTS)
    return result


def random_heads(check: Check) -> dict:
    from clip_dinoiser_ros.model import DinoiserHeads, random_clip

    torch.manual_seed(0)
    return DinoiserHeads(random_clip(check.model).visual.conv1.out_channels).state_dict()


def agreement(expected: list, got: list) -> dict[str, float]:
    """Label agreement over all pixels and the largest and mean probability differences."""
    labels = np.mean([(e.labels == g.labels).mean() for e, g in zip(expected, got)])
    differences = [np.abs(e.probs - g.probs) for e, g in zip(expected, got)]
    return {"labels_agree": float(labels), "probs_max_diff": float(max(d.max() for d in differences)),
            "probs_mean_diff": float(np.mean([d.mean() for d in differences]))}


def segment_cases(subject, frames: list[np.ndarray]) -> dict[str, list]:
    """Whole frames, slide windows (the paper's protocol) and a batch of two cameras."""
    return {"whole": [subject.segment(frame) for frame in frames],
            "slide": [subject.segment(frame, mode="slide") for frame in frames],
            "batch_of_2": subject.segment_batch(frames[:2])}


def precision(check: Check) -> dict[str, Any]:
    """fp16 and bf16 against fp32 on the real frames (whole, slide, a batch of two cameras)."""
    heads = random_heads(check)
    reference = segment_cases(engine(check, heads, precision="fp32"), check.frames)
    results: dict[str, Any] = {}
    for name in ("fp16", "bf16"):
        try:
            reduced = engine(check, heads, precision=name)
        except ValueError as refused:  # the engine's own refusal (fp16 off CUDA, bf16 without native bf16)
            results[name] = {"skipped": str(refused)}
            continue
        cases = segment_cases(reduced, check.frames)
        results[name] = {case: agreement(reference[case], cases[case]) for case in cases}
        worst = min(figures["labels_agree"] for figures in results[name].values())
        if worst < MIN_LABEL_AGREEMENT:
            raise AssertionError(f"{name}: labels agree with fp32 on {100 * worst:.2f} % of pixels "
                                 f"(< {100 * MIN_LABEL_AGREEMENT:.0f} %): {results}")
    if all("skipped" in figures for figures in results.values()):
        raise Skipped("; ".join(f"{name}: {figures['skipped']}" for name, figures in results.items()))
    return results


def bench_gpu(check: Check) -> dict[str, Any]:
    """bench/bench_gpu.py's figures: every case on CUDA, the shortest on the CPU."""
    import bench_gpu as bench

    if check.cuda:
        return bench.measure(check.model, str(check.device), ["fp16", "fp32"], repeats=10, frames=50)
    return bench.measure(check.model, str(check.device), ["fp32"], repeats=1, frames=2,
                         sizes=bench.SIZES[:1], batches=bench.BATCHES[:2])


def require_modules(*names: str) -> None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise Skipped(f"{', '.join(missing)} not installed here (binary packages: the bundle carries none)")


def onnx_export(check: Check) -> dict[str, Any]:
    """The per-frame graph exported from the engine on this device, then onnx.checker."""
    require_modules("onnx", "onnxscript")
    import onnx

    from clip_dinoiser_ros.model.fingerprint import GRAPH_PARTS
    from clip_dinoiser_ros.model.onnx_export import export_graph

    subject = engine(check, random_heads(check), precision="fp32")
    path = check.out / "camera.onnx"
    started = time.perf_counter()
    sidecar = export_graph(subject.encoder, subject.heads, subject.gamma, (448, 608), path,
                           subject.fingerprint(GRAPH_PARTS))
    seconds = time.perf_counter() - started
    onnx.checker.check_model(str(path))
    return {"seconds": seconds, "input_size": sidecar["input_size"], "megabytes": path.stat().st_size / 2**20}


def onnx_runtime(check: Check) -> dict[str, Any]:
    """ONNX Runtime on CUDA / TensorRT against torch fp32 on the real frames, with the provider it ran on."""
    require_modules("onnx", "onnxscript", "onnxruntime")
    import onnxruntime

    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers())
    if not gpu or not check.cuda:
        raise Skipped(f"no GPU build of onnxruntime with CUDA here (providers "
                      f"{onnxruntime.get_available_providers()}, device {check.device})")
    heads = random_heads(check)
    torch_engine = engine(check, heads, precision="fp32")
    onnx_engine = engine(check, heads, precision="fp32", backend="onnxruntime")
    expected = [torch_engine.segment(frame) for frame in check.frames]
    started = time.perf_counter()
    got = [onnx_engine.segment(frame) for frame in check.frames]
    first = time.perf_counter() - started
    timings = {}
    for name, subject in (("torch_fp32", torch_engine), ("onnxruntime", onnx_engine)):
        started = time.perf_counter()
        for frame in check.frames * 5:
            subject.segment(frame, probs=False)
        timings[f"{name}_ms_per_frame"] = 1e3 * (time.perf_counter() - started) / (5 * len(check.frames))
    return {"backend": onnx_engine.backend, "first_frames_s": first, **agreement(expected, got), **timings}


def compiled(check: Check) -> dict[str, Any]:
    """bench/bench_compile.py: torch.compile (inductor) and CUDA graphs on CUDA; dynamo tracing on the CPU."""
    from bench_compile import compare

    from clip_dinoiser_ros.model import random_clip

    model = random_clip(check.model)
    if not check.cuda:  # inductor's C++ compile takes minutes on a small CPU: trace only
        return {"eager_backend": compare(model, "cpu", "fp32", repeats=1, backend="eager",
                                         sizes=[(64, 96)])}
    return {"inductor": compare(model, str(check.device), "fp16", repeats=10),
            "cuda_graphs": compare(model, str(check.device), "fp16", repeats=10, mode="reduce-overhead")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_group(check: Check) -> dict[str, Any]:
    """distributed.Ranks' one set-up (NCCL beside gloo on CUDA) and every collective the tools use, world 1."""
    import torch.distributed as dist

    from clip_dinoiser_ros.distributed import Ranks

    names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    try:
        ranks = Ranks(str(check.device), always_group=True)
        try:
            matrix = np.arange(4, dtype=np.int64).reshape(2, 2)
            total = ranks.total(matrix)
            gathered = ranks.gather({"rank": ranks.rank})
            ranks.barrier()
            result = {"backend": str(dist.get_backend()), "total": total.tolist(), "gathered": gathered}
            if check.cuda:  # a CUDA tensor goes over NCCL
                tensor = torch.ones(4, device=check.device)
                dist.all_reduce(tensor)
                result["nccl_all_reduce"] = tensor.tolist()
                result["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
        finally:
            ranks.close()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if result["total"] != matrix.tolist() or result["gathered"] != [{"rank": 0}]:
        raise AssertionError(f"collectives of a world of one changed their input: {result}")
    return result


STEPS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "precision": precision, "bench_gpu": bench_gpu, "onnx_export": onnx_export, "onnx_runtime": onnx_runtime,
    "torch_compile": compiled, "process_group": process_group,
}
