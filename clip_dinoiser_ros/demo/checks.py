"""What the demo checks before it starts anything: the DDS environment, its arguments, the weights.

A mistake found here ends the demo with exit code 2 and one clear message, instead of a node that
fails at configure minutes later with the reason buried in its log.
"""
from __future__ import annotations

import argparse
import os
import random

DDS_TRANSPORTS = "SHM?sockets_size=33554432"
NO_HEADS_MESSAGE = (
    "CLIP-DINOiser needs its trained heads: --heads published (the default: the paper's checkpoint from "
    "github.com/wysoczanska/clip_dinoiser, downloaded once), an http(s) URL, or --heads PATH to a local "
    "checkpoints/last.pt"
)
RANDOM_HINT = (
    "The heads (--heads published, the default) are downloaded once into the user cache; with a local copy run:\n"
    "    make demo DEMO_ARGS='--heads /path/to/checkpoints/last.pt'\n"
    "To check the plumbing (node, topics, latency) without weights run:  make demo WEIGHTS=random\n"
    "(or clip-dinoiser-demo --random-weights); its output is NOT a segmentation result."
)


class SetupError(Exception):
    """Stops the demo before anything starts (exit code 2)."""


def configure_environment() -> dict[str, str]:
    """DDS over shared memory only, a domain of this run's own, offline model hub; before rclpy is imported."""
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = DDS_TRANSPORTS
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)  # with SHM only it would deliver nothing
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    return dict(os.environ)


def check_arguments(args: argparse.Namespace) -> None:
    """The arguments the node would refuse, refused here first (SetupError)."""
    if args.frames < 1:
        raise SetupError(f"--frames must be at least 1, got {args.frames}")
    if not args.rate > 0:
        raise SetupError(f"--rate must be positive, got {args.rate}")
    from clip_dinoiser_ros.model.vocabulary import parse_prompts

    try:
        parse_prompts(list(args.prompts))
    except ValueError as error:
        raise SetupError(f"--prompts: {error}") from error
    import open_clip

    from clip_dinoiser_ros.model.clip_loading import register_test_configs

    if getattr(args, "random_weights", False):
        register_test_configs()
    if args.clip_model not in open_clip.list_models():
        raise SetupError(f"--clip-model {args.clip_model!r} is not an open_clip model (see open_clip.list_models())")


def check_weights(args: argparse.Namespace) -> list[str]:
    """What the node would fail on at configure, checked here first; empty when the weights are there."""
    from clip_dinoiser_ros.model import CheckpointError, WeightsUnavailableError
    from clip_dinoiser_ros.model.clip_loading import resolve_pretrained_file
    from clip_dinoiser_ros.model.heads import read_checkpoint

    problems = []
    if not args.heads:
        problems.append(NO_HEADS_MESSAGE)
    else:
        try:
            read_checkpoint(args.heads)  # downloads 'published' or a URL into the cache the node reads
        except CheckpointError as error:
            problems.append(f"--heads: {error}; expected the published checkpoints/last.pt of CLIP-DINOiser")
        except WeightsUnavailableError as error:
            problems.append(f"{error}\n(here: --heads PATH)")
    try:
        resolve_pretrained_file(args.clip_model, args.clip_pretrained)
    except WeightsUnavailableError as error:
        problems.append(f"{error}\n(here: --clip-pretrained PATH)")
    except ValueError as error:  # a tag this model does not have
        problems.append(f"--clip-pretrained: {error}")
    return problems
