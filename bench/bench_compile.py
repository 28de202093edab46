"""``torch.compile`` of the engine's ViT encoder vs eager, after warm-up, on the same frames.

Frames alternate between two sizes (448x448 and 480x640) as two cameras would; ``dynamic=None`` lets
torch mark the changing sizes dynamic after the first recompile, so later frames do not recompile.
Printed: the first frame's time (the compile), the number of compiled graphs, and the medians of eager
and compiled ``segment`` over alternating runs. RANDOM weights: timing only.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_compile.py [--precision auto] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch._dynamo

from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.precision import PRECISIONS

PROMPTS = ["road", "car", "sky", "person", "tree", "building", "sidewalk", "bicycle"]
SIZES = [(448, 448), (480, 640)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = random_clip("ViT-B-16")
    eager = ClipDinoiser(model, None, precision=args.precision)
    compiled = ClipDinoiser(model, None, precision=args.precision)
    compiled.heads.load_state_dict(eager.heads.state_dict())
    compiled.encoder = torch.compile(compiled.encoder, dynamic=None)
    for engine in (eager, compiled):
        engine.set_prompts(PROMPTS)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in SIZES]

    def run(engine) -> float:
        started = time.perf_counter()
        for image in images:
            engine.segment(image, probs=False)
        return time.perf_counter() - started

    started = time.perf_counter()
    compiled.segment(images[0], probs=False)
    first = time.perf_counter() - started
    for _ in range(2):
        run(compiled)
        run(eager)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        times["eager"].append(run(eager))
        times["compiled"].append(run(compiled))
    after = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    agree = np.mean([(eager.segment(i, probs=False).labels == compiled.segment(i, probs=False).labels).mean()
                     for i in images])
    print(f"ViT-B-16 {eager.dtype}, {torch.get_num_threads()} threads, frames {SIZES} alternating")
    print(f"first compiled frame {first:.1f} s; graphs compiled in warm-up {graphs}, during timing {after - graphs}")
    print(f"per pair of frames: eager {medians['eager']:.3f} s, compiled {medians['compiled']:.3f} s, "
          f"speed-up {medians['eager'] / medians['compiled']:.3f}x; labels agree {100 * agree:.3f} %")


if __name__ == "__main__":
    main()
