"""Node throughput with two cameras: frames batched into one pass vs one camera at a time.

One node (ViT-B-16, RANDOM weights, precision auto, whole mode, short side 448) subscribes to two
cameras; this process publishes 640x480 frames on both at 30 Hz each (far more than the CPU serves, so
the node always has both cameras' frames waiting) and counts the masks that come back. ``batch_cameras``
is switched live between phases (on, off, on, off, ...), each measured over ``--seconds`` after a
settling pause, so both settings share the node, the process and the machine's load.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_node_cameras.py [--phases 4] [--seconds 30]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from bench_node_memory import DDS, node_environment

TOPICS = ["/left/image_raw", "/right/image_raw"]
WIDTH, HEIGHT = 640, 480
SETTLE_S = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.update(DDS)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(201, 230)))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from sensor_msgs.msg import Image

    directory = Path(tempfile.mkdtemp(prefix="bench_cameras_"))
    params = directory / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "image_topics": TOPICS, "prompts": ["road", "car", "sky", "person", "tree", "building"],
        "clip_model": "ViT-B-16", "random_weights": True, "device": args.device}}}))
    node = subprocess.Popen([str(Path(sys.executable).parent / "clip_dinoiser_node"), "--ros-args", "--params-file",
                             str(params)], stdout=open(directory / "node.log", "wb"), stderr=subprocess.STDOUT,
                            env=node_environment())
    rclpy.init()
    probe = rclpy.create_node("cameras_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    masks: list[float] = []
    for topic in TOPICS:
        probe.create_subscription(Image, topic.replace("image_raw", "segmentation/mask"),
                                  lambda _: masks.append(time.monotonic()), 10)
    publishers = [probe.create_publisher(Image, topic, 10) for topic in TOPICS]
    rng = np.random.default_rng(0)
    frames = [Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3,
                    data=rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).tobytes()) for _ in TOPICS]
    stop = threading.Event()

    def camera_loop() -> None:
        while not stop.wait(1 / 30):
            for publisher, frame in zip(publishers, frames):
                publisher.publish(frame)

    threading.Thread(target=camera_loop, daemon=True).start()
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = AsyncParameterClient(probe, "/clip_dinoiser")
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        deadline = time.monotonic() + 300
        while not masks:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((directory / "node.log").read_text(errors="replace")[-2000:])
            time.sleep(0.5)
        for phase in range(args.phases):
            batched = phase % 2 == 0
            client.wait_for_services(10)
            future = client.set_parameters([Parameter("batch_cameras", value="on" if batched else "off")])
            while not future.done():
                time.sleep(0.05)
            time.sleep(SETTLE_S)
            start = time.monotonic()
            time.sleep(args.seconds)
            count = sum(1 for t in masks if start <= t < start + args.seconds)
            rates[batched].append(count / args.seconds)
            print(f"  phase {phase + 1}: batch_cameras={'on' if batched else 'off':3s} {count / args.seconds:.2f} masks/s",
                  flush=True)
    finally:
        stop.set()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(signal.SIGINT)
        node.wait(60)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"two cameras {WIDTH}x{HEIGHT}, ViT-B-16 RANDOM weights, {args.device}: batched {on:.2f} masks/s, "
          f"one at a time {off:.2f} masks/s, ratio {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
