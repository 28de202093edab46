"""Whole-image segmentation vs. a bare CLIP image pass, on identical weights and input.

Compared, per case:
  engine   -- ``ClipDinoiser.segment(image, mode="whole")``: uint8 image in, full-resolution labels,
              probabilities and confidence out (preprocessing, one dense CLIP pass, the heads,
              guided pooling, class probabilities, upsampling, numpy outputs).
  baseline -- open_clip's own ``model.encode_image`` on the normalised, padded tensor the engine feeds
              its encoder, with a model built for that grid (``force_image_size``) whose weights are the
              engine's, positional embedding resized bicubic exactly as the engine resizes it.

The baseline is the floor the engine cannot avoid paying (one ViT pass at that resolution): a ratio
engine/baseline <= 1.0 means everything the engine adds is paid for by what it skips (the last
block's query/key attention). The baseline runs in fp32 unless ``--baseline-precision same``, so
``--precision auto`` (bf16 on CPUs with native bf16) gives the speed-up of reduced precision. Weights are random (``random_clip``): this times compute, the outputs
are meaningless and are not segmentation results.

Runs alternate engine, baseline, engine, baseline... so that load from other processes hits both
alike; medians are reported. An optional breakdown of the engine (timers wrapped around its
internals, run after the interleaved timing) says where its time goes.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_engine.py --repeats 7
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import open_clip
import torch

from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model import engine as engine_module
from clip_dinoiser_ros.model.precision import PRECISIONS, autocast
from clip_dinoiser_ros.model import preprocessing as pre
from clip_dinoiser_ros.model.dense_clip import DenseClipEncoder

MODEL = "ViT-B-16"
VOCABULARY = [
    "car", "bus", "truck", "bicycle", "motorcycle", "person", "traffic light", "stop sign", "road",
    "sidewalk", "building", "tree", "sky", "chair", "table", "sofa", "bed", "television", "door", "window",
]
CASES = {"A: 448x448": (448, 448), "B: 480x640": (480, 640)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def engine_input(engine: ClipDinoiser, image: np.ndarray) -> torch.Tensor:
    """The normalised, padded (1, 3, H, W) tensor the engine's encoder sees in whole mode."""
    resized = pre.resize_image(image, pre.short_side_size(*image.shape[:2], 448))
    pixels = pre.image_to_tensor(resized, engine.device)
    return pre.normalize(pre.pad_to_multiple(pixels, engine.patch_size))


def baseline_model(clip_model: torch.nn.Module, size: tuple[int, int], device: torch.device,
                   model_name: str = MODEL) -> torch.nn.Module:
    """open_clip's ``model_name`` built for ``size`` carrying ``clip_model``'s weights (pos. embedding resized)."""
    encoder = DenseClipEncoder(clip_model.visual)
    patch = encoder.patch_size
    grid = (size[0] // patch, size[1] // patch)
    state = {k: v.detach().clone() for k, v in clip_model.state_dict().items()}
    state["visual.positional_embedding"] = encoder.positional_embedding(grid, torch.float32).clone()
    model = open_clip.create_model(model_name, pretrained=None, force_image_size=size)
    model.load_state_dict(state)
    return model.to(device).eval()


@contextlib.contextmanager
def stage_timers(engine: ClipDinoiser, totals: dict[str, float]):
    """Wrap the engine's encoder, heads and pooling/probability functions with accumulating timers."""
    device = engine.device

    def wrap(fn, stage):
        def timed_fn(*args, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(device)
            totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - start
            return out
        return timed_fn

    pooling_names = ("dinoised_logits", "class_probabilities", "filter_background")
    saved = {name: getattr(engine_module, name) for name in pooling_names}
    engine.encoder.forward = wrap(type(engine.encoder).forward.__get__(engine.encoder), "dense features (ViT)")
    engine.heads.forward = wrap(type(engine.heads).forward.__get__(engine.heads), "heads (conv)")
    for name in pooling_names:
        setattr(engine_module, name, wrap(saved[name], "pooling + probabilities"))
    try:
        yield
    finally:
        del engine.encoder.forward, engine.heads.forward
        for name, fn in saved.items():
            setattr(engine_module, name, fn)


def run_case(name, shape, engine, clip_model, args, device, dtype):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    pixels = engine_input(engine, image)
    baseline = baseline_model(clip_model, tuple(pixels.shape[-2:]), device)

    def run_engine():
        engine.segment(image, mode="whole")

    baseline_dtype = torch.float32 if args.baseline_precision == "fp32" else dtype

    def run_baseline():
        with torch.inference_mode(), autocast(device, baseline_dtype):
            baseline.encode_image(pixels)

    for _ in range(args.warmup):
        run_engine()
        run_baseline()
    times = {"engine": [], "baseline": []}
    for _ in range(args.repeats):
        times["engine"].append(timed(run_engine, device))
        times["baseline"].append(timed(run_baseline, device))
    med = {key: statistics.median(values) for key, values in times.items()}
    print(f"\n== case {name}: image {shape[0]}x{shape[1]} -> encoder input {tuple(pixels.shape)}")
    print(f"  engine.segment     median {med['engine']:.3f} s  (min {min(times['engine']):.3f})")
    print(f"  open_clip baseline ({baseline_dtype}) median {med['baseline']:.3f} s  (min {min(times['baseline']):.3f})")
    print(f"  ratio engine/baseline  {med['engine'] / med['baseline']:.3f}  "
          f"(speed-up {med['baseline'] / med['engine']:.2f}x)")

    if args.breakdown:
        runs = max(1, args.repeats // 2)
        totals: dict[str, float] = {}
        total = 0.0
        with stage_timers(engine, totals):
            for _ in range(runs):
                total += timed(run_engine, device)
        totals["preprocess + upsampling + outputs"] = total - sum(totals.values())
        print(f"  engine breakdown (mean of {runs} extra runs, {total / runs:.3f} s each):")
        for stage, seconds in totals.items():
            print(f"    {stage:36s} {seconds / runs:.3f} s  ({100 * seconds / total:.1f} %)")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed runs of each (default 7)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="the engine's (auto: as the node)")
    parser.add_argument("--baseline-precision", default="fp32", choices=("fp32", "same"),
                        help="the bare encode_image's: fp32 (default) or the engine's")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    args = parser.parse_args()

    device = torch.device(args.device)
    clip_model = random_clip(MODEL)
    engine = ClipDinoiser(clip_model, None, device=device, precision=args.precision)  # random heads
    engine.set_prompts(VOCABULARY)
    dtype = engine.dtype
    print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, device {device}, "
          f"precision {dtype}, threads {torch.get_num_threads()}, {len(VOCABULARY)} classes, "
          f"{args.repeats} interleaved repeats after {args.warmup} warm-up (random weights: timing only)")
    for name, shape in CASES.items():
        run_case(name, shape, engine, clip_model, args, device, dtype)


if __name__ == "__main__":
    main()
