"""``clip-dinoiser-bag segment`` and ``eval`` over many bags, on one process or many (torchrun).

Each process takes whole bags (bag.fleet.shard), loads the engine once (on the GPU of its LOCAL_RANK
under torchrun) and shows one progress bar over its bags' frames. ``segment`` records each finished output
bag with what made it, so ``--resume`` skips exactly those; ``eval`` sums the confusion matrices over the
processes with all_reduce and rank 0 writes one summary over all bags.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from tqdm import tqdm

from clip_dinoiser_ros.bag import fleet
from clip_dinoiser_ros.bag.errors import BagError
from clip_dinoiser_ros.bag.writing import prepare_output
from clip_dinoiser_ros.distributed import Ranks, process_device
from clip_dinoiser_ros.provenance import versions

INTERRUPTED = 130
# What decides an output bag besides the engine's weights (their fingerprint is recorded too).
SEGMENT_SETTINGS = ("topics", "depth_topics", "camera_info_topics", "sync", "sync_slop_s", "sync_wait_s",
                    "sync_queue_size", "depth_scale", "max_depth_m", "min_object_pixels", "templates", "gamma", "delta",
                    "prompts", "overlay", "confidence_threshold",
                    "confidence_encoding", "storage", "mode", "short_side", "background", "precision", "backend",
                    "onnx_provider_options", "clip_model", "clip_pretrained", "heads", "random_weights")


def frame_counts(bags: list[fleet.BagInput], topics: list[str], check) -> tuple[list[fleet.BagInput], list[int],
                                                                                 dict[str, str]]:
    """The bags that open and pass ``check(reader)``, their frames on ``topics``, and why each other bag cannot be
    done (by name). Before the model loads: when no bag can be done, a BagError saying why (one bag: its reason)."""
    from clip_dinoiser_ros.bag.reading import open_bag

    readable, counts, failed = [], [], {}
    for bag in bags:
        try:
            with open_bag(bag.path) as reader:
                check(reader)
                counts.append(sum(c.msgcount for c in reader.connections if c.topic in topics))
            readable.append(bag)
        except BagError as error:
            failed[str(bag.name)] = str(error)
    if not readable:
        raise BagError(next(iter(failed.values())) if len(failed) == 1 else
                       "no bag can be read: " + "; ".join(f"{name}: {why}" for name, why in failed.items()))
    return readable, counts, failed


def not_made(failed: dict[str, str], single: bool) -> int:
    """Exit status 2 after naming each bag that was not made and why (one bag: its error alone)."""
    if single:
        raise BagError(next(iter(failed.values())))
    print(f"error: {len(failed)} bag(s) not made:", file=sys.stderr)
    for name, why in sorted(failed.items()):
        print(f"  {name}: {why}", file=sys.stderr)
    return 2


def camera_plan(args: argparse.Namespace) -> tuple:
    """Each ``--topic``'s depth and camera_info topics (bag.segment.camera_inputs), refused in the options' names."""
    from clip_dinoiser_ros.bag.segment import camera_inputs
    from clip_dinoiser_ros.pipeline.topics import TopicPlanError

    try:
        return camera_inputs(args.topics, args.depth_topics, args.camera_info_topics)
    except TopicPlanError as error:
        raise BagError(str(error).replace("depth_topics", "--depth-topic").replace(
            "camera_info_topics", "--camera-info-topic").replace("image_topics", "--topic")) from error


def run_segment(args: argparse.Namespace, stop: threading.Event, load_engine) -> int:
    from clip_dinoiser_ros.pipeline.frame_geometry import PairingOptions
    from clip_dinoiser_ros.bag.segment import SegmentOptions, check_inputs, segment_bag
    from clip_dinoiser_ros.pipeline.frame_pipeline import FrameSettings

    bags = fleet.find_bags(args.bags)
    single = fleet.single_bag(args.bags)
    cameras = camera_plan(args)
    bags, frames, failed = frame_counts(bags, args.topics, lambda reader: check_inputs(reader, args.topics, cameras))
    outputs = {bag: args.out if single else args.out / bag.name for bag in bags}
    if single:
        if not args.resume:
            prepare_output(args.out, args.overwrite)
    elif args.out.exists() and not args.out.is_dir():
        raise BagError(f"{args.out} is a file: --out names a folder when several bags are segmented")
    args.device = process_device(args.device)
    ranks = Ranks(args.device)
    try:
        mine = fleet.shard(bags, frames, ranks.world, ranks.rank)
        if not single and not (args.overwrite or args.resume):
            taken = [str(outputs[bag]) for bag in mine if outputs[bag].exists()]
            if taken:
                raise BagError(f"{', '.join(taken)} exist(s): choose another --out, pass --overwrite, or --resume")
        engine = load_engine(args)
        weights = engine.fingerprint()  # every part: text and image towers, heads
        package_version = versions().get("clip_dinoiser_ros", "unknown")  # bags made by older code are redone
        frame = FrameSettings(mode=args.mode, short_side=args.short_side, background=args.background,
                              threshold=args.confidence_threshold, confidence_encoding=args.confidence_encoding,
                              max_depth_m=args.max_depth_m, min_object_pixels=args.min_object_pixels)
        options = SegmentOptions(frame, overlay=args.overlay, storage=args.storage, overwrite=True,
                                 pairing=PairingOptions(args.sync_wait_s, args.sync_queue_size, args.sync, args.sync_slop_s),
                                 depth_scale=args.depth_scale, cameras=cameras)
        done = {"bags": 0, "skipped": 0, "frames": 0, "duplicates": 0}
        started = time.perf_counter()
        with tqdm(total=sum(frames[bags.index(bag)] for bag in mine), unit="frame", dynamic_ncols=True,
                  desc="segment" if ranks.world == 1 else f"segment (rank {ranks.rank})") as progress:
            for bag in mine:
                out = outputs[bag]
                settings = {**{name: getattr(args, name) for name in SEGMENT_SETTINGS}, "weights": weights,
                            "package_version": package_version, "input": str(bag.path.resolve()),
                            "input_files": fleet.input_identity(bag.path)}
                if args.resume and fleet.finished(out, settings):
                    done["skipped"] += 1
                    progress.update(frames[bags.index(bag)])
                    continue
                fleet.forget(out)
                out.parent.mkdir(parents=True, exist_ok=True)
                bag_started = time.perf_counter()
                try:
                    result = segment_bag(bag.path, args.topics, out, engine, options, stop, progress)
                except BagError as error:  # its output is removed; the other bags go on
                    failed[str(bag.name)] = str(error)
                    tqdm.write(f"error: {bag.name} not made: {error}", file=sys.stderr)
                    continue
                done["frames"] += result.frames
                done["duplicates"] += result.duplicates
                if result.interrupted:
                    tqdm.write(f"interrupted: the bag is valid and holds the first {result.frames} frames ({out}); "
                               "--resume redoes it", file=sys.stderr)
                    break
                fleet.record_finished(out, settings, {"frames": result.frames,
                                                      "seconds": time.perf_counter() - bag_started})
                done["bags"] += 1
        seconds = time.perf_counter() - started
        if stop.is_set():
            return INTERRUPTED
        totals = ranks.gather((done, seconds, failed))
    finally:
        ranks.close()
    failed = {name: why for _, _, part in totals for name, why in part.items()}
    if ranks.main:
        segmented = sum(d["frames"] for d, _, _ in totals)
        wall = max(s for _, s, _ in totals)
        duplicates = sum(d["duplicates"] for d, _, _ in totals)
        print(f"segmented {sum(d['bags'] for d, _, _ in totals)} bag(s), {segmented} frames in {wall:.1f} s "
              f"({segmented / max(wall, 1e-9):.2f} frames/s, {ranks.world} process(es)); "
              f"{sum(d['skipped'] for d, _, _ in totals)} finished bag(s) skipped (--resume); "
              f"{duplicates} frame(s) sharing a stamp with an earlier one (all segmented); {len(failed)} bag(s) "
              f"not made; wrote {args.out}", file=sys.stderr)
    return (not_made(failed, single) if ranks.main else 2) if failed else 0


@dataclass
class BagScores:
    """One bag's evaluation, as it travels from its process to rank 0."""

    name: str
    frames: int
    seconds: float
    matrix: Optional[np.ndarray] = None  # with ground truth
    matched: int = 0
    unmatched_predictions: int = 0
    unmatched_labels: int = 0
    per_frame: list = field(default_factory=list)
    temporal: list = field(default_factory=list)
    without_image: int = 0  # masks whose camera image was not found: no TC for them


def check_eval_arguments(args: argparse.Namespace, bags: list[fleet.BagInput]) -> Optional[str]:
    """The topic the optical flow reads (None without --temporal); a BagError for what cannot work."""
    if not (args.labels or args.label_topic or args.temporal):
        raise BagError("nothing to measure: give ground truth (--labels or --label-topic), --temporal, or both")
    if args.labels and len(bags) > 1:
        raise BagError("--labels (files in frame order) goes with one bag; several bags take --label-topic")
    if args.classes is None and (args.labels or args.label_topic or args.topic):
        raise BagError("--classes is needed " + ("to name the ground truth's ids" if args.labels or args.label_topic
                                                 else "for the engine's prompts (--topic)")
                       + "; only --mask-topic --temporal without ground truth reads the classes from the bag")
    if not args.temporal:
        return None
    if args.mask_topic and not args.flow_topic:
        raise BagError("--temporal with --mask-topic needs --flow-topic: the camera images the masks were made from")
    return args.flow_topic or args.topic


def run_eval(args: argparse.Namespace, stop: threading.Event, load_engine) -> int:
    from clip_dinoiser_ros.bag import evaluate as ev
    from clip_dinoiser_ros.bag.from_images import image_files
    from clip_dinoiser_ros.bag.reading import IMAGE_TYPES, check_topics

    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise BagError(f"{args.out} exists and is not empty: choose another --out or pass --overwrite")
    classes = ev.read_classes(args.classes) if args.classes else None  # else each bag's LabelInfo names them
    bags = fleet.find_bags(args.bags)
    flow_topic = check_eval_arguments(args, bags)
    topic = args.topic or args.mask_topic

    def check(reader) -> None:
        check_topics(reader, [topic], ev.MASK_TYPES if args.mask_topic else IMAGE_TYPES)
        if flow_topic:
            check_topics(reader, [flow_topic])

    bags, frames, failed = frame_counts(bags, [topic], check)
    label_files = image_files(args.labels) if args.labels else None
    if label_files is not None and len(label_files) != frames[0]:
        raise BagError(f"label/frame mismatch: {frames[0]} frames but {len(label_files)} label files in {args.labels}")
    args.device = process_device(args.device)
    ranks = Ranks(args.device)
    try:
        mine = fleet.shard(bags, frames, ranks.world, ranks.rank)
        predict = _predictions(args, classes, load_engine, flow_topic)
        own: list[BagScores] = []
        started = time.perf_counter()
        with tqdm(total=sum(frames[bags.index(bag)] for bag in mine), unit="frame", dynamic_ncols=True,
                  desc="eval" if ranks.world == 1 else f"eval (rank {ranks.rank})") as progress:
            for bag in mine:
                try:
                    scores = _evaluate_bag(args, bag, classes, predict, label_files, flow_topic, stop, progress)
                except BagError as error:  # the other bags go on; this one is named in the summary
                    failed[str(bag.name)] = str(error)
                    tqdm.write(f"error: {bag.name} not evaluated: {error}", file=sys.stderr)
                    continue
                if stop.is_set():
                    break
                own.append(scores)
        if stop.is_set():
            print("interrupted: no reports written", file=sys.stderr)
            return INTERRUPTED
        ground_truth = bool(args.labels or args.label_topic)
        total = ranks.total(sum((b.matrix for b in own if b.matrix is not None),
                                np.zeros((len(classes), len(classes) + 1), np.int64))) if ground_truth else None
        everyone = [scores for part in ranks.gather(own) for scores in part]
        wall = max(ranks.gather(time.perf_counter() - started))
        failed = {name: why for part in ranks.gather(failed) for name, why in part.items()}
    finally:
        ranks.close()
    single = fleet.single_bag(args.bags)
    if failed and single:
        return not_made(failed, single) if ranks.main else 2
    if ranks.main:
        _report(args, classes, sorted(everyone, key=lambda b: [str(x.name) for x in bags].index(b.name)), total,
                wall, ranks.world, single, failed)
    return (not_made(failed, single) if ranks.main else 2) if failed else 0


def _evaluate_bag(args: argparse.Namespace, bag: fleet.BagInput, classes, predict, label_files, flow_topic,
                  stop: threading.Event, progress) -> BagScores:
    """One bag's scores; its ground truth read by stamp beside the predictions (ev.GroundTruthWindow)."""
    from clip_dinoiser_ros.bag import evaluate as ev

    started = time.perf_counter()
    bag_classes = classes or ev.recorded_classes(bag.path, args.mask_topic)
    with ev.GroundTruthWindow(bag.path, args.label_topic) if args.label_topic else nullcontext() as truth:
        result = ev.evaluate(_until(predict(bag.path, bag_classes), stop), len(bag_classes), args.ignore_index,
                             label_topic=truth, label_files=label_files, temporal=flow_topic is not None,
                             progress=progress)
    return BagScores(str(bag.name), result.frames, time.perf_counter() - started,
                     result.matrix if truth is not None or label_files else None, result.matched,
                     result.unmatched_predictions, result.unmatched_labels, result.per_frame, result.temporal,
                     result.without_image)


def _predictions(args: argparse.Namespace, classes, load_engine, flow_topic: Optional[str]):
    """(bag path, classes) -> its predictions: the engine's on --topic, or the masks recorded on --mask-topic."""
    from clip_dinoiser_ros.bag import evaluate as ev

    if args.mask_topic:
        return lambda bag, bag_classes: ev.mask_predictions(bag, args.mask_topic, bag_classes, flow_topic)
    from clip_dinoiser_ros.model.vocabulary import BACKGROUND_SETTINGS

    args.prompts, lookup = ev.prompts_and_lookup(classes)
    engine = load_engine(args)
    background = BACKGROUND_SETTINGS[args.background]

    def segment(rgb):
        return engine.segment(rgb, mode=args.mode, short_side=args.short_side, background=background,
                              probs=False).labels

    return lambda bag, _: ev.engine_predictions(bag, args.topic, segment, lookup, with_images=flow_topic is not None)


def _until(items, stop: threading.Event):
    for item in items:
        if stop.is_set():
            return
        yield item


def _report(args: argparse.Namespace, classes, rows: list[BagScores], total: Optional[np.ndarray], wall: float,
            processes: int, single: bool, failed: dict[str, str]) -> None:
    """Per bag (its folder, or --out itself for one bag) and in total: reports, then summary.md/json (which
    name the bags that could not be evaluated, and why, and count the masks TC could not use)."""
    from clip_dinoiser_ros.evaluation import scores, summary_table, write_reports
    from clip_dinoiser_ros.evaluation.reports import write_over_time, write_summary
    from clip_dinoiser_ros.evaluation.temporal import FLOW_METHOD

    if total is not None and sum(row.matched for row in rows) == 0:
        raise BagError("no frame matched any ground truth by header stamp: nothing to score")
    names = [synonyms[0] for synonyms in classes or []]
    model = _model_description(args)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = []
    for row in rows:
        folder = args.out if single else args.out / row.name
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"bag": row.name, "predictions": args.topic or args.mask_topic, "model": model,
                "ground_truth": str(args.labels or args.label_topic or "none"), "frames": row.frames,
                "frames_matched": row.matched, "frames_without_ground_truth": row.unmatched_predictions,
                "ground_truth_without_frame": row.unmatched_labels, "ignore_index": args.ignore_index}
        if row.matrix is not None:
            write_reports(folder, names, row.matrix, row.per_frame, meta, title=model)
        if row.temporal:
            write_over_time(folder / "temporal_consistency", row.temporal, "TC %", title=f"{model}; {FLOW_METHOD}")
        summary.append({"bag": row.name, "frames": row.frames, "frames_matched": row.matched,
                        "miou": scores(row.matrix).miou if row.matrix is not None else None,
                        "tc": float(np.mean([tc for _, tc in row.temporal])) if row.temporal else None,
                        "masks_without_image": row.without_image, "frames_per_s": row.frames / max(row.seconds, 1e-9)})
    pairs = [tc for row in rows for _, tc in row.temporal]
    frames = sum(row.frames for row in rows)
    overall = {"bag": "all", "frames": frames, "frames_matched": sum(row.matched for row in rows),
               "miou": scores(total).miou if total is not None else None,
               "tc": float(np.mean(pairs)) if pairs else None, "frames_per_s": frames / max(wall, 1e-9)}
    if total is not None and not single:
        write_reports(args.out, names, total, None, {"bags": len(rows), "model": model}, title=model)
    without_image = sum(row.without_image for row in rows)
    meta = {"model": model, "camera": args.topic or args.mask_topic, "processes": processes,
            "temporal_consistency": FLOW_METHOD if pairs else "not measured" + (
                ": no two consecutive masks with their camera images" if args.temporal else " (--temporal)")}
    if args.temporal:
        meta["masks_without_image"] = f"{without_image} (their camera image was not found: no TC for them)"
    if failed:
        meta["not_evaluated"] = "; ".join(f"{name}: {why}" for name, why in sorted(failed.items()))
    written = write_summary(args.out, summary, overall, meta)
    if total is not None:
        print(summary_table(names, scores(total)))
    print(written[1].read_text())
    if args.mask_topic is None and args.random_weights:
        from clip_dinoiser_ros.visualization import RANDOM_NOTICE

        print(f"\n{RANDOM_NOTICE}")
    if total is not None:
        print(f"\nmatched {overall['frames_matched']} frames; {sum(r.unmatched_predictions for r in rows)} frames "
              f"without ground truth; {sum(r.unmatched_labels for r in rows)} ground-truth frames without a frame")
    if without_image:
        print(f"\n{without_image} mask(s) without their camera image on {args.flow_topic or args.topic}: no TC for "
              "them", file=sys.stderr)
    print(f"wrote {', '.join(str(path) for path in written)} and the reports under {args.out}", file=sys.stderr)


def _model_description(args: argparse.Namespace) -> str:
    if args.mask_topic:
        return f"masks recorded on {args.mask_topic}"
    if args.random_weights:
        return "RANDOM WEIGHTS: plumbing only, not a segmentation result"
    return f"CLIP {args.clip_model}/{args.clip_pretrained}, heads {args.heads}"
