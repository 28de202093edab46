"""Offline ``clip-dinoiser-bag segment`` throughput vs the engine alone on the same frames.

The bag side does everything the command does: read and decode each frame from the bag, segment it,
build the node's messages (mask, confidence, class_confidences, label_info) and write them to an mcap
bag. The engine side segments the same frames, already decoded in memory, with the same options. The
two alternate (A, B, A, B, ...) and the medians are compared. RANDOM weights: timing only.

The source is the CamVid sequence (101 frames, 480x360) when ../shared/data is present, else generated
frames of that size.

    PYTHONPATH=.:bench HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_bag_segment.py \
        [--model ViT-B-16 --short-side 448 --frames 10] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from clip_dinoiser_ros.bag.reading import messages, open_bag, to_rgb
from clip_dinoiser_ros.pipeline.frame_geometry import PairingOptions
from clip_dinoiser_ros.bag.segment import SegmentOptions, segment_bag
from clip_dinoiser_ros.ros.parameters import SPECS
from clip_dinoiser_ros.pipeline.frame_pipeline import FrameSettings
from clip_dinoiser_ros.cli.bag import main as bag_cli
from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from timing import alternating_medians

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "0016E5" / "images"
PROMPTS = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist"]


def source_images(directory: Path, frames: int) -> Path:
    if CAMVID.is_dir():
        files = sorted(CAMVID.glob("*.png"))[:frames]
    else:
        rng = np.random.default_rng(0)
        files = []
        for index in range(frames):
            path = directory / f"frame_{index:04d}.png"
            PILImage.fromarray(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)).save(path)
            files.append(path)
    images = directory / "images"
    images.mkdir()
    for path in files:
        (images / path.name).symlink_to(path.resolve())
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-Tiny-16-test")
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--frames", type=int, default=101)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench_bag_"))
    images = source_images(directory, args.frames)
    bag = directory / "camera"
    assert bag_cli(["from-images", str(images), "--topic", "/cam/image_raw", "--rate", "15", "--out", str(bag)]) == 0
    torch.manual_seed(0)
    engine = ClipDinoiser(random_clip(args.model), None)
    engine.set_prompts(PROMPTS)
    frame = FrameSettings(mode="whole", short_side=args.short_side, background="off", threshold=0.0,
                          confidence_encoding="32FC1")
    options = SegmentOptions(frame, overlay=False, storage="mcap", overwrite=True,
                             pairing=PairingOptions(SPECS["sync_wait_s"].default, SPECS["sync_queue_size"].default),
                             depth_scale=SPECS["depth_scale"].default)
    with open_bag(bag) as reader:
        frames = [to_rgb(item) for item in messages(reader, ["/cam/image_raw"])]

    def engine_alone() -> None:
        for rgb in frames:
            engine.segment(rgb, mode="whole", short_side=args.short_side, background=False, probs=False)

    def bag_command() -> None:
        segment_bag(bag, ["/cam/image_raw"], directory / "out", engine, options, threading.Event())

    medians = alternating_medians({"engine": engine_alone, "bag": bag_command}, args.repeats)
    engine_fps, bag_fps = (len(frames) / medians[name] for name in ("engine", "bag"))
    print(f"{args.model} short side {args.short_side}, {len(frames)} frames of "
          f"{frames[0].shape[1]}x{frames[0].shape[0]} ({'CamVid' if CAMVID.is_dir() else 'generated'}), "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}", file=sys.stderr)
    print(f"engine alone: {engine_fps:.2f} frames/s; bag segment: {bag_fps:.2f} frames/s; "
          f"ratio bag/engine {bag_fps / engine_fps:.3f}")


if __name__ == "__main__":
    main()
