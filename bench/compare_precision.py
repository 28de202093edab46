"""Label agreement of reduced precision (bf16 or fp16) against fp32, on any folder of images.

With real weights this is the check a user runs before trusting ``precision: bf16`` on their robot:

    PYTHONPATH=. .venv/bin/python bench/compare_precision.py ~/frames --prompts road car person tree sky \
        [--heads published --clip-pretrained laion2b_s34b_b88k] [--precision bf16] [--limit 50]

Without --heads/--random-weights it uses the published heads (downloaded once). ``--random-weights``
measures the arithmetic only (the real ViT-B-16 architecture with random weights): it says nothing about
quality. ``--variant`` also runs the engine with more of it in reduced precision, to show what keeping
those parts in fp32 is worth: ``pooling`` casts the patch correlations (thresholded at gamma) and the
guided pooling to reduced precision, ``softmax`` the class logits.

Prints how many classes the fp32 labels hold per image (random weights label most pixels alike, which
makes agreement easy), then per variant: the share of pixels whose label agrees with fp32 over all images,
the worst image, and the largest difference of the winning probability.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clip_dinoiser_ros.model import ClipDinoiser, load_clip, random_clip
from clip_dinoiser_ros.model import engine as engine_module
from clip_dinoiser_ros.model import guided_pooling
from clip_dinoiser_ros.model.heads_download import PUBLISHED

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "0016E5" / "images"
CAMVID_PROMPTS = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
                  "pedestrian", "bicyclist"]
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VARIANTS = {"pooling": ("patch_correlation", "guided_pool"), "softmax": ("class_probabilities",)}


@contextlib.contextmanager
def reduced(names: tuple[str, ...], dtype: torch.dtype):
    """The engine's functions ``names`` fed and computing in ``dtype``, their results back in fp32."""
    # The pooling runs inside guided_pooling.dinoised_logits; the softmax is called by the engine itself.
    modules = {name: engine_module if hasattr(engine_module, name) else guided_pooling for name in names}
    saved = {name: getattr(modules[name], name) for name in names}

    def cast(function):
        def wrapper(*args, **kwargs):
            args = [a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            return function(*args, **kwargs).float()
        return wrapper

    for name, function in saved.items():
        setattr(modules[name], name, cast(function))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(modules[name], name, function)


def images_in(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)[:limit]
    if not files:
        sys.exit(f"error: no images in {folder}")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=CAMVID)
    parser.add_argument("--prompts", nargs="+", default=CAMVID_PROMPTS)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-model", default="ViT-B-16")
    parser.add_argument("--clip-pretrained", default="laion2b_s34b_b88k")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--heads", default=PUBLISHED)
    weights.add_argument("--random-weights", action="store_true")
    parser.add_argument("--variant", nargs="*", default=[], choices=tuple(VARIANTS))
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    if args.random_weights:
        torch.manual_seed(0)
        clip_model, heads = random_clip(args.clip_model), None
    else:
        clip_model, heads = load_clip(args.clip_model, args.clip_pretrained), args.heads
    engines = {name: ClipDinoiser(clip_model, heads, device=args.device, precision=name)
               for name in ("fp32", args.precision)}
    if args.random_weights:  # one set of random heads for both
        engines[args.precision].heads.load_state_dict(engines["fp32"].heads.state_dict())
    for engine in engines.values():
        engine.set_prompts(args.prompts)
    variants = {args.precision: ()} | {f"{args.precision} + {v}": VARIANTS[v] for v in args.variant}
    agree = {name: [] for name in variants}
    worst_probability = dict.fromkeys(variants, 0.0)
    classes_present = []
    files = images_in(args.folder, args.limit)
    for path in files:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB")).copy()
        reference = engines["fp32"].segment(rgb, probs=False)
        classes_present.append(len(np.unique(reference.labels)))
        for name, parts in variants.items():
            with reduced(parts, engines[args.precision].dtype):
                result = engines[args.precision].segment(rgb, probs=False)
            agree[name].append((result.labels == reference.labels).mean())
            difference = float(np.abs(result.confidence - reference.confidence).max())
            worst_probability[name] = max(worst_probability[name], difference)
    source = "RANDOM weights (arithmetic only)" if args.random_weights else f"heads {args.heads}"
    print(f"{len(files)} images from {args.folder}, {args.clip_model} {source}, {len(args.prompts)} prompts, "
          f"{args.device}; classes present per fp32 label image: mean {np.mean(classes_present):.1f}, "
          f"min {min(classes_present)}")
    for name in variants:
        values = np.array(agree[name])
        print(f"{name:>22}: labels agree with fp32 on {100 * values.mean():.3f} % of pixels "
              f"(worst image {100 * values.min():.3f} %); max winning-probability difference "
              f"{worst_probability[name]:.2e}")


if __name__ == "__main__":
    main()
