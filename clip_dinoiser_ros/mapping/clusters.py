"""Places in a map where a text wins: the winning voxels grouped into 26-connected clusters, each with its
axis-aligned extent and mean score, as a query's answer lists them (the node turns them into Detection3D)."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from .keys import pack, unpack

# Half of the 26 neighbour offsets: each pair of neighbours is linked once, from the lower key.
FORWARD_OFFSETS = np.array([offset for offset in product((-1, 0, 1), repeat=3) if offset > (0, 0, 0)], np.int64)


@dataclass(frozen=True)
class VoxelCluster:
    """One connected group of voxels where a text wins."""

    centre: tuple[float, float, float]  # of the box around the voxels' cubes, map frame
    size: tuple[float, float, float]  # the box's edges, metres (at least one voxel)
    score: float  # mean winning probability over the voxels
    voxels: int


def components(keys: np.ndarray) -> np.ndarray:
    """Component index (0..C-1, in order of first appearance) of each of the sorted, unique ``keys``,
    26-connected: union-find over the neighbour pairs, with pointer jumping until nothing changes."""
    parent = np.arange(keys.size)
    coords = unpack(keys)
    firsts, seconds = [], []
    for offset in FORWARD_OFFSETS:
        neighbours = pack(coords + offset)
        position = np.minimum(np.searchsorted(keys, neighbours), max(keys.size - 1, 0))
        linked = np.flatnonzero(keys[position] == neighbours) if keys.size else np.zeros(0, np.int64)
        firsts.append(linked)
        seconds.append(position[linked])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    while True:
        root_a, root_b = parent[first], parent[second]
        low = np.minimum(root_a, root_b)
        np.minimum.at(parent, root_a, low)
        np.minimum.at(parent, root_b, low)
        while True:  # pointer jumping: every voxel points at its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        if np.array_equal(parent[first], parent[second]):
            return np.unique(parent, return_inverse=True)[1]


def clusters(keys: np.ndarray, scores: np.ndarray, voxel_size: float, min_voxels: int = 1) -> list[VoxelCluster]:
    """The clusters of the voxels ``keys`` (any order) with their ``scores``, of at least ``min_voxels``
    voxels, best mean score first."""
    order = np.argsort(keys)
    keys, scores = keys[order], scores[order]
    if keys.size == 0:
        return []
    component = components(keys)
    by_component = np.argsort(component, kind="stable")
    bounds = np.flatnonzero(np.diff(component[by_component], prepend=-1, append=-1))
    coords = unpack(keys)
    found = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        members = by_component[start:end]
        if members.size < min_voxels:
            continue
        low, high = coords[members].min(axis=0), coords[members].max(axis=0) + 1
        centre = tuple(float(v) for v in (low + high) * (voxel_size / 2.0))
        size = tuple(float(v) for v in (high - low) * voxel_size)
        found.append(VoxelCluster(centre, size, float(scores[members].mean()), int(members.size)))
    return sorted(found, key=lambda cluster: (-cluster.score, -cluster.voxels))
