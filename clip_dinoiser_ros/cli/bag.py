"""``clip-dinoiser-bag``: rosbags in, labelled bags, live replay and mIoU reports out.

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
from clip_dinoiser_ros.ros.parameters import SPECS

INTERRUPTED = 130


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def build_parser() -> argparse.ArgumentParser:
    from clip_dinoiser_ros.cli.model_options import add_model_arguments

    parser = argparse.ArgumentParser(prog="clip-dinoiser-bag", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="topics, types, counts, duration and rates of a bag")
    info.add_argument("bag", type=Path)

    segment = commands.add_parser("segment", help="run the engine on a bag's cameras, write the node's topics")
    segment.add_argument("bag", type=Path)
    segment.add_argument("--topic", action="append", required=True, dest="topics",
                         help="an image topic (raw or compressed); repeat for several cameras")
    segment.add_argument("--depth-topic", action="append", default=[], dest="depth_topics",
                         help="the depth registered to the n-th --topic (16UC1 mm or 32FC1 m; '' for none): "
                              "adds segmentation/points, camera_info and detections_3d")
    segment.add_argument("--camera-info-topic", action="append", default=[], dest="camera_info_topics",
                         help="the camera_info of the n-th --topic (default: its sibling <namespace>/camera_info)")
    segment.add_argument("--prompts", nargs="+", required=True, help="class names; class i gets mask value i")
    segment.add_argument("--out", type=Path, required=True, help="the rosbag2 folder to write")
    segment.add_argument("--overlay", action="store_true", help="also write segmentation/overlay")
    segment.add_argument("--confidence-threshold", type=float, default=SPECS["confidence_threshold"].default)
    segment.add_argument("--confidence-encoding", choices=SPECS["confidence_encoding"].choices,
                         default=SPECS["confidence_encoding"].default)
    add_storage(segment)
    add_model_arguments(segment)

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

    evaluate = commands.add_parser("eval", help="mIoU against ground truth, frames matched by header stamp")
    evaluate.add_argument("bag", type=Path)
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--topic", help="an image topic: the engine segments its frames")
    source.add_argument("--mask-topic", help="masks already in the bag (e.g. recorded from the node): no model")
    truth = evaluate.add_mutually_exclusive_group(required=True)
    truth.add_argument("--labels", type=Path, help="ground truth files, one per frame in frame order")
    truth.add_argument("--label-topic", help="ground truth mono8/mono16 topic, matched by header stamp")
    evaluate.add_argument("--classes", type=Path, required=True,
                          help="one line per ground-truth id: its prompt, synonyms separated by commas")
    evaluate.add_argument("--ignore-index", type=int, default=255)
    evaluate.add_argument("--out", type=Path, required=True, help="folder for the reports")
    evaluate.add_argument("--overwrite", action="store_true")
    add_model_arguments(evaluate)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
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
    from clip_dinoiser_ros.bag.reading import open_bag
    from clip_dinoiser_ros.bag.segment import SegmentOptions, camera_inputs, check_inputs, segment_bag
    from clip_dinoiser_ros.pipeline.frame_pipeline import FrameSettings
    from clip_dinoiser_ros.pipeline.topics import TopicPlanError

    prepare_output(args.out, args.overwrite)
    try:
        cameras = camera_inputs(args.topics, args.depth_topics, args.camera_info_topics)
    except TopicPlanError as error:
        raise BagError(str(error).replace("depth_topics", "--depth-topic").replace(
            "camera_info_topics", "--camera-info-topic").replace("image_topics", "--topic")) from error
    with open_bag(args.bag) as reader:  # a wrong bag or topic fails before the slow model load
        check_inputs(reader, args.topics, cameras)
    engine = load_engine(args)
    frame = FrameSettings(mode=args.mode, short_side=args.short_side, background=args.background,
                          threshold=args.confidence_threshold, confidence_encoding=args.confidence_encoding)
    options = SegmentOptions(frame, overlay=args.overlay, storage=args.storage, overwrite=args.overwrite,
                             cameras=cameras)
    started = time.perf_counter()
    result = segment_bag(args.bag, args.topics, args.out, engine, options, stop)
    seconds = time.perf_counter() - started
    print(f"wrote {args.out}: {result.frames} of {result.total} frames in {seconds:.1f} s "
          f"({result.frames / max(seconds, 1e-9):.2f} frames/s)", file=sys.stderr)
    if result.interrupted:
        print(f"interrupted: the bag is valid and holds the first {result.frames} frames", file=sys.stderr)
        return INTERRUPTED
    return 0


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
    from clip_dinoiser_ros.bag import evaluate as ev
    from clip_dinoiser_ros.bag.from_images import image_files
    from clip_dinoiser_ros.bag.reading import IMAGE_TYPES, check_topics, open_bag
    from clip_dinoiser_ros.evaluation import scores, summary_table, write_reports

    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise BagError(f"{args.out} exists and is not empty: choose another --out or pass --overwrite")
    classes = ev.read_classes(args.classes)
    names = [synonyms[0] for synonyms in classes]
    with open_bag(args.bag) as reader:
        check_topics(reader, [args.topic or args.mask_topic], ev.MASK_TYPES if args.mask_topic else IMAGE_TYPES)
        frames = sum(c.msgcount for c in reader.connections if c.topic == (args.topic or args.mask_topic))
    label_topic = ev.topic_ground_truth(args.bag, args.label_topic) if args.label_topic else None
    label_files = image_files(args.labels) if args.labels else None
    if label_files is not None and len(label_files) != frames:
        raise BagError(f"label/frame mismatch: {frames} frames but {len(label_files)} label files in {args.labels}")
    if args.mask_topic:
        predictions = ev.mask_predictions(args.bag, args.mask_topic, classes)
        model = f"masks recorded on {args.mask_topic}"
    else:
        from clip_dinoiser_ros.model.vocabulary import BACKGROUND_SETTINGS

        args.prompts, lookup = ev.prompts_and_lookup(classes)
        engine = load_engine(args)
        background = BACKGROUND_SETTINGS[args.background]

        def segment(rgb):
            return engine.segment(rgb, mode=args.mode, short_side=args.short_side, background=background,
                                  probs=False).labels

        predictions = ev.engine_predictions(args.bag, args.topic, segment, lookup)
        model = "RANDOM WEIGHTS: plumbing only, not a segmentation result" if args.random_weights else \
            f"CLIP {args.clip_model}/{args.clip_pretrained}, heads {args.heads}"
    result = ev.evaluate(_until(predictions, stop), len(classes), args.ignore_index,
                         label_topic=label_topic, label_files=label_files, total=frames)
    if stop.is_set():
        print("interrupted: no reports written", file=sys.stderr)
        return INTERRUPTED
    if result.matched == 0:
        raise BagError("no frame matched any ground truth by header stamp: nothing to score")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"bag": str(args.bag), "predictions": args.topic or args.mask_topic, "model": model,
            "ground_truth": str(args.labels or args.label_topic), "frames_matched": result.matched,
            "frames_without_ground_truth": result.unmatched_predictions,
            "ground_truth_without_frame": result.unmatched_labels, "ignore_index": args.ignore_index}
    written = write_reports(args.out, names, result.matrix, result.per_frame, meta, title=model)
    print(summary_table(names, scores(result.matrix)))
    if args.mask_topic is None and args.random_weights:
        from clip_dinoiser_ros.visualization import RANDOM_NOTICE

        print(f"\n{RANDOM_NOTICE}")
    print(f"\nmatched {result.matched} frames; {result.unmatched_predictions} frames without ground truth; "
          f"{result.unmatched_labels} ground-truth frames without a frame")
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 0


def _until(items, stop: threading.Event):
    for item in items:
        if stop.is_set():
            return
        yield item


COMMANDS = {"info": run_info, "segment": run_segment, "play": run_play, "record": run_record,
            "from-images": run_from_images, "eval": run_eval}

if __name__ == "__main__":
    sys.exit(main())
