"""Peak memory of ``ClipDinoiser.segment`` with and without the full-resolution class map.

Compared, on a 1920x1080 image with 100 prompts (ViT-B-16, whole mode by default):
  probs=True  -- ``segment(image)``: labels, confidence, per-class maxima and the (100, 1080, 1920)
                 float32 probability map (830 MB) at the image's resolution.
  probs=False -- ``segment(image, probs=False)``: the same labels, confidence and per-class maxima,
                 computed a few classes at a time without that map (what the node needs per frame).

Each configuration runs in a fresh process (this script started again with ``--child``), so nothing
one leaves in the allocator counts against the other. The peak resident set (VmHWM in
/proc/self/status) is reset just before ``segment`` (``/proc/self/clear_refs``), so it is the peak of
that call, model and vocabulary included; the resident set before the call is printed too. On CUDA the
peak of allocated GPU memory is reported as well. Runs alternate (True, False, True, ...) when
repeated. Weights are random (``random_clip`` and random heads): this measures memory, the outputs are
not segmentation results. Prompts use the "none" template set, so encoding 100 of them takes seconds.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_memory.py     # --device cuda --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from clip_dinoiser_ros.model import ClipDinoiser, random_clip

MODEL = "ViT-B-16"
HEIGHT, WIDTH = 1080, 1920
CLASSES = 100
CONFIGURATIONS = (True, False)  # the value of segment(probs=...)


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux >= 4.0: VmHWM restarts from the current resident set."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def child(args: argparse.Namespace) -> None:
    """One segment call in this fresh process; prints one JSON line."""
    device = torch.device(args.device)
    engine = ClipDinoiser(random_clip(MODEL), None, device=device, templates=args.templates)  # random heads
    engine.set_prompts([f"object {i}" for i in range(CLASSES)])
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = status_kib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    segmentation = engine.segment(image, mode=args.mode, probs=args.child == "True")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    result = {
        "rss_before_mib": rss_before / 1024,
        "peak_rss_mib": status_kib("VmHWM") / 1024,
        "seconds": seconds,
        "probs_mib": 0.0 if segmentation.probs is None else segmentation.probs.nbytes / 2**20,
    }
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(result))


def run_child(probs: bool, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", str(probs), "--device", args.device,
               "--mode", args.mode, "--templates", args.templates]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--mode", default="whole", choices=("whole", "slide"))
    parser.add_argument("--templates", default="none", choices=("none", "simple"))
    parser.add_argument("--child", choices=("True", "False"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print(f"torch {torch.__version__}, device {args.device}, {MODEL} random weights and heads (memory only), "
          f"{HEIGHT}x{WIDTH} image, {CLASSES} prompts (templates {args.templates!r}), mode {args.mode}, "
          f"{args.repeats} fresh process(es) per configuration")
    runs: dict[bool, list[dict]] = {probs: [] for probs in CONFIGURATIONS}
    for _ in range(args.repeats):
        for probs in CONFIGURATIONS:
            runs[probs].append(run_child(probs, args))
    medians = {probs: {key: statistics.median(r[key] for r in results) for key in results[0]}
               for probs, results in runs.items()}
    for probs, m in medians.items():
        gpu = f", peak GPU allocated {m['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in m else ""
        print(f"  probs={probs!s:5}  peak RSS {m['peak_rss_mib']:6.0f} MiB  (RSS before the call "
              f"{m['rss_before_mib']:.0f} MiB, +{m['peak_rss_mib'] - m['rss_before_mib']:.0f} MiB during it; "
              f"probs map {m['probs_mib']:.0f} MiB){gpu}  segment {m['seconds']:.2f} s")
    with_map, without = medians[True], medians[False]
    print(f"  peak RSS ratio probs=False / probs=True: {without['peak_rss_mib'] / with_map['peak_rss_mib']:.3f}")
    grown = [(m["peak_rss_mib"] - m["rss_before_mib"]) for m in (with_map, without)]
    print(f"  growth during segment ratio: {grown[1] / grown[0]:.3f}")
    if "peak_gpu_mib" in without:
        print(f"  peak GPU ratio probs=False / probs=True: {without['peak_gpu_mib'] / with_map['peak_gpu_mib']:.3f}")


if __name__ == "__main__":
    main()
