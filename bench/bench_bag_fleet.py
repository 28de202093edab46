"""``clip-dinoiser-bag segment`` over a set of bags: 2 torchrun processes vs 1 process, same bags, one run.

The installed console script, as a user runs it: ``clip-dinoiser-bag segment BAGS/`` against
``torchrun --standalone --nproc-per-node 2 clip-dinoiser-bag segment BAGS/``. Bags of CamVid frames
(generated ones without ../shared/data), RANDOM weights (timing only). The single process keeps torch's
default threads (all cores); torchrun gives each worker OMP_NUM_THREADS=1. Wall time of the whole command,
model loading included, alternating runs, medians.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_bag_fleet.py [--bags 4 --frames 12 --model ViT-B-16]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from clip_dinoiser_ros.cli.bag import main as bag_cli
from timing import alternating_medians

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "0016E5" / "images"


def write_bags(root: Path, bags: int, frames: int) -> Path:
    files = sorted(CAMVID.glob("*.png")) if CAMVID.is_dir() else []
    (root / "bags").mkdir(parents=True)
    for index in range(bags):
        images = root / "frames" / str(index)
        images.mkdir(parents=True)
        for frame in range(frames):
            if files:
                PILImage.open(files[(index * frames + frame) % len(files)]).save(images / f"{frame:04d}.png")
            else:
                rgb = np.random.default_rng(frame).integers(0, 256, (360, 480, 3), dtype=np.uint8)
                PILImage.fromarray(rgb).save(images / f"{frame:04d}.png")
        assert bag_cli(["from-images", str(images), "--topic", "/cam/image_raw", "--rate", "10",
                        "--out", str(root / "bags" / f"drive_{index}")]) == 0
    return root / "bags"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--short-side", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    scripts = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as folder:
        bags = write_bags(Path(folder), args.bags, args.frames)
        common = ["segment", str(bags), "--topic", "/cam/image_raw", "--prompts", "road", "car", "sky", "tree",
                  "--clip-model", args.model, "--random-weights", "--short-side", str(args.short_side), "--overwrite"]
        environment = dict(os.environ, HF_HUB_OFFLINE="1")

        def run(*launcher: str, out: str):
            def once():
                subprocess.run([*launcher, str(scripts / "clip-dinoiser-bag"), *common, "--out", str(Path(folder) / out)],
                               check=True, capture_output=True, env=environment, timeout=3600)
            return once

        medians = alternating_medians({
            "1 process": run(out="one"),
            "2 processes": run(str(scripts / "torchrun"), "--standalone", "--nproc-per-node", "2", out="two"),
        }, args.repeats, warmup=0)
    frames = args.bags * args.frames
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.bags} bags x {args.frames} "
          f"frames ({'CamVid' if CAMVID.is_dir() else 'generated'} 480x360), {args.model} RANDOM weights, short side "
          f"{args.short_side}, {args.repeats} alternating runs")
    for name, seconds in medians.items():
        print(f"{name}: {seconds:.1f} s ({frames / seconds:.2f} frames/s)")
    print(f"ratio 2 processes / 1 process: {medians['1 process'] / medians['2 processes']:.2f}x the throughput")


if __name__ == "__main__":
    main()
