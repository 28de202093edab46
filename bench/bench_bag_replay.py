"""Live replay: masks recorded / frames played at 15 Hz through a live node, every drop in /diagnostics.

A clip_dinoiser node (ViT-Tiny-16-test, RANDOM weights, use_sim_time) segments a camera bag that
``clip-dinoiser-bag play --clock`` publishes at its recorded 15 Hz, while ``clip-dinoiser-bag record``
records the masks and /diagnostics. Printed: frames played, masks recorded, their ratio, and the node's
own counts (received, published, dropped, rejected) from its last /diagnostics message, which must
account for every frame that did not become a mask.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_bag_replay.py [--short-side 224] [--frames 101]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench_bag_segment import source_images

DDS = {"FASTDDS_BUILTIN_TRANSPORTS": "SHM?sockets_size=33554432", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
       "HF_HUB_OFFLINE": "1", "ROS_DOMAIN_ID": str(random.randint(201, 230))}
BIN = Path(sys.executable).parent


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **DDS})


def wait_for(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{log}: no {text!r}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--frames", type=int, default=101)
    args = parser.parse_args()
    os.environ.update(DDS)
    from clip_dinoiser_ros.bag.reading import messages, open_bag
    from clip_dinoiser_ros.cli.bag import main as bag_cli

    directory = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    bag = directory / "camera"
    assert bag_cli(["from-images", str(source_images(directory, args.frames)), "--topic", "/cam/image_raw",
                    "--rate", "15", "--out", str(bag)]) == 0
    params = directory / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "image_topics": ["/cam/image_raw"], "prompts": ["sky", "road", "car", "building", "tree"],
        "clip_model": "ViT-Tiny-16-test", "random_weights": True, "short_side": args.short_side,
        "use_sim_time": True, "input_reliability": "reliable"}}}))
    node = start([str(BIN / "clip_dinoiser_node"), "--ros-args", "--params-file", str(params)], directory / "node.log")
    try:
        wait_for(directory / "node.log", "active on", 120)
        recorder = start([str(BIN / "clip-dinoiser-bag"), "record", "--topics", "/cam/segmentation/mask",
                          "/diagnostics", "--out", str(directory / "recorded")], directory / "record.log")
        wait_for(directory / "record.log", "recording /cam/segmentation/mask", 60)
        time.sleep(2.0)  # discovery between the node and the new reader
        player = start([str(BIN / "clip-dinoiser-bag"), "play", str(bag), "--clock", "--delay", "10"],
                       directory / "play.log")
        assert player.wait(300) == 0, (directory / "play.log").read_text()
        time.sleep(2.5)  # the last frames' masks, and a /diagnostics message after them
        assert stop(recorder) == 0
    finally:
        stop(node)
    with open_bag(directory / "recorded") as reader:
        masks = sum(1 for item in messages(reader, ["/cam/segmentation/mask"]))
        diagnostics = [item.message for item in messages(reader, ["/diagnostics"])]
    camera = [s for s in diagnostics[-1].status if s.name.endswith("/cam/image_raw")][-1]
    values = {kv.key: kv.value for kv in camera.values}
    counts = {key: int(values[f"frames_{key}"]) for key in ("received", "published", "dropped", "rejected")}
    print(f"ViT-Tiny-16-test short side {args.short_side}, {args.frames} frames at 15 Hz, RANDOM weights",
          file=sys.stderr)
    print(f"frames played {args.frames}; masks recorded {masks}; ratio {masks / args.frames:.3f}; "
          f"node /diagnostics: {counts}; unaccounted {args.frames - counts['published'] - counts['dropped'] - counts['rejected']}")


if __name__ == "__main__":
    main()
