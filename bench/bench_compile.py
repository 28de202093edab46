"""``torch.compile`` of the engine's ViT encoder vs eager, after warm-up, on the same frames.

Frames alternate between two sizes (448x448 and 480x640) as two cameras would; ``dynamic=None`` lets
torch mark the changing sizes dynamic after the first recompile, so later frames do not recompile.
``--mode reduce-overhead`` (CUDA) replays the compiled graphs as CUDA graphs. Printed: the first frame's
time (the compile), the number of compiled graphs, and the medians of eager and compiled ``segment``
over alternating runs. RANDOM weights: timing only. ``compare`` returns the figures (the GPU bundle's
check calls it).

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_compile.py [--precision auto] [--repeats 5]
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_compile.py --device cuda --mode reduce-overhead
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch._dynamo

from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.precision import PRECISIONS
from timing import alternating_medians

PROMPTS = ["road", "car", "sky", "person", "tree", "building", "sidewalk", "bicycle"]
SIZES = ((448, 448), (480, 640))


def compare(clip_model: torch.nn.Module, device: str = "cpu", precision: str = "auto", repeats: int = 5,
            mode: Optional[str] = None, backend: str = "inductor",
            sizes: Sequence[tuple[int, int]] = SIZES) -> dict[str, Any]:
    """Eager and compiled engines on the same weights and frames: compile time, graphs, medians, agreement."""
    torch._dynamo.reset()
    eager = ClipDinoiser(clip_model, None, device=device, precision=precision)
    compiled = ClipDinoiser(clip_model, None, device=device, precision=precision)
    compiled.heads.load_state_dict(eager.heads.state_dict())
    compiled.encoder = torch.compile(compiled.encoder, dynamic=None, mode=mode, backend=backend)
    for engine in (eager, compiled):
        engine.set_prompts(PROMPTS)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]

    def run(engine: ClipDinoiser) -> None:
        for image in images:
            engine.segment(image, probs=False)  # host arrays: the device work is finished

    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    compiled.segment(images[0], probs=False)
    first = time.perf_counter() - started
    for _ in range(2):
        run(compiled)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    medians = alternating_medians({"eager": lambda: run(eager), "compiled": lambda: run(compiled)}, repeats)
    after = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    agree = np.mean([(eager.segment(i, probs=False).labels == compiled.segment(i, probs=False).labels).mean()
                     for i in images])
    return {"precision": str(eager.dtype).removeprefix("torch."), "mode": mode or "default", "backend": backend,
            "frames": ["x".join(map(str, size)) for size in sizes], "first_frame_s": first,
            "graphs_in_warmup": graphs - graphs_before, "graphs_during_timing": after - graphs,
            "eager_s": medians["eager"], "compiled_s": medians["compiled"],
            "speedup": medians["eager"] / medians["compiled"], "labels_agree": float(agree)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", default=None, help="torch.compile mode (reduce-overhead: CUDA graphs)")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = compare(random_clip("ViT-B-16"), args.device, args.precision, args.repeats, args.mode)
    print(f"ViT-B-16 {result['precision']}, {torch.get_num_threads()} threads, frames {result['frames']} alternating, "
          f"mode {result['mode']}")
    print(f"first compiled frame {result['first_frame_s']:.1f} s; graphs compiled in warm-up "
          f"{result['graphs_in_warmup']}, during timing {result['graphs_during_timing']}")
    print(f"per pair of frames: eager {result['eager_s']:.3f} s, compiled {result['compiled_s']:.3f} s, "
          f"speed-up {result['speedup']:.3f}x; labels agree {100 * result['labels_agree']:.3f} %")


if __name__ == "__main__":
    main()
