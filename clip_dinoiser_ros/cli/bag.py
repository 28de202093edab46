"""``clip-dinoiser-bag``: rosbags in, labelled bags, live replay, mIoU reports and 3D maps out.

Exit codes: 0 done, 2 nothing or not everything could be done (the error says why; no partial output is
left behind), 130 interrupted by Ctrl-C (bags written so far are valid and closed).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from clip_dinoiser_ros.bag.errors import BagError
from clip_dinoiser_ros.bag.writing import STORAGES, prepare_output
from clip_dinoiser_ros.cli.node_options import (ENGINE, FRAME, OUTPUT, RGBD, add_node_options, add_params_file_option,
                                                parse_node_options)

INTERRUPTED = 130
# The node's cameras and vocabulary: --image-topics (or --topic per camera) and --prompts, as in its params file.
SEGMENT_INPUTS = ("image_topics", "prompts", "max_prompts", "max_prompt_length")


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def build_parser() -> argparse.ArgumentParser:
    from clip_dinoiser_ros.cli.bag_map import add_map_parser
    from clip_dinoiser_ros.cli.model_options import add_model_arguments

    parser = argparse.ArgumentParser(prog="clip-dinoiser-bag", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="topics, types, counts, duration and rates of a bag")
    info.add_argument("bag", type=Path)

    segment = commands.add_parser("segment", help="run the engine on bags' cameras, write the node's topics")
    add_bags(segment, "one output bag per input bag: --out itself for a single bag, else under --out with the "
                      "input's relative name")
    segment.add_argument("--out", type=Path, required=True,
                         help="the rosbag2 folder to write; with several bags, the folder of their outputs")
    segment.add_argument("--resume", action="store_true",
                         help="skip output bags finished with the same weights and settings; redo the rest")
    segment.add_argument("--overlay", action="store_true", help="also write segmentation/overlay")
    add_storage(segment)
    add_params_file_option(segment)
    add_node_options(segment, SEGMENT_INPUTS + ENGINE + FRAME + OUTPUT + RGBD)

    play = commands.add_parser("play", help="publish a bag live at its recorded rate")
    play.add_argument("bag", type=Path)
    play.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    play.add_argument("--loop", action="store_true")
    play.add_argument("--topics", nargs="+", default=[], help="only these topics (default: all)")
    play.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    play.add_argument("--clock", action="store_true", help="publish /clock, for nodes with use_sim_time")
    play.add_argument("--delay", type=float, default=1.0,
                      help="wait up to this many seconds for every topic to have a subscriber (default 1)")

    record = commands.add_parser("record", help="record live topics until Ctrl-C or --duration")
    record.add_argument("--topics", nargs="+", required=True)
    record.add_argument("--out", type=Path, required=True)
    record.add_argument("--duration", type=float, help="seconds to record")
    add_storage(record)

    images = commands.add_parser("from-images", help="a camera bag from an image sequence")
    images.add_argument("directory", type=Path)
    images.add_argument("--topic", required=True, help="e.g. /camera/image_raw (…/compressed with --compressed)")
    images.add_argument("--rate", type=float, required=True, help="frames per second")
    images.add_argument("--compressed", action="store_true", help="JPEG sensor_msgs/CompressedImage")
    images.add_argument("--labels", type=Path, help="ground truth folder: a mono label image per frame, same name")
    images.add_argument("--label-topic", help="topic for the ground truth (mono8, the frames' stamps)")
    images.add_argument("--frame-id", default="camera")
    images.add_argument("--start", type=float, help="first stamp in seconds since the epoch (default: now)")
    images.add_argument("--out", type=Path, required=True)
    add_storage(images)

    evaluate = commands.add_parser("eval", help="mIoU against ground truth (frames matched by header stamp) and "
                                   "the temporal consistency of the predictions, over one bag or many")
    add_bags(evaluate, "reports per bag (under --out by relative name) and summary.md/json over all")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--topic", help="an image topic: the engine segments its frames")
    source.add_argument("--mask-topic", help="masks already in the bag (e.g. recorded from the node): no model")
    truth = evaluate.add_mutually_exclusive_group()
    truth.add_argument("--labels", type=Path, help="ground truth files, one per frame in frame order")
    truth.add_argument("--label-topic", help="ground truth mono8/mono16 topic, matched by header stamp")
    evaluate.add_argument("--classes", type=Path,
                          help="one line per ground-truth id: its prompt, synonyms separated by commas (needed "
                               "but for --mask-topic --temporal without ground truth: the bag's label_info names them)")
    evaluate.add_argument("--temporal", action="store_true",
                          help="also the temporal consistency (VSPW's TC: the previous mask warped along dense "
                               "optical flow, mIoU with the current one); needs no ground truth")
    evaluate.add_argument("--flow-topic", help="with --mask-topic --temporal: the camera images the flow is read from")
    evaluate.add_argument("--ignore-index", type=int, default=255)
    evaluate.add_argument("--out", type=Path, required=True, help="folder for the reports")
    evaluate.add_argument("--overwrite", action="store_true")
    add_model_arguments(evaluate, ENGINE + FRAME)
    add_map_parser(commands)
    return parser


def add_bags(parser: argparse.ArgumentParser, outputs: str) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG",
                        help=f"bags, folders holding bags, or globs ({outputs}); under torchrun the processes "
                             "share them, whole bags balanced by frame count")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_node_options(build_parser(), argv)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return COMMANDS[args.command](args, stop)
    except BagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def load_engine(args: argparse.Namespace):
    """The engine with ``args.prompts`` active (torch loads here, only for the commands that need it)."""
    from clip_dinoiser_ros.cli.model_options import SetupError, build_engine, check_model_arguments
    from clip_dinoiser_ros.model import CheckpointError
    from clip_dinoiser_ros.visualization import RANDOM_NOTICE

    try:
        check_model_arguments(args)
        if args.random_weights:
            print(RANDOM_NOTICE, file=sys.stderr)
        return build_engine(args)[0]
    except (SetupError, CheckpointError) as error:
        raise BagError(str(error)) from error


def run_info(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.bag.info import describe_bag

    print(describe_bag(args.bag))
    return 0


def run_segment(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.cli.bag_fleet import run_segment as segment_bags

    args.topics = args.image_topics  # the bags' camera topics, by the node's image_topics
    return segment_bags(args, stop, load_engine)


def run_play(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.bag.play import PlayOptions, parse_remaps, play

    options = PlayOptions(rate=args.rate, loop=args.loop, topics=args.topics, remaps=parse_remaps(args.remap),
                          clock=args.clock, delay=args.delay)
    published = play(args.bag, options, stop)
    print(f"published {published} messages", file=sys.stderr)
    return INTERRUPTED if stop.is_set() else 0


def run_record(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.bag.record import record

    counts = record(args.topics, args.out, args.storage, args.overwrite, args.duration, stop)
    print(f"wrote {args.out}: " + ", ".join(f"{topic} {count}" for topic, count in counts.items()), file=sys.stderr)
    return 0


def run_from_images(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.bag.from_images import ImageSequence, image_files, pair_labels, write_sequence
    from clip_dinoiser_ros.pipeline.topics import is_compressed

    if args.compressed != is_compressed(args.topic):
        raise BagError(f"--topic {args.topic}: compressed images go on a topic ending in /compressed, raw ones "
                       "on any other (image_transport's convention, which the node follows)")
    if (args.labels is None) != (args.label_topic is None):
        raise BagError("--labels and --label-topic go together")
    prepare_output(args.out, args.overwrite)
    frames = image_files(args.directory)
    labels = pair_labels(frames, args.labels) if args.labels else None
    start_ns = round((time.time() if args.start is None else args.start) * 1e9)
    count = write_sequence(ImageSequence(frames, labels), args.out, args.topic, args.rate, start_ns,
                           args.frame_id, args.label_topic, args.storage, args.overwrite)
    print(f"wrote {args.out}: {count} frames on {args.topic}"
          + (f" and their labels on {args.label_topic}" if labels else ""), file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.cli.bag_fleet import run_eval as evaluate_bags

    return evaluate_bags(args, stop, load_engine)


def run_map(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.cli.bag_map import run_map as map_bag

    return map_bag(args, stop, load_engine)


def run_query(args: argparse.Namespace, stop: threading.Event) -> int:
    from clip_dinoiser_ros.cli.bag_map import run_query as query_map

    return query_map(args, stop, load_engine)


COMMANDS = {"info": run_info, "segment": run_segment, "play": run_play, "record": run_record,
            "from-images": run_from_images, "eval": run_eval, "map": run_map, "query": run_query}

if __name__ == "__main__":
    sys.exit(main())
