"""``clip-dinoiser-segment``: segment image files with text prompts and write PNGs next to each other.

Exit codes: 0 all images written, 1 some images failed (each reported, the others still processed),
2 nothing could run (arguments, prompts, missing weights or heads checkpoint).

The heads default to ``published``: the paper's checkpoint, downloaded once into the user cache and verified.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import open_clip
import torch
from PIL import Image, ImageOps, PngImagePlugin
from tqdm import tqdm

from clip_dinoiser_ros.model import (
    CheckpointError,
    ClipDinoiser,
    Segmentation,
    WeightsUnavailableError,
    load_clip,
    parse_prompts,
    random_clip,
)
from clip_dinoiser_ros.model.clip_loading import DEFAULT_MODEL, DEFAULT_PRETRAINED
from clip_dinoiser_ros.model.engine import MODES
from clip_dinoiser_ros.model.vocabulary import BACKGROUND_SETTINGS
from clip_dinoiser_ros.model.heads import read_checkpoint
from clip_dinoiser_ros.model.heads_download import PUBLISHED
from clip_dinoiser_ros.visualization import RANDOM_NOTICE, RANDOM_STAMP, class_palette, draw_stamp, overlay

RANDOM_SEED = 0
NO_HEADS_MESSAGE = (
    "CLIP-DINOiser needs its trained heads: --heads published (the default: the paper's checkpoint from "
    "github.com/wysoczanska/clip_dinoiser, downloaded once), an http(s) URL, or --heads PATH to a local "
    "checkpoints/last.pt; or --random-weights to test the plumbing only"
)
CONFIDENCE_SCALE = 65535
PNG_COMPRESS_LEVEL = 3  # a third of the default level's time for files ~8% larger


class SetupError(Exception):
    """A problem that stops the whole run before any image is processed (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-dinoiser-segment",
        description="Open-vocabulary segmentation of image files with CLIP-DINOiser. Writes per image "
        "<stem>_labels.png (palette PNG, pixel = class id), <stem>_overlay.png and "
        "<stem>_confidence.png (16-bit, confidence * 65535).",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any format PIL reads)")
    parser.add_argument("--prompts", nargs="+", required=True, help="class names; class i gets label i")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--heads",
        default=PUBLISHED,
        help="heads checkpoint: 'published' (default: the paper's checkpoints/last.pt, downloaded once and "
        "cached), an http(s) URL (downloaded once and cached), or a local file",
    )
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="random CLIP and heads, to check plumbing and timing only: the output means nothing",
    )
    parser.add_argument("--mode", choices=MODES, default="whole", help="one pass, or the paper's sliding windows")
    parser.add_argument("--short-side", type=int, default=448, help="resize so the short side has this size")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--clip-model", default=DEFAULT_MODEL, help="open_clip model name")
    parser.add_argument("--clip-pretrained", default=DEFAULT_PRETRAINED, help="open_clip tag or a local weights file")
    parser.add_argument(
        "--background",
        choices=tuple(BACKGROUND_SETTINGS),
        default="auto",
        help="background filtering; auto: on when the first prompt is 'background'",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.random_weights:
        print(RANDOM_NOTICE, file=sys.stderr)
    try:
        check_arguments(args)
        engine, weights = build_engine(args)
    except (SetupError, CheckpointError) as error:  # CheckpointError: heads of the wrong shape
        print(f"error: {error}", file=sys.stderr)
        return 2
    metadata = png_metadata(engine.vocabulary.names, weights)
    failed = 0
    for path in tqdm(args.images, unit="image", disable=len(args.images) <= 1, file=sys.stderr):
        failed += not segment_file(engine, path, args, metadata)
    if args.random_weights:
        print(RANDOM_NOTICE, file=sys.stderr)
    if failed:
        print(f"error: {failed} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failed else 0


def check_arguments(args: argparse.Namespace) -> None:
    """Fail on everything cheap to check before the slow model loading."""
    try:
        parse_prompts(args.prompts)
    except ValueError as error:
        raise SetupError(f"--prompts: {error}") from error
    if args.clip_model not in open_clip.list_models():
        raise SetupError(f"--clip-model {args.clip_model!r} is not an open_clip model (see open_clip.list_models())")
    stems = [path.stem for path in args.images]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise SetupError(f"several inputs are named {', '.join(clashes)}: their outputs would overwrite each other")
    if not args.random_weights and not args.heads:
        raise SetupError(NO_HEADS_MESSAGE)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SetupError(f"cannot create --out {args.out}: {error.strerror or error}") from error


def build_engine(args: argparse.Namespace) -> tuple[ClipDinoiser, str]:
    """The engine with the prompts active, and a description of its weights for the outputs."""
    device = resolve_device(args.device)
    started = time.perf_counter()
    if args.random_weights:
        torch.manual_seed(RANDOM_SEED)  # the random heads, reproducible between runs
        clip_model, heads, weights = random_clip(args.clip_model, device=device), None, RANDOM_NOTICE
    else:
        try:
            heads = read_checkpoint(args.heads)  # a bad heads source fails before the slow CLIP loading
        except CheckpointError as error:
            raise SetupError(f"--heads: {error}; expected the published checkpoints/last.pt of CLIP-DINOiser") from error
        except WeightsUnavailableError as error:
            raise SetupError(f"{error}\n(on the command line: --heads PATH)") from error
        try:
            clip_model = load_clip(args.clip_model, args.clip_pretrained, device=device)
        except WeightsUnavailableError as error:
            raise SetupError(f"{error}\n(on the command line: --clip-pretrained PATH)") from error
        except ValueError as error:  # e.g. a tag the model does not have
            raise SetupError(str(error)) from error
        weights = f"CLIP {args.clip_model}/{args.clip_pretrained}, heads {args.heads}"
    engine = ClipDinoiser(clip_model, heads, device=device)
    if args.short_side < engine.patch_size:
        raise SetupError(f"--short-side {args.short_side} is smaller than the patch size {engine.patch_size}")
    loaded = time.perf_counter()
    engine.set_prompts(args.prompts)
    print(
        f"loaded {args.clip_model} on {device} in {loaded - started:.1f} s, "
        f"encoded {len(args.prompts)} prompts in {time.perf_counter() - loaded:.1f} s",
        file=sys.stderr,
    )
    return engine, weights


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SetupError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return choice


def segment_file(engine: ClipDinoiser, path: Path, args: argparse.Namespace, metadata: PngImagePlugin.PngInfo) -> bool:
    """Segment one file and write its three PNGs; report a failure on one line and return False."""
    started = time.perf_counter()
    try:
        image = read_rgb(path)
        segmentation = engine.segment(
            image, mode=args.mode, short_side=args.short_side, background=BACKGROUND_SETTINGS[args.background]
        )
        written = write_outputs(image, segmentation, args.out / path.stem, args.random_weights, metadata)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        tqdm.write(f"error: {path}: {describe(error)}", file=sys.stderr)
        return False
    tqdm.write(f"{path}: wrote {', '.join(map(str, written))} in {time.perf_counter() - started:.2f} s")
    return True


def read_rgb(path: Path) -> np.ndarray:
    """Any image PIL reads (grayscale, RGBA, palette, ...), upright per its EXIF tag, as HxWx3 uint8 RGB."""
    with Image.open(path) as image:
        return np.array(ImageOps.exif_transpose(image).convert("RGB"))  # writable, as torch wants


def write_outputs(
    image: np.ndarray, segmentation: Segmentation, prefix: Path, random_weights: bool, metadata: PngImagePlugin.PngInfo
) -> list[Path]:
    names = segmentation.prompts
    palette = class_palette(len(names))
    labels = Image.fromarray(segmentation.labels.astype(np.uint8))
    labels.putpalette(palette.tobytes())  # "L" -> "P": viewers show colours, pixel values stay class ids
    picture = overlay(image, segmentation.labels, names, palette)
    if random_weights:
        picture = draw_stamp(picture, RANDOM_STAMP)
    confidence = np.round(segmentation.confidence * CONFIDENCE_SCALE).astype(np.uint16)
    outputs = {
        Path(f"{prefix}_labels.png"): labels,
        Path(f"{prefix}_overlay.png"): Image.fromarray(picture),
        Path(f"{prefix}_confidence.png"): Image.fromarray(confidence),
    }
    for target, picture_file in outputs.items():
        picture_file.save(target, pnginfo=metadata, compress_level=PNG_COMPRESS_LEVEL)
    return list(outputs)


def png_metadata(names: Sequence[str], weights: str) -> PngImagePlugin.PngInfo:
    """Text chunks that make every output self-describing: class names in id order and the weights used."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "clip-dinoiser-segment")
    info.add_text("classes", json.dumps(list(names)))
    info.add_text("weights", weights)
    return info


def describe(error: BaseException) -> str:
    """``No such file or directory`` rather than ``[Errno 2] No such file or directory: 'x.png'``."""
    return getattr(error, "strerror", None) or str(error)


if __name__ == "__main__":
    sys.exit(main())
