"""Posed RGB-D frames for the map's tests: the real Redwood and TUM cabinet frames of ../shared/data, random
unit features of the engine's shape for each (random: geometry and plumbing only, no semantics), and a
synthetic scene renderer."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from clip_dinoiser_ros.spatial import Intrinsics, PatchGrid

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRID = PatchGrid((480, 640), (448, 597), 16)  # the engine's grid for a 640x480 frame at short side 448
FEATURE_DIM = 512


def need(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} is not here (the shared real data)")
    return path


def random_features(seed: int, grid: PatchGrid = GRID) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random (512, h, w) unit feature map and objectness in [0, 1] for frame ``seed``."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((FEATURE_DIM, *grid.shape)).astype(np.float32)
    features /= np.linalg.norm(features, axis=0, keepdims=True)
    return features, rng.random(grid.shape).astype(np.float32)


def redwood() -> tuple[Intrinsics, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The camera and 5 (depth metres, rgb, camera-to-world pose) frames of data/rgbd."""
    root = need("rgbd")
    k = json.loads((root / "camera_primesense.json").read_text())["intrinsic_matrix"]  # column-major
    camera = Intrinsics(fx=k[0], fy=k[4], cx=k[6], cy=k[7], width=640, height=480)
    rows = [line.split() for line in (root / "trajectory.log").read_text().splitlines() if line.strip()]
    poses = [np.array(rows[i + 1:i + 5], dtype=np.float64) for i in range(0, len(rows), 5)]
    frames = []
    for index, pose in enumerate(poses[:5]):
        depth = cv2.imread(str(root / "depth" / f"{index:05d}.png"), cv2.IMREAD_UNCHANGED) / 1000.0
        rgb = cv2.cvtColor(cv2.imread(str(root / "color" / f"{index:05d}.jpg")), cv2.COLOR_BGR2RGB)
        frames.append((depth, rgb, pose))
    return camera, frames


def quaternion_pose(tx, ty, tz, qx, qy, qz, qw) -> np.ndarray:
    x, y, z, w = np.array([qx, qy, qz, qw]) / np.linalg.norm([qx, qy, qz, qw])
    pose = np.eye(4)
    pose[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    pose[:3, 3] = tx, ty, tz
    return pose


def tum_cabinet(step: int = 1) -> tuple[Intrinsics, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The camera and every ``step``-th of the 58 keyframes (depth metres at 5000 units per metre, rgb, pose)."""
    root = need("tum_cabinet")
    camera = Intrinsics(fx=535.4, fy=539.2, cx=320.1, cy=247.6, width=640, height=480)
    lines = (root / "truth_cam_poses.txt").read_text().split("\n")
    poses = [quaternion_pose(*map(float, line.split()[1:8])) for line in lines if line.strip()]
    frames = []
    for index in range(0, len(poses), step):
        depth = cv2.imread(str(root / "depth" / f"{index:04d}_depth_raw.png"), cv2.IMREAD_UNCHANGED) / 5000.0
        rgb = cv2.cvtColor(cv2.imread(str(root / "color" / f"{index:04d}_rgb_raw.jpg")), cv2.COLOR_BGR2RGB)
        frames.append((depth, rgb, poses[index]))
    return camera, frames


def cabinet_cuboid() -> tuple[np.ndarray, float, np.ndarray]:
    """Centre, yaw and half extents of the cabinet (truth_objects.txt; the dimensions read as half extents)."""
    x, y, z, yaw, *half = map(float, (need("tum_cabinet") / "truth_objects.txt").read_text().split()[:7])
    return np.array([x, y, z]), yaw, np.array(half)


def distance_to_cuboid_surface(points: np.ndarray, centre: np.ndarray, yaw: float, half: np.ndarray) -> np.ndarray:
    """Unsigned distance of each point to the faces of a z-yawed cuboid."""
    c, s = np.cos(yaw), np.sin(yaw)
    moved = points - centre
    local = np.stack([c * moved[:, 0] + s * moved[:, 1], -s * moved[:, 0] + c * moved[:, 1], moved[:, 2]], 1)
    q = np.abs(local) - half
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    return np.abs(outside + np.minimum(q.max(axis=1), 0.0))


def look_at(eye, target) -> np.ndarray:
    """Camera(optical: x right, y down, z forward)-to-world pose at ``eye`` looking at ``target`` (z up)."""
    forward = np.asarray(target, float) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


def render_depth(camera: Intrinsics, pose: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]],
                 wall_x: float) -> np.ndarray:
    """Depth (metres) of axis-aligned ``boxes`` (min, max corners) in front of the wall plane x = ``wall_x``."""
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u, float)], -1)
    directions = rays @ pose[:3, :3].T
    origin = pose[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(directions[..., 0] > 0, (wall_x - origin[0]) / directions[..., 0], np.inf)
        for low, high in boxes:
            t_low, t_high = (low - origin) / directions, (high - origin) / directions
            near = np.nanmax(np.minimum(t_low, t_high), axis=-1)
            far = np.nanmin(np.maximum(t_low, t_high), axis=-1)
            t = np.where((near <= far) & (near > 0) & (near < t), near, t)
    depth = t  # ray z component is 1: t is the depth along the optical axis
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
