"""The figures a GPU session records: the engine vs a bare ``encode_image``, text encoding, camera rates.

- Engine vs bare: ``segment_batch`` (uint8 frames in, labels and confidence on the host, ``probs=False``
  as the node asks) against open_clip's own ``encode_image`` on the same normalised, padded batch with the
  engine's weights (``bench_engine.baseline_model``), under the same precision; 448x448 and 480x640
  frames, batches of 1, 2 and 4 (one ViT pass each), medians of alternating runs, peak GPU memory of each.
- Text: a new 20-class vocabulary, 80 templates each (1,600 strings), on a fresh engine (empty cache).
- Cameras: frames/s and latency of one camera (``segment``) and two (``segment_batch``) at 640x480.

RANDOM weights: timing only. ``measure`` returns the figures (the GPU bundle's check calls it).

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_gpu.py --device cuda --precision fp16 fp32
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_gpu.py --device cpu --model ViT-Tiny-16-test --repeats 2
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from bench_engine import baseline_model, engine_input, synchronize
from bench_text import VOCABULARY
from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.precision import PRECISIONS, autocast
from clip_dinoiser_ros.model.templates import TEMPLATE_SETS
from timing import alternating_medians

SIZES = ((448, 448), (480, 640))
BATCHES = (1, 2, 4)
CAMERA_SIZE = (480, 640)


def peak_memory_mb(device: torch.device, run: Callable[[], object]) -> Optional[float]:
    """The peak GPU memory allocated while ``run`` runs (None off CUDA)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def engine_vs_encode_image(clip_model: torch.nn.Module, model_name: str, device: str, precision: str, repeats: int,
                           sizes: Sequence[tuple[int, int]] = SIZES,
                           batches: Sequence[int] = BATCHES) -> list[dict[str, Any]]:
    """One row per frame size and batch: engine and bare encode_image medians (ms) and peak memory (MB)."""
    engine = ClipDinoiser(clip_model, None, device=device, precision=precision)
    engine.set_prompts(VOCABULARY)
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(max(batches))]
        grid_input = engine_input(engine, images[0])
        baseline = baseline_model(clip_model, tuple(grid_input.shape[-2:]), engine.device, model_name)
        for batch in batches:
            frames = images[:batch]
            pixels = torch.cat([engine_input(engine, image) for image in frames])

            def run_engine() -> None:
                engine.segment_batch(frames, probs=False)  # host arrays: the device work is finished

            def run_baseline() -> None:
                with torch.inference_mode(), autocast(engine.device, engine.dtype):
                    baseline.encode_image(pixels)
                synchronize(engine.device)

            medians = alternating_medians({"engine": run_engine, "encode_image": run_baseline}, repeats, warmup=2)
            rows.append({
                "precision": str(engine.dtype).removeprefix("torch."), "frame": f"{size[0]}x{size[1]}",
                "encoder_input": "x".join(map(str, pixels.shape[-2:])), "batch": batch,
                "engine_ms": 1e3 * medians["engine"], "encode_image_ms": 1e3 * medians["encode_image"],
                "ratio": medians["engine"] / medians["encode_image"], "frames_per_s": batch / medians["engine"],
                "engine_peak_mb": peak_memory_mb(engine.device, run_engine),
                "encode_image_peak_mb": peak_memory_mb(engine.device, run_baseline),
            })
        del baseline
    return rows


def text_encoding(clip_model: torch.nn.Module, device: str, repeats: int) -> dict[str, Any]:
    """A 20-class vocabulary x 80 templates on a fresh engine each time (nothing cached), then cached."""
    templates = len(TEMPLATE_SETS["imagenet"])
    ClipDinoiser(clip_model, None, device=device).encode_prompts(["lamp", "bookshelf"])  # warm-up, other names
    times = []
    engine = None
    for _ in range(repeats):
        engine = ClipDinoiser(clip_model, None, device=device)
        synchronize(engine.device)
        started = time.perf_counter()
        engine.encode_prompts(VOCABULARY)
        synchronize(engine.device)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    engine.encode_prompts(VOCABULARY)
    return {"classes": len(VOCABULARY), "templates": templates, "strings": len(VOCABULARY) * templates,
            "uncached_s": statistics.median(times), "cached_ms": 1e3 * (time.perf_counter() - started),
            "peak_mb": peak_memory_mb(engine.device, lambda: ClipDinoiser(
                clip_model, None, device=device).encode_prompts(VOCABULARY))}


def camera_rates(clip_model: torch.nn.Module, device: str, precision: str, frames: int,
                 warmup: int) -> list[dict[str, Any]]:
    """Frames/s and latency (ms) of one camera (``segment``) and two (``segment_batch``, one ViT pass)."""
    engine = ClipDinoiser(clip_model, None, device=device, precision=precision)
    engine.set_prompts(VOCABULARY[:10])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*CAMERA_SIZE, 3), dtype=np.uint8) for _ in range(2)]
    rows = []
    for cameras in (1, 2):
        def run() -> None:
            if cameras == 1:
                engine.segment(images[0], probs=False)
            else:
                engine.segment_batch(images, probs=False)

        for _ in range(warmup):
            run()
        latencies = []
        started = time.perf_counter()
        for _ in range(frames):
            begin = time.perf_counter()
            run()  # returns host arrays: the device work is finished
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
        rows.append({"precision": str(engine.dtype).removeprefix("torch."), "cameras": cameras,
                     "frames_per_s": cameras * frames / elapsed, "median_ms": 1e3 * statistics.median(latencies),
                     "p95_ms": 1e3 * float(np.percentile(latencies, 95))})
    return rows


def measure(model_name: str, device: str, precisions: Sequence[str], repeats: int, frames: int,
            sizes: Sequence[tuple[int, int]] = SIZES, batches: Sequence[int] = BATCHES) -> dict[str, Any]:
    """Every figure above, for each of ``precisions``, on one random-weight model."""
    torch.manual_seed(0)
    clip_model = random_clip(model_name)
    where = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "CPU"
    results: dict[str, Any] = {"model": model_name, "device": where, "torch": torch.__version__,
                               "engine_vs_encode_image": [], "cameras": []}
    for precision in precisions:
        results["engine_vs_encode_image"] += engine_vs_encode_image(clip_model, model_name, device, precision, repeats,
                                                                     sizes, batches)
        results["cameras"] += camera_rates(clip_model, device, precision, frames, warmup=max(1, frames // 10))
    results["text_encoding"] = text_encoding(clip_model, device, repeats)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The figures as Markdown tables (bench/README.md, the GPU check's results.md)."""
    def mb(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.0f}"

    lines = [f"{results['model']} RANDOM weights on {results['device']}, torch {results['torch']}", "",
             "| precision | frame | encoder input | batch | engine ms | encode_image ms | engine/encode_image "
             "| frames/s | engine peak MB | encode_image peak MB |", "|" + " --- |" * 10]
    lines += [f"| {r['precision']} | {r['frame']} | {r['encoder_input']} | {r['batch']} | {r['engine_ms']:.1f} | "
              f"{r['encode_image_ms']:.1f} | {r['ratio']:.2f} | {r['frames_per_s']:.1f} | {mb(r['engine_peak_mb'])} | "
              f"{mb(r['encode_image_peak_mb'])} |" for r in results["engine_vs_encode_image"]]
    lines += ["", "| precision | cameras (640x480) | frames/s | latency median ms | p95 ms |", "|" + " --- |" * 5]
    lines += [f"| {r['precision']} | {r['cameras']} | {r['frames_per_s']:.1f} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} |"
              for r in results["cameras"]]
    text = results["text_encoding"]
    lines += ["", f"Text: {text['classes']} classes x {text['templates']} templates ({text['strings']} strings) "
              f"{text['uncached_s']:.3f} s uncached, {text['cached_ms']:.2f} ms cached, peak {mb(text['peak_mb'])} MB"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, help="default: fp16 fp32 on CUDA, auto elsewhere")
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--repeats", type=int, default=20, help="alternating timed runs per case")
    parser.add_argument("--frames", type=int, default=200, help="timed frames per camera case")
    args = parser.parse_args()
    precisions = args.precision or (["fp16", "fp32"] if torch.device(args.device).type == "cuda" else ["auto"])
    print(markdown(measure(args.model, args.device, precisions, args.repeats, args.frames)))


if __name__ == "__main__":
    main()
