"""Peak RSS of ``clip-dinoiser-bag eval`` over a long labelled bag: does memory grow with the bag?

Writes a synthetic bag as the live node's recording with ground truth would be: ``--frames`` 1280x720 mono8
masks (with their label_info) and as many mono8 ground-truth images on /gt, at 10 Hz. Then runs
``eval --mask-topic --label-topic`` (no model) in a fresh interpreter for each package source given, and
prints each one's peak RSS (the child's ru_maxrss) and wall time. ``--source`` takes folders holding a
``clip_dinoiser_ros`` package (e.g. an older commit's, from ``git archive``); default: this tree.

    PYTHONPATH=. .venv/bin/python bench/bench_eval_memory.py --frames 3000 \\
        --source /tmp/head --source .
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
CLASSES = "sky\nroad\ncar\n"


def write_bag(path: Path, frames: int, width: int, height: int) -> None:
    """Masks and ground truth differing frame to frame (a band that moves), as the node's recording with labels."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from clip_dinoiser_ros.bag.writing import BagWriter
    from clip_dinoiser_ros.pipeline import messages as outputs

    base = np.zeros((height, width), np.uint8)
    base[height // 3:] = 1
    with BagWriter(path) as writer:
        for index in range(frames):
            stamp_ns = 1_000_000_000_000 + index * 100_000_000
            header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="cam")
            if index == 0:
                writer.write("/cam/segmentation/label_info", outputs.label_info(["sky", "road", "car"], 0.0, header),
                             stamp_ns)
            truth = base.copy()
            truth[:, index % width: index % width + 64] = 2
            writer.write("/cam/segmentation/mask", outputs.mask_image(np.roll(truth, 3, axis=1), header),
                         stamp_ns + 1)
            writer.write("/gt", outputs.mask_image(truth, header), stamp_ns + 2)


def peak_rss_mb(source: Path, bag: Path, out: Path, classes: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one eval in a fresh interpreter importing the package from ``source``."""
    program = "import sys; from clip_dinoiser_ros.cli.bag import main; sys.exit(main(sys.argv[1:]))"
    arguments = ["eval", str(bag), "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt",
                 "--classes", str(classes), "--out", str(out), "--overwrite"]
    environment = {**os.environ, "PYTHONPATH": str(source)}  # the generated messages still come from the install
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen([sys.executable, "-c", program, *arguments], env=environment,
                                   stdout=subprocess.DEVNULL, stderr=errors, text=True, cwd=bag.parent)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not every child's so far
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            code = os.waitstatus_to_exitcode(status)
            raise SystemExit(f"eval with {source} failed ({code}): {errors.read()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--source", type=Path, action="append", help="a folder holding clip_dinoiser_ros (repeat)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        bag = root / "labelled"
        started = time.perf_counter()
        write_bag(bag, args.frames, args.width, args.height)
        size = sum(p.stat().st_size for p in bag.rglob("*") if p.is_file()) / 2**20
        print(f"bag: {args.frames} frames of {args.width}x{args.height} masks and ground truth, {size:.0f} MB, "
              f"written in {time.perf_counter() - started:.0f} s")
        (root / "classes.txt").write_text(CLASSES)
        for source in args.source or [HERE]:
            rss, seconds = peak_rss_mb(source.resolve(), bag, root / "out", root / "classes.txt")
            print(f"{source}: peak RSS {rss:.0f} MB, {seconds:.0f} s")


if __name__ == "__main__":
    main()
