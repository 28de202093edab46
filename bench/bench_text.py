"""Encoding a new 20-class vocabulary: the engine's prompt encoder vs. plain open_clip ``encode_text``.

Compared, on the same random ViT-B-16 text tower (timing and agreement only, not meaningful embeddings):
  engine   -- ``ClipDinoiser.encode_prompts(classes)`` on a fresh engine each repeat (empty cache):
              tokenises the 20 x 80 template strings and runs the text tower cut to each batch's
              longest real prompt (exact for CLIP's causal, end-of-text-pooled tower).
  baseline -- ``model.encode_text(tokenizer(strings))`` over the same 1,600 strings at the full
              77-token context, in batches of 256 (the engine's batch; ``--baseline-batch 0`` for all
              at once), then per class: normalise, mean over templates, normalise.

Reported: medians of interleaved runs (engine, baseline, engine, ...), the speed-up, the largest
absolute difference between the two sets of per-class embeddings, and the time of re-encoding the same
vocabulary once it is cached (a dictionary look-up per class).

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_text.py --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch
import torch.nn.functional as F

from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.templates import TEMPLATE_SETS

MODEL = "ViT-B-16"
VOCABULARY = [
    "car", "bus", "truck", "bicycle", "motorcycle", "person", "traffic light", "stop sign", "road",
    "sidewalk", "building", "tree", "sky", "chair", "table", "sofa", "bed", "television", "door", "window",
]
WARMUP_VOCABULARY = ["lamp", "bookshelf"]  # different names: the measured vocabulary is never cached


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs of each (default 3)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--baseline-batch", type=int, default=256, help="0 = all 1,600 strings at once")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = random_clip(MODEL).to(device)
    tokenizer = open_clip.get_tokenizer(MODEL)
    templates = TEMPLATE_SETS["imagenet"]
    strings = [template(name) for name in VOCABULARY for template in templates]

    def baseline() -> torch.Tensor:
        with torch.inference_mode():
            tokens = tokenizer(strings).to(device)
            batch = args.baseline_batch or len(tokens)
            features = torch.cat([model.encode_text(chunk) for chunk in tokens.split(batch)])
            features = F.normalize(features.float(), dim=-1)
            per_class = features.view(len(VOCABULARY), len(templates), -1).mean(dim=1)
            return F.normalize(per_class, dim=-1).cpu()

    def timed(fn):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        return time.perf_counter() - start, out

    print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}, {len(VOCABULARY)} classes x {len(templates)} templates = "
          f"{len(strings)} strings, baseline batch {args.baseline_batch or len(strings)}, "
          f"{args.repeats} interleaved repeats (random weights: timing only)")

    # Warm-up on small inputs: initialises kernels and allocators without caching the measured names.
    ClipDinoiser(model, None, device=device).encode_prompts(WARMUP_VOCABULARY)
    with torch.inference_mode():
        model.encode_text(tokenizer(strings[:16]).to(device))

    times = {"engine": [], "baseline": []}
    engine = engine_vocabulary = reference = None
    for _ in range(args.repeats):
        engine = ClipDinoiser(model, None, device=device)  # fresh engine: empty prompt cache
        seconds, engine_vocabulary = timed(lambda: engine.encode_prompts(VOCABULARY))
        times["engine"].append(seconds)
        seconds, reference = timed(baseline)
        times["baseline"].append(seconds)
        print(f"  engine {times['engine'][-1]:.2f} s, baseline {times['baseline'][-1]:.2f} s", flush=True)

    cached = [timed(lambda: engine.encode_prompts(VOCABULARY))[0] for _ in range(20)]
    med = {key: statistics.median(values) for key, values in times.items()}
    difference = (engine_vocabulary.text_embeddings - reference).abs().max().item()
    print(f"engine.encode_prompts (uncached) median {med['engine']:.3f} s")
    print(f"open_clip encode_text baseline   median {med['baseline']:.3f} s")
    print(f"speed-up baseline/engine          {med['baseline'] / med['engine']:.2f}x  (target >= 4x)")
    print(f"max |engine - baseline| per-class embedding  {difference:.2e}  (target <= 1e-5)")
    print(f"re-encoding the cached vocabulary median {1000 * statistics.median(cached):.3f} ms  (target < 10 ms)")


if __name__ == "__main__":
    main()
