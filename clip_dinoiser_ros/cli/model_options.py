"""The engine's options, shared by every command that loads the model (images, bags).

``--random-weights`` is the explicit plumbing mode: random CLIP and heads, output that means nothing.
torch and open_clip load only when the model does, so commands that need no model start fast.
"""
from __future__ import annotations

import argparse
import sys
import time

from typing import TYPE_CHECKING, Sequence

from clip_dinoiser_ros.cli.node_options import ENGINE, FRAME, add_node_options
from clip_dinoiser_ros.model.vocabulary import parse_prompts
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


def add_model_arguments(parser: argparse.ArgumentParser, names: Sequence[str] = ENGINE + FRAME) -> None:
    """The node's engine (and frame) parameters as options: the same names, defaults and refusals."""
    add_node_options(parser, names, "the engine (the node's parameters)")


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

    settings = EngineSettings(**{name: getattr(args, name) for name in EngineSettings.__dataclass_fields__
                                 if hasattr(args, name)})  # as the node builds it; export runs no backend
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
    if getattr(args, "short_side", engine.patch_size) < engine.patch_size:  # eval: the paper's protocol sets it
        raise SetupError(f"--short-side {args.short_side} is smaller than the patch size {engine.patch_size}")
    return engine
