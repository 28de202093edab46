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
from PIL import Image, ImageOps, PngImagePlugin
from tqdm import tqdm

from clip_dinoiser_ros.cli.model_options import (
    NO_HEADS_MESSAGE,
    SetupError,
    add_model_arguments,
    build_engine,
    check_model_arguments,
)
from clip_dinoiser_ros.cli.node_options import parse_node_options
from clip_dinoiser_ros.model import CheckpointError, ClipDinoiser, Segmentation
from clip_dinoiser_ros.model.vocabulary import BACKGROUND_SETTINGS
from clip_dinoiser_ros.visualization import RANDOM_NOTICE, RANDOM_STAMP, class_palette, draw_stamp, overlay

__all__ = ["NO_HEADS_MESSAGE", "build_parser", "main"]

CONFIDENCE_SCALE = 65535
PNG_COMPRESS_LEVEL = 3  # a third of the default level's time for files ~8% larger


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-dinoiser-segment",
        description="Open-vocabulary segmentation of image files with CLIP-DINOiser. Writes per image "
        "<stem>_labels.png (palette PNG, pixel = class id), <stem>_overlay.png and "
        "<stem>_confidence.png (16-bit, confidence * 65535).",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any format PIL reads)")
    parser.add_argument("--prompts", nargs="+", required=True, help="class names; class i gets label i")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parse_node_options(parser, argv)
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
    check_model_arguments(args)
    stems = [path.stem for path in args.images]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise SetupError(f"several inputs are named {', '.join(clashes)}: their outputs would overwrite each other")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SetupError(f"cannot create --out {args.out}: {error.strerror or error}") from error


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
