"""The engine's options, shared by every command that loads the model (images, bags).

``--random-weights`` is the explicit plumbing mode: random CLIP and heads, output that means nothing.
torch and open_clip load only when the model does, so commands that need no model start fast.
"""
from __future__ import annotations

import argparse
import sys
import time

from typing import TYPE_CHECKING

from clip_dinoiser_ros.model.choices import DEFAULT_MODEL, DEFAULT_PRETRAINED, MODES, PRECISIONS
from clip_dinoiser_ros.model.heads_download import PUBLISHED
from clip_dinoiser_ros.model.vocabulary import BACKGROUND_SETTINGS, parse_prompts
from clip_dinoiser_ros.visualization import RANDOM_NOTICE

if TYPE_CHECKING:
    from clip_dinoiser_ros.model import ClipDinoiser

RANDOM_SEED = 0
NO_HEADS_MESSAGE = (
    "CLIP-DINOiser needs its trained heads: --heads published (the default: the paper's checkpoint from "
    "github.com/wysoczanska/clip_dinoiser, downloaded once), an http(s) URL, or --heads PATH to a local "
    "checkpoints/last.pt; or --random-weights to test the plumbing only"
)


class SetupError(Exception):
    """A problem that stops the whole run before any image is processed (exit code 2)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="ViT and heads: auto = fp16 on CUDA, bf16 on CPUs with native bf16, else fp32")
    parser.add_argument("--clip-model", default=DEFAULT_MODEL, help="open_clip model name")
    parser.add_argument("--clip-pretrained", default=DEFAULT_PRETRAINED, help="open_clip tag or a local weights file")
    parser.add_argument(
        "--background",
        choices=tuple(BACKGROUND_SETTINGS),
        default="auto",
        help="background filtering; auto: on when the first prompt is 'background'",
    )


def check_model_arguments(args: argparse.Namespace) -> None:
    """The cheap checks, before the slow model loading."""
    import open_clip

    import clip_dinoiser_ros.model.clip_loading  # noqa: F401 - registers our model configs with open_clip

    try:
        parse_prompts(args.prompts)
    except ValueError as error:
        raise SetupError(f"--prompts: {error}") from error
    if args.clip_model not in open_clip.list_models():
        raise SetupError(f"--clip-model {args.clip_model!r} is not an open_clip model (see open_clip.list_models())")
    if not args.random_weights and not args.heads:
        raise SetupError(NO_HEADS_MESSAGE)


def build_engine(args: argparse.Namespace) -> tuple[ClipDinoiser, str]:
    """The engine with the prompts active, and a description of its weights for the outputs."""
    import torch

    from clip_dinoiser_ros.model import (
        CheckpointError,
        ClipDinoiser,
        WeightsUnavailableError,
        load_clip,
        random_clip,
    )
    from clip_dinoiser_ros.model.heads import read_checkpoint
    from clip_dinoiser_ros.model.precision import resolve_precision

    device = resolve_device(args.device)
    try:
        resolve_precision(args.precision, torch.device(device))  # before the slow model load
    except ValueError as error:
        raise SetupError(f"--precision: {error}") from error
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
    engine = ClipDinoiser(clip_model, heads, device=device, precision=args.precision)
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
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SetupError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return choice
