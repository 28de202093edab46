"""Frames/s and latency of the engine for one and two cameras: the figures a GPU session records.

One camera: ``segment`` on a 640x480 frame, frame after frame. Two cameras: ``segment_batch`` on two
640x480 frames (one ViT pass), as the node does with ``batch_cameras`` on CUDA. Latency is the time from
the uint8 frame to labels and confidence on the host; frames/s counts camera frames. Outputs as the node
needs them for a mask and a confidence image (``probs=False``). RANDOM weights: timing only.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_gpu.py --device cuda --precision fp16
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_gpu.py --device cpu --model ViT-Tiny-16-test
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.precision import PRECISIONS

PROMPTS = ["road", "car", "sky", "person", "tree", "building", "sidewalk", "bicycle", "pole", "sign"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    engine = ClipDinoiser(random_clip(args.model), None, device=args.device, precision=args.precision)
    engine.set_prompts(PROMPTS)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    device = torch.cuda.get_device_name() if engine.device.type == "cuda" else "CPU"
    print(f"{args.model} RANDOM weights on {device} ({engine.device}), {engine.dtype}, 640x480, "
          f"{len(PROMPTS)} classes, {args.frames} timed passes after {args.warmup} warm-up")
    for cameras in (1, 2):
        def run() -> None:
            if cameras == 1:
                engine.segment(frames[0], probs=False)
            else:
                engine.segment_batch(frames, probs=False)

        for _ in range(args.warmup):
            run()
        latencies = []
        started = time.perf_counter()
        for _ in range(args.frames):
            begin = time.perf_counter()
            run()  # returns host arrays: the device work is finished
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
        print(f"  {cameras} camera(s): {cameras * args.frames / elapsed:.1f} frames/s, latency median "
              f"{1e3 * statistics.median(latencies):.1f} ms, p95 {1e3 * np.percentile(latencies, 95):.1f} ms")


if __name__ == "__main__":
    main()
