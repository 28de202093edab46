"""The engine's options, shared by every command that loads the model (images, bags).

``--random-weights`` is the explicit plumbing mode: random CLIP and heads, output that means nothing.
torch and open_clip load only when the model does, so commands that need no model start fast.
"""
from __future__ import annotations

import argparse
import sys
import time

from typing import TYPE_CHECKING

from clip_dinoiser_ros.model.choices import BACKENDS, DEFAULT_MODEL, DEFAULT_PRETRAINED, MODES, PRECISIONS
from clip_dinoiser_ros.model.heads_download import PUBLISHED
from clip_dinoiser_ros.model.onnx_providers import SYNTAX as PROVIDER_OPTIONS_SYNTAX
from clip_dinoiser_ros.model.vocabulary import BACKGROUND_SETTINGS, parse_prompts
from clip_dinoiser_ros.visualization import RANDOM_NOTICE

if TYPE_CHECKING:
    from clip_dinoiser_ros.model import ClipDinoiser

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
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="what runs the per-frame graph: torch, or onnxruntime (fp32; an ONNX export per input "
                        "size, made on first use and cached; TensorRT, then CUDA, then the CPU)")
    parser.add_argument("--onnx-provider-options", default="", metavar="KEY=VALUE,...",
                        help=f"--backend onnxruntime: TensorRT/CUDA options, {PROVIDER_OPTIONS_SYNTAX}; the defaults: "
                        "TensorRT fp16, engine and timing caches in the user cache, the engine's CUDA device")
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

    from clip_dinoiser_ros.model.clip_loading import register_test_configs

    try:
        parse_prompts(args.prompts)
    except ValueError as error:
        raise SetupError(f"--prompts: {error}") from error
    if getattr(args, "random_weights", False):
        register_test_configs()
    if args.clip_model not in open_clip.list_models():
        raise SetupError(f"--clip-model {args.clip_model!r} is not an open_clip model (see open_clip.list_models())")
    if not args.random_weights and not args.heads:
        raise SetupError(NO_HEADS_MESSAGE)


def build_engine(args: argparse.Namespace) -> tuple[ClipDinoiser, str]:
    """The engine with the prompts active, and a description of its weights for the outputs."""
    started = time.perf_counter()
    engine = load_engine(args)
    loaded = time.perf_counter()
    engine.set_prompts(args.prompts)
    print(
        f"loaded {args.clip_model} on {engine.device} ({engine.runs_on}) in {loaded - started:.1f} s, "
        f"encoded {len(args.prompts)} prompts in {time.perf_counter() - loaded:.1f} s",
        file=sys.stderr,
    )
    weights = RANDOM_NOTICE if args.random_weights else f"CLIP {args.clip_model}/{args.clip_pretrained}, heads {args.heads}"
    return engine, weights


def load_engine(args: argparse.Namespace) -> ClipDinoiser:
    """The engine without a vocabulary; every loading failure as a SetupError that names its option."""
    from clip_dinoiser_ros.model import CheckpointError, WeightsUnavailableError
    from clip_dinoiser_ros.model.build import EngineSettings, build_engine as build

    settings = EngineSettings(device=args.device, precision=args.precision, clip_model=args.clip_model,
                              clip_pretrained=args.clip_pretrained, heads=args.heads or "",
                              random_weights=args.random_weights, backend=args.backend,
                              onnx_provider_options=args.onnx_provider_options)
    try:
        engine = build(settings)
    except CheckpointError as error:
        raise SetupError(f"--heads: {error}; expected the published checkpoints/last.pt of CLIP-DINOiser") from error
    except WeightsUnavailableError as error:
        option = "--clip-pretrained" if str(error).startswith("CLIP weights") else "--heads"
        raise SetupError(f"{error}\n(on the command line: {option} PATH)") from error
    except ValueError as error:  # no CUDA for --device cuda, a precision the device lacks, a tag the model lacks
        option = {"precision": "--precision: ", "device": "--device: ",
                  "onnx_provider_options": "--onnx-provider-options: "}.get(str(error).split(" ", 1)[0], "")
        raise SetupError(f"{option}{error}") from error
    if args.short_side < engine.patch_size:
        raise SetupError(f"--short-side {args.short_side} is smaller than the patch size {engine.patch_size}")
    return engine
