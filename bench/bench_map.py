"""The voxel map's costs on this CPU: integrating one 640x480 frame, a 10-text query, memory per voxel.

Integration: the real TUM cabinet keyframes of ../shared/data (a rendered box room without them), each with
fixed random 512 x 28 x 38 unit features (random: no semantics, the cost is the same) into a 5 cm map;
the median over the frames after the first few, with free-space carving on (the default) and off. Query:
10 random unit texts over a map of 200,000 voxels (random features, stored fp16, the default, or fp32), the
engine's rule with a background class. Memory: the map's arrays per 100,000 voxels.

    PYTHONPATH=.:test .venv/bin/python bench/bench_map.py [--voxels 200000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from clip_dinoiser_ros.mapping import MapSettings, VoxelMap, query  # noqa: E402
from clip_dinoiser_ros.mapping.keys import pack  # noqa: E402
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


def integration_ms(camera, sequence, carve: bool) -> float:
    voxel_map = VoxelMap(MapSettings(carve=carve))
    features = [random_features(i) for i in range(len(sequence))]
    times = []
    for index, (depth, rgb, pose) in enumerate(sequence):
        started = time.perf_counter()
        voxel_map.integrate(depth, camera, pose, *features[index], rgb, GRID, float(index))
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[3:]), len(voxel_map)


def filled_map(voxels: int, dtype: str) -> VoxelMap:
    rng = np.random.default_rng(0)
    voxel_map = VoxelMap(MapSettings(budget=voxels, feature_dtype=dtype))
    coords = np.unique(rng.integers(-400, 400, (int(voxels * 1.05), 3)), axis=0)[:voxels]
    keys = np.sort(pack(coords))
    rows = voxel_map.add(keys)
    features = rng.standard_normal((voxels, 512)).astype(np.float32)
    voxel_map.slots["features"][rows] = features / np.linalg.norm(features, axis=1, keepdims=True)
    voxel_map.slots["objectness"][rows] = rng.random(voxels)
    voxel_map.slots["weight"][rows] = 1.0
    return voxel_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, numpy {np.__version__}")
    source, camera, sequence = frames()
    for carve in (True, False):
        median, size = integration_ms(camera, sequence, carve)
        print(f"integrate one 640x480 frame ({source}, {len(sequence)} frames, 5 cm, carving "
              f"{'on' if carve else 'off'}): median {median:.1f} ms (target <= 30 ms); map {size} voxels")
    rng = np.random.default_rng(1)
    texts = rng.standard_normal((10, 512)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    for dtype in ("float16", "float32"):
        voxel_map = filled_map(args.voxels, dtype)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            query(voxel_map, texts, background_index=0)
            times.append(time.perf_counter() - started)
        print(f"query 10 texts over {len(voxel_map)} voxels, {dtype} features: median "
              f"{1e3 * statistics.median(times):.1f} ms (target <= 50 ms); memory "
              f"{voxel_map.nbytes / len(voxel_map) * 1e5 / 2**20:.1f} MiB per 100,000 voxels "
              f"({voxel_map.nbytes / len(voxel_map):.0f} bytes per voxel)")


if __name__ == "__main__":
    main()
