"""Peak memory of the node process at 1920x1080 with 100 prompts, by what is subscribed.

Each configuration starts a fresh node (ViT-B-16 with RANDOM weights, templates "none" so 100 prompts
encode quickly), sends 1920x1080 frames one at a time (the next when the previous mask arrived) and reads
the node's peak resident memory (VmHWM) before stopping it with SIGINT:

- ``mask``: only the mask is subscribed (a planner reading masks);
- ``all``: mask, confidence, summary, overlay and one per-class map are subscribed (the K x H x W map at
  full resolution is then computed).

``--node PATH`` runs another build of the node (for example an older commit's venv) with the same frames.

    python bench/bench_node_memory.py [--node .venv/bin/clip_dinoiser_node] [--frames 4] [--configs mask all]
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

import numpy as np
import yaml

PROMPTS = [f"object number {i}" for i in range(100)]
TOPIC = "/memory_cam/image_raw"
WIDTH, HEIGHT = 1920, 1080
DDS = {"FASTDDS_BUILTIN_TRANSPORTS": "SHM?sockets_size=33554432", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
       "HF_HUB_OFFLINE": "1"}
OUTPUTS = {"mask": ["mask"], "all": ["mask", "confidence", "class_confidences", "overlay", "confidence/object_number_0"]}


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) / 1024.0


def node_environment() -> dict[str, str]:
    """This process's environment without what the ROS wheels' bootstrapper set for THIS venv.

    The bootstrapper re-executes Python with LD_LIBRARY_PATH pointing at its venv's ROS libraries and a
    flag that says so; a node from another venv must set up its own, or it loads the wrong libraries.
    """
    return {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}


def measure(node_executable: str, outputs: list[str], frames: int, directory: Path) -> float:
    import rclpy
    from sensor_msgs.msg import Image

    from clip_dinoiser_ros.msg import ClassConfidences

    params = directory / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "image_topics": [TOPIC], "prompts": PROMPTS, "templates": "none", "clip_model": "ViT-B-16",
        "random_weights": True, "device": "cpu",
    }}}))
    log = open(directory / "node.log", "wb")
    node = subprocess.Popen([node_executable, "--ros-args", "--params-file", str(params)], stdout=log,
                            stderr=subprocess.STDOUT, env=node_environment())
    probe = rclpy.create_node("memory_probe")
    received: list[int] = []
    for output in outputs:
        kind = ClassConfidences if output == "class_confidences" else Image
        callback = (lambda message: received.append(1)) if output == "mask" else (lambda message: None)
        probe.create_subscription(kind, f"/memory_cam/segmentation/{output}", callback, 10)
    publisher = probe.create_publisher(Image, TOPIC, 10)
    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=rgb.tobytes())
    try:
        deadline = time.monotonic() + 600
        while len(received) < frames:
            if node.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "node.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the node stopped or never answered; its log ends with:\n{tail}")
            before = len(received)
            publisher.publish(frame)
            answer_by = time.monotonic() + 30
            while len(received) == before and time.monotonic() < answer_by:
                rclpy.spin_once(probe, timeout_sec=0.1)
        return peak_rss_mib(node.pid)
    finally:
        probe.destroy_node()
        node.send_signal(signal.SIGINT)
        node.wait(60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", default=str(Path(sys.executable).parent / "clip_dinoiser_node"))
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--configs", nargs="+", default=list(OUTPUTS), choices=list(OUTPUTS))
    args = parser.parse_args()
    os.environ.update(DDS)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(201, 230)))
    import rclpy

    rclpy.init()
    print(f"RANDOM WEIGHTS (ViT-B-16): memory and plumbing only. Node: {args.node}")
    print(f"{WIDTH}x{HEIGHT} rgb8 frames, {len(PROMPTS)} prompts, {args.frames} frames per configuration")
    results = {}
    try:
        for config in args.configs:
            with tempfile.TemporaryDirectory() as directory:
                results[config] = measure(args.node, OUTPUTS[config], args.frames, Path(directory))
            print(f"  {config:5s} ({', '.join(OUTPUTS[config])}): node peak RSS {results[config]:.0f} MiB", flush=True)
    finally:
        rclpy.try_shutdown()
    if len(results) == 2:
        print(f"  mask / all: {results['mask'] / results['all']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
