"""The voxel map's costs on this CPU: integrating one 640x480 frame, a 10-text query, memory per voxel.

Integration: the real TUM cabinet keyframes of ../shared/data (a rendered box room without them), each with
fixed random 512 x 28 x 38 unit features (random: no semantics, the cost is the same) into a 5 cm map;
per frame the wall time and the process's CPU time, the median and the minimum over the frames after the
first few, with free-space carving on (the default) and off. Query: 10 random unit texts over a map of
200,000 voxels (random features, stored fp16, the default, or fp32), the engine's rule with a background
class, median and minimum over the repeats. Memory: the map's arrays per 100,000 voxels.

With ``--source`` (repeat it), each folder's clip_dinoiser_ros is measured in a fresh interpreter, the
sources taking turns for ``--rounds`` rounds, so that the load of other processes falls on each alike; the
table gives every figure's median and minimum over the rounds:

    git archive <commit before a change> clip_dinoiser_ros | tar -x -C /tmp/before
    PYTHONPATH=.:test .venv/bin/python bench/bench_map.py --source /tmp/before --source . [--rounds 3]
    PYTHONPATH=.:test .venv/bin/python bench/bench_map.py [--voxels 200000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TEST = Path(__file__).resolve().parents[1] / "test"
sys.path.insert(0, str(TEST))

from map_frames import DATA, GRID, look_at, random_features, render_depth, tum_cabinet  # noqa: E402


def frames():
    if (DATA / "tum_cabinet").is_dir():
        return "TUM cabinet (real)", *tum_cabinet()
    from clip_dinoiser_ros.spatial import Intrinsics
    camera = Intrinsics(fx=535.4, fy=539.2, cx=320.1, cy=247.6, width=640, height=480)
    rgb = np.full((480, 640, 3), 128, np.uint8)
    poses = [look_at(np.array([0.0, 0.05 * i, 0.0]), [3.0, 0.0, 0.0]) for i in range(30)]
    boxes = [(np.array([1.5, -0.3, -0.3]), np.array([1.9, 0.3, 0.3]))]
    return "rendered box (synthetic)", camera, [(render_depth(camera, p, boxes, 3.0), rgb, p) for p in poses]


def integration(camera, sequence, carve: bool) -> dict[str, float]:
    """Wall and CPU milliseconds per frame (median, min over the frames after the first 3) and the map's size."""
    from clip_dinoiser_ros.mapping import MapSettings, VoxelMap
    voxel_map = VoxelMap(MapSettings(carve=carve))
    features = [random_features(i) for i in range(len(sequence))]
    wall, cpu = [], []
    for index, (depth, rgb, pose) in enumerate(sequence):
        started, used = time.perf_counter(), time.process_time()
        voxel_map.integrate(depth, camera, pose, *features[index], rgb, GRID, float(index))
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    name = f"integrate, carving {'on' if carve else 'off'}"
    return {f"{name}: wall ms": 1e3 * statistics.median(wall[3:]),
            f"{name}: wall ms, fastest frame": 1e3 * min(wall[3:]),
            f"{name}: CPU ms": 1e3 * statistics.median(cpu[3:]), f"{name}: map voxels": len(voxel_map)}


def filled_map(voxels: int, dtype: str):
    from clip_dinoiser_ros.mapping import MapSettings, VoxelMap
    from clip_dinoiser_ros.mapping.keys import pack
    rng = np.random.default_rng(0)
    voxel_map = VoxelMap(MapSettings(budget=voxels, feature_dtype=dtype))
    coords = np.unique(rng.integers(-400, 400, (int(voxels * 1.05), 3)), axis=0)[:voxels]
    rows = voxel_map.add(np.sort(pack(coords)))
    features = rng.standard_normal((voxels, 512)).astype(np.float32)
    voxel_map.set_features(rows, features / np.linalg.norm(features, axis=1, keepdims=True))
    voxel_map.slots["objectness"][rows] = rng.random(voxels)
    voxel_map.slots["weight"][rows] = 1.0
    return voxel_map


def querying(voxels: int, repeats: int, dtype: str) -> dict[str, float]:
    """Milliseconds of a 10-text query (median, min over ``repeats``) and MiB per 100,000 voxels."""
    from clip_dinoiser_ros.mapping import query
    rng = np.random.default_rng(1)
    texts = rng.standard_normal((10, 512)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    voxel_map = filled_map(voxels, dtype)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        query(voxel_map, texts, background_index=0)
        times.append(time.perf_counter() - started)
    name = f"query 10 texts, {len(voxel_map)} voxels, {dtype}"
    return {f"{name}: ms": 1e3 * statistics.median(times), f"{name}: ms, fastest": 1e3 * min(times),
            f"memory {dtype}: MiB per 100,000 voxels": voxel_map.nbytes / len(voxel_map) * 1e5 / 2**20}


def measure(voxels: int, repeats: int) -> dict[str, float]:
    """Every figure of the package this interpreter imports."""
    source, camera, sequence = frames()
    figures = {"frames": f"{source}, {len(sequence)} frames"}
    for carve in (True, False):
        figures.update(integration(camera, sequence, carve))
    for dtype in ("float16", "float32"):
        figures.update(querying(voxels, repeats, dtype))
    return figures


def compare(sources: list[Path], rounds: int, voxels: int, repeats: int) -> None:
    """Each source's figures in fresh interpreters taking turns; median and minimum over the rounds."""
    runs: dict[Path, list[dict]] = {source: [] for source in sources}
    for _ in range(rounds):
        for source in sources:
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join((str(source.resolve()), str(TEST)))}
            output = subprocess.run([sys.executable, __file__, "--json", "--voxels", str(voxels),
                                     "--repeats", str(repeats)], env=environment, check=True,
                                    capture_output=True, text=True).stdout
            runs[source].append(json.loads(output.splitlines()[-1]))
    print(f"{rounds} rounds, the sources taking turns; each cell: median (min) over the rounds")
    print("| figure | " + " | ".join(str(source) for source in sources) + " |")
    print("| --- |" + " --- |" * len(sources))
    for name, value in runs[sources[0]][0].items():
        if isinstance(value, str):
            print(f"| {name} | " + " | ".join(runs[source][0][name] for source in sources) + " |")
            continue
        cells = [[run[name] for run in runs[source]] for source in sources]
        print(f"| {name} | " + " | ".join(f"{statistics.median(c):.1f} ({min(c):.1f})" if isinstance(c[0], float)
                                         else str(c[0]) for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--source", type=Path, action="append", help="a folder holding clip_dinoiser_ros (repeat)")
    parser.add_argument("--rounds", type=int, default=3, help="with --source: turns each source takes")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line (for --source)")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.voxels, args.repeats)))
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, numpy {np.__version__}; targets: integrate <= 30 ms, "
          f"query <= 50 ms")
    if args.source:
        compare(args.source, args.rounds, args.voxels, args.repeats)
    else:
        for name, value in measure(args.voxels, args.repeats).items():
            print(f"{name}: {value if isinstance(value, str) else round(value, 1)}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
