"""``clip-dinoiser-demo``: start the node, stream real photos to it, report what comes back.

The node runs in its own process (the installed ``clip_dinoiser_node``) with a params file written to
the output folder; photos from scikit-image's sample data are published as 640x480 rgb8 frames on
/demo_camera/image_raw at a steady rate, each stamped with the time it was sent. For every answered
frame the demo prints the end-to-end latency and the classes covering most of the image, then a
summary, and writes <n>_input.png, <n>_mask.png (palette PNG, pixel = class id) and <n>_overlay.png.

Exit codes: 0 frames were answered and the node stopped cleanly; 1 the node failed, never got ready
or answered nothing; 2 nothing could start (no weights, bad arguments); 130 interrupted (Ctrl-C).

Without --random-weights the CLIP-DINOiser heads (--heads, default ``published``: the paper's checkpoint,
downloaded once into the user cache) and the pretrained CLIP weights are required; with it both are random
and the output is NOT a segmentation result.

This module is the command line and the node's lifetime; demo.checks, demo.photo_feed, demo.results and
demo.photos do the rest.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from clip_dinoiser_ros.demo.checks import (
    RANDOM_HINT, SetupError, check_arguments, check_weights, configure_environment,
)
from clip_dinoiser_ros.demo.photos import Photos, load_photos
from clip_dinoiser_ros.demo.photo_feed import INPUT_TOPIC, run
from clip_dinoiser_ros.extras import missing_extra
from clip_dinoiser_ros.model.heads_download import PUBLISHED
from clip_dinoiser_ros.supervision import NodeProcess, node_executable
from clip_dinoiser_ros.visualization import RANDOM_NOTICE

NODE_NAME = "clip_dinoiser"
DEFAULT_PROMPTS = ["background", "person", "cat", "cup", "rocket"]
NODE_STOP_TIMEOUT_S = 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-dinoiser-demo",
        description="Run the clip_dinoiser node on a stream of real photos and report latency and classes.",
    )
    parser.add_argument("--random-weights", action="store_true",
                        help="random CLIP and heads: plumbing and timing only, the output means nothing")
    parser.add_argument("--heads", default=PUBLISHED,
                        help="heads checkpoint: 'published' (default: the paper's checkpoints/last.pt, downloaded "
                        "once and cached), an http(s) URL (downloaded once and cached), or a local file")
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip model name (default: ViT-B-16)")
    parser.add_argument("--clip-pretrained", default="laion2b_s34b_b88k",
                        help="open_clip pretrained tag or a local weights file")
    parser.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS, help="class prompts (class i = label i)")
    parser.add_argument("--frames", type=int, default=10, help="frames to send (default: 10)")
    parser.add_argument("--rate", type=float, default=2.0, help="frames per second sent (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output/)")
    parser.add_argument("--save", type=int, default=5, help="answered frames whose PNGs are written (default: 5)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for the node to load the model and go active (default: 180)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait for the last frame's answer after sending (default: 60)")
    return parser


class Interrupted(Exception):
    """SIGINT or SIGTERM on the demo."""


def _raise_interrupted(signum: int, _frame: Any) -> NoReturn:
    raise Interrupted(signal.Signals(signum).name)


def banner(text: str) -> None:
    line = "!" * (len(text) + 8)
    print(f"{line}\n!!! {text} !!!\n{line}", flush=True)


def node_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The node's params file: the demo's camera topic, reliable input (no frame lost on the way), the model."""
    return {
        "image_topics": [INPUT_TOPIC],
        "prompts": list(args.prompts),
        "random_weights": bool(args.random_weights),
        "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained,
        "heads": str(args.heads),
        "input_reliability": "reliable",
    }


def prepare(args: argparse.Namespace) -> Optional[Photos]:
    """Everything that can fail before the node starts; the photos, or None (said on stderr: exit code 2)."""
    try:
        check_arguments(args)
        if not args.random_weights:
            problems = check_weights(args)
            if problems:
                print("clip-dinoiser-demo cannot run the model: weights are missing.\n", file=sys.stderr)
                for problem in problems:
                    print(f"error: {problem}\n", file=sys.stderr)
                print(RANDOM_HINT, file=sys.stderr, flush=True)
                return None
        args.out.mkdir(parents=True, exist_ok=True)
        node_executable()
        return load_photos()
    except (SetupError, OSError) as error:  # OSError: an output folder or a node script that is not there
        print(f"error: {error}", file=sys.stderr)
        return None


def stop_node(node: NodeProcess, status: int) -> int:
    """SIGINT to the node and wait for it; the demo's exit code, 1 where it had been 0 and the node failed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the wait
    code = node.stop(timeout=NODE_STOP_TIMEOUT_S)
    if code != 0:
        print(f"the node exited with status {code}; its log ({node.log_file}) ends with:\n{node.tail()}",
              file=sys.stderr, flush=True)
        return 1 if status == 0 else status
    print("node stopped (SIGINT, exit status 0)", flush=True)
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if (missing := missing_extra("demo")) is not None:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    env = configure_environment()
    if args.random_weights:
        banner(RANDOM_NOTICE)
    photos = prepare(args)
    if photos is None:
        return 2
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    status = 1  # what an unexpected error in the run leaves, while its traceback goes on
    try:
        node = NodeProcess(args.out, node_parameters(args), node_name=NODE_NAME, env=env)
        print(f"started clip_dinoiser_node (pid {node.pid}, ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
              f"{args.clip_model}, params {node.params_file}, log {node.log_file})", flush=True)
        status = run(args, node, photos)
    except Interrupted as why:
        print(f"\ninterrupted ({why}): stopping the node", file=sys.stderr, flush=True)
        status = 130
    finally:
        if node is not None:
            status = stop_node(node, status)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if args.random_weights:
        banner(RANDOM_NOTICE)
    return status


if __name__ == "__main__":
    sys.exit(main())
