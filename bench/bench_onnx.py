"""ONNX Runtime (CPU execution provider) vs torch fp32 for ``ClipDinoiser.segment`` on this CPU.

The real ViT-B/16 architecture with random weights (the cost does not depend on the values), 11 CamVid
prompts, whole mode at short side 448, camera frames of 448x448 and 480x640 (a 448x448 and a 448x608
graph). The first call of each size exports and loads its graph (reported apart); then alternating
runs, medians. ``torch auto`` (bf16 where the CPU has it natively) is printed beside, for reference.

    PYTHONPATH=. .venv/bin/python bench/bench_onnx.py [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_dinoiser_ros.model import ClipDinoiser, DinoiserHeads, random_clip  # noqa: E402
from timing import alternating_medians  # noqa: E402

PROMPTS = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car", "pedestrian",
           "bicyclist"]
SIZES = ((448, 448), (480, 640))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    clip_model = random_clip("ViT-B-16")
    heads = DinoiserHeads(clip_model.visual.conv1.out_channels).state_dict()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache  # a cold export cache: the first call exports
        engines = {
            "torch fp32": ClipDinoiser(clip_model, heads, precision="fp32", templates="simple"),
            "onnxruntime": ClipDinoiser(clip_model, heads, templates="simple", backend="onnxruntime"),
            "torch auto": ClipDinoiser(clip_model, heads, precision="auto", templates="simple"),
        }
        for engine in engines.values():
            engine.set_prompts(PROMPTS)
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}; ViT-B-16 (random weights), "
              f"{len(PROMPTS)} classes, whole mode, short side 448, {args.repeats} alternating runs; torch auto = "
              f"{engines['torch auto'].dtype}")
        rng = np.random.default_rng(0)
        for height, width in SIZES:
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            started = time.perf_counter()
            engines["onnxruntime"].segment(image)
            first = time.perf_counter() - started
            medians = alternating_medians({name: (lambda e=engine: e.segment(image)) for name, engine in engines.items()},
                                          args.repeats, warmup=1)
            print(f"{height}x{width}: torch fp32 {1000 * medians['torch fp32']:.0f} ms, onnxruntime "
                  f"{1000 * medians['onnxruntime']:.0f} ms (ratio torch fp32 / onnxruntime "
                  f"{medians['torch fp32'] / medians['onnxruntime']:.2f}), torch auto {1000 * medians['torch auto']:.0f} ms; "
                  f"first onnxruntime call (export + session) {first:.1f} s")


if __name__ == "__main__":
    main()
