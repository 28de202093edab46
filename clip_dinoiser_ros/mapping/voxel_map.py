"""A sparse voxel map of fused open-vocabulary features, bounded by a voxel budget.

Each voxel lives in one slot of fixed-width arrays (features stored fp16); a sorted array of packed keys
finds a voxel's slot, and freed slots are reused, so eviction never moves the large feature array. Per voxel:
the pixel-weighted mean feature, objectness and colour; ``pixels`` (the mean's weight); ``weight``, the
occupancy evidence (+1 per frame that hits it, up to ``max_weight``; -1 per frame that sees through it,
which also scales ``pixels`` down, so what comes back after a change takes over; at 0 the voxel is gone);
the observation count and the time it was last seen. Each feature's norm is kept beside it (``set_features``),
so that a query reads the large feature array once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..spatial.intrinsics import Intrinsics
from ..spatial.patch_grid import PatchGrid
from .carving import seen_through, view_box
from .half import to_float16, to_float32
from .integration import FrameVoxels, observe
from .keys import centres, unpack, x_range

EVICTION_POLICIES = ("distance", "age")
EVICTION_SLACK = 0.05  # evict this share of the budget beyond what is needed: not a compaction every frame
MERGE_BLOCK = 512  # voxels whose features are updated together: ~1 MiB of float32 at E = 512


@dataclass(frozen=True)
class MapSettings:
    voxel_size: float = 0.05  # metres
    budget: int = 500_000  # most voxels ever held
    eviction: str = "distance"  # over budget, drop the farthest from the camera ("distance") or the oldest ("age")
    max_weight: float = 10.0  # frames of evidence kept: how many see-through frames erase a static voxel
    max_depth_m: float = 5.0  # depth beyond this is neither integrated nor used to carve
    carve: bool = True
    carve_margin_m: float = 0.10  # a voxel must be this far in front of the measured depth to be seen through
    feature_dim: int = 512
    feature_dtype: str = "float16"  # "float32" doubles the memory and spares queries the fp16 conversion

    def __post_init__(self) -> None:
        if not (self.voxel_size > 0 and self.max_depth_m > 0 and self.max_weight >= 1 and self.carve_margin_m >= 0):
            raise ValueError(f"map settings out of range: {self}")
        if self.budget < 1 or self.feature_dim < 1:
            raise ValueError(f"budget and feature_dim must be positive, got {self.budget}, {self.feature_dim}")
        if self.feature_dtype not in ("float16", "float32"):
            raise ValueError(f"feature_dtype must be float16 or float32, got {self.feature_dtype!r}")
        if self.eviction not in EVICTION_POLICIES:
            raise ValueError(f"eviction must be one of {EVICTION_POLICIES}, got {self.eviction!r}")


SLOT_FIELDS = {  # name: (dtype, trailing shape); the features' dtype and width come from the settings
    "keys": (np.int64, ()), "features": (None, None), "pixels": (np.float32, ()),
    "objectness": (np.float32, ()), "weight": (np.float32, ()), "colour": (np.float32, (3,)),
    "count": (np.int32, ()), "last_seen": (np.float64, ()), "norm": (np.float32, ()),
}
DERIVED_FIELDS = ("norm",)  # recomputed from the features (set_features), never saved
MIN_NORM = 1e-12  # the norm kept for an all-zero feature: its cosines are 0, not NaN


class VoxelMap:
    """The map; ``integrate`` adds a frame, ``rows`` lists the live slots (in key order)."""

    def __init__(self, settings: MapSettings = MapSettings()) -> None:
        self.settings = settings
        self.slots: dict[str, np.ndarray] = {}
        self._allocate(0)
        self._index_keys = np.zeros(0, np.int64)  # sorted keys of the live voxels
        self._index_rows = np.zeros(0, np.int64)  # their slots
        self._free = np.zeros(0, np.int64)  # slots below the high-water mark that are free
        self._used = 0  # slots [0, _used) have been handed out at least once

    def __len__(self) -> int:
        return self._index_keys.size

    @property
    def rows(self) -> np.ndarray:
        """Slots of the live voxels, in key order."""
        return self._index_rows

    @property
    def slots_used(self) -> int:
        """Slots [0, slots_used) have been handed out (live or free): whole-map passes read this prefix."""
        return self._used

    @property
    def nbytes(self) -> int:
        """Bytes held by the slot arrays and the index."""
        return sum(a.nbytes for a in self.slots.values()) + self._index_keys.nbytes + self._index_rows.nbytes

    def centres(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(n, 3) centres in the map frame of ``rows`` (default: every live voxel)."""
        rows = self.rows if rows is None else rows
        return centres(self.slots["keys"][rows], self.settings.voxel_size)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Slots of ``keys``; -1 where the map has no such voxel."""
        rows = np.full(keys.shape, -1, np.int64)
        position = np.searchsorted(self._index_keys, keys)
        inside = np.flatnonzero(position < self._index_keys.size)
        found = inside[self._index_keys[position[inside]] == keys[inside]]
        rows[found] = self._index_rows[position[found]]
        return rows

    def integrate(self, depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray, features: np.ndarray,
                  objectness: np.ndarray, colour: np.ndarray, grid: PatchGrid, stamp: float) -> None:
        """Fuse one frame: carve what it sees through, then add its voxels (see the module's docstring).

        ``depth_m`` (H, W) metres registered to ``camera``'s image (0 or NaN = none), ``pose`` the 4x4
        camera(optical)-to-map transform, ``features`` (E, h, w) and ``objectness`` (h, w) on ``grid``,
        ``colour`` (H, W, 3) uint8, ``stamp`` the frame's time in seconds."""
        pose = np.asarray(pose, dtype=np.float64)
        settings = self.settings
        frame = observe(depth_m, camera, pose, features, objectness, colour, grid, settings.voxel_size,
                        settings.max_depth_m)
        if frame.patch_features.shape[1] != settings.feature_dim:
            raise ValueError(f"features have {frame.patch_features.shape[1]} channels, the map {settings.feature_dim}")
        if settings.carve:
            self._carve(depth_m, camera, pose, frame.keys)
        self._merge(frame, pose[:3, 3], float(stamp))

    def remove(self, rows: np.ndarray) -> None:
        """Forget the voxels in slots ``rows``; their slots are reused."""
        if rows.size == 0:
            return
        gone = np.zeros(self.slots["keys"].shape[0], bool)
        gone[rows] = True
        keep = ~gone[self._index_rows]
        self._index_keys, self._index_rows = self._index_keys[keep], self._index_rows[keep]
        self._free = np.concatenate((self._free, rows))

    def rows_in_box(self, lowest: np.ndarray, highest: np.ndarray) -> np.ndarray:
        """Slots of the live voxels (key order) whose centres may lie in the axis-aligned box [``lowest``,
        ``highest``] (metres, map frame; a voxel more on each side): keys sort x first, so the box's x range
        is one stretch of the sorted index, filtered on y and z."""
        low = np.floor(np.asarray(lowest) / self.settings.voxel_size - 0.5).astype(np.int64)
        high = np.ceil(np.asarray(highest) / self.settings.voxel_size - 0.5).astype(np.int64)
        first, last = x_range(int(low[0]), int(high[0]))
        start = np.searchsorted(self._index_keys, first)
        stop = np.searchsorted(self._index_keys, last, side="right")
        coords = unpack(self._index_keys[start:stop])
        inside = np.all((coords[:, 1:] >= low[1:]) & (coords[:, 1:] <= high[1:]), axis=1)
        return self._index_rows[start:stop][inside]

    def _carve(self, depth_m: np.ndarray, camera: Intrinsics, pose: np.ndarray, hit_keys: np.ndarray) -> None:
        """Only the voxels in the box around what this frame can see through (up to its farthest depth) are
        projected: the cost follows the view, not the map's size."""
        settings = self.settings
        far = float(np.max(depth_m, where=(depth_m > 0) & (depth_m <= settings.max_depth_m), initial=0.0))
        rows = self.rows_in_box(*view_box(camera, pose, far))
        rows = rows[seen_through(self.centres(rows), depth_m, camera, pose, settings.max_depth_m,
                                 settings.carve_margin_m)]
        carved = rows[~np.isin(self.slots["keys"][rows], hit_keys, assume_unique=True)]  # a hit is not free
        weight = self.slots["weight"]
        remaining = weight[carved] - 1.0
        self.slots["pixels"][carved] *= np.maximum(remaining, 0.0) / weight[carved]
        weight[carved] = remaining
        self.remove(carved[remaining <= 0.0])

    def _merge(self, frame: FrameVoxels, camera_position: np.ndarray, stamp: float) -> None:
        keys = frame.keys
        rows = self.lookup(keys)
        new = np.flatnonzero(rows < 0)
        self._make_room(new.size, camera_position, protected=rows[rows >= 0])
        room = self.settings.budget - len(self)
        if new.size > room:  # the frame's own voxels alone pass the budget: keep its nearest new ones
            distance = np.linalg.norm(centres(keys[new], self.settings.voxel_size) - camera_position, axis=1)
            order = np.argsort(distance)
            rows[new[order[room:]]] = -2
            new = np.sort(new[order[:room]])
        rows[new] = self.add(keys[new])
        frame_index = np.flatnonzero(rows >= 0)
        rows = rows[frame_index]
        s = self.slots
        old = s["pixels"][rows].astype(np.float64)
        total = old + frame.pixels[frame_index]
        share = (old / total)[:, None]
        self._merge_features(frame, frame_index, rows, share[:, 0], total)
        s["objectness"][rows] = s["objectness"][rows] * share[:, 0] + frame.objectness_sums[frame_index] / total
        s["colour"][rows] = s["colour"][rows] * share + frame.colour_sums[frame_index] / total[:, None]
        s["pixels"][rows] = total
        s["weight"][rows] = np.minimum(s["weight"][rows] + 1.0, self.settings.max_weight)
        s["count"][rows] += 1
        s["last_seen"][rows] = stamp

    def _merge_features(self, frame: FrameVoxels, frame_index: np.ndarray, rows: np.ndarray, share: np.ndarray,
                        total: np.ndarray) -> None:
        """New mean = old mean * ``share`` + the frame's pixel-weighted patch features / ``total``, for the
        frame's voxels ``frame_index`` in slots ``rows``; MERGE_BLOCK voxels at a time, so that the float32
        work stays in the cache and the fp16 rows are converted at memory speed (mapping.half)."""
        features = self.slots["features"]
        inverse_total = np.zeros(frame.keys.size)
        inverse_total[frame_index] = 1.0 / total
        weights = (frame.pair_pixels * np.repeat(inverse_total, np.diff(frame.pair_bounds))).astype(np.float32)
        share = share.astype(np.float32)[:, None]
        for start in range(0, rows.size, MERGE_BLOCK):
            block = slice(start, start + MERGE_BLOCK)
            mean = to_float32(features[rows[block]])
            mean *= share[block]
            mean += frame.feature_sums(frame_index[block], weights)
            self.set_features(rows[block], mean)

    def set_features(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Store (n, E) ``values`` (float32 or float16) as the features of slots ``rows``, rounded to the map's
        feature dtype, and their norms, taken of the stored values: every writer of features goes through here."""
        features = self.slots["features"]
        for start in range(0, rows.size, MERGE_BLOCK):
            block = slice(start, start + MERGE_BLOCK)
            stored = to_float32(values[block])
            if features.dtype == np.float16:
                half = to_float16(stored)
                features[rows[block]] = half
                stored = to_float32(half)
            else:
                features[rows[block]] = stored
            self.slots["norm"][rows[block]] = np.maximum(row_norms(stored), MIN_NORM)

    def _make_room(self, incoming: int, camera_position: np.ndarray, protected: np.ndarray) -> None:
        """Evict so that ``incoming`` new voxels fit the budget (plus a slack), never the ``protected`` slots."""
        budget = self.settings.budget
        excess = len(self) + incoming - budget
        if excess <= 0:
            return
        candidates = np.setdiff1d(self.rows, protected, assume_unique=True)
        count = min(candidates.size, excess + int(EVICTION_SLACK * budget))
        distance = np.linalg.norm(self.centres(candidates) - camera_position, axis=1)
        if self.settings.eviction == "age":
            order = np.lexsort((-distance, self.slots["last_seen"][candidates]))
        else:
            order = np.argsort(-distance)
        self.remove(candidates[order[:count]])

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Slots for new, sorted ``keys`` (none in the map yet), zeroed and indexed; the caller keeps the budget."""
        reused, self._free = self._free[:keys.size], self._free[keys.size:]
        fresh = np.arange(self._used, self._used + keys.size - reused.size)
        self._used += fresh.size
        if self._used > self.slots["keys"].shape[0]:
            self._allocate(min(self.settings.budget, max(self._used, 2 * self.slots["keys"].shape[0])))
        rows = np.concatenate((reused, fresh))
        for name, array in self.slots.items():
            array[rows] = 0
        self.slots["norm"][rows] = MIN_NORM  # a zero feature until set_features: cosines 0, not NaN
        self.slots["keys"][rows] = keys
        position = np.searchsorted(self._index_keys, keys)
        self._index_keys = np.insert(self._index_keys, position, keys)
        self._index_rows = np.insert(self._index_rows, position, rows)
        return rows

    def _allocate(self, capacity: int) -> None:
        """Grow every slot array to ``capacity`` slots, keeping their contents."""
        for name, (dtype, tail) in SLOT_FIELDS.items():
            shape = (capacity, self.settings.feature_dim) if tail is None else (capacity, *tail)
            grown = np.zeros(shape, self.settings.feature_dtype if dtype is None else dtype)
            if name in self.slots:
                grown[:self.slots[name].shape[0]] = self.slots[name]
            self.slots[name] = grown


def row_norms(rows: np.ndarray) -> np.ndarray:
    """(n,) L2 norms of (n, E) float32 ``rows``: row-wise dots as a batched product, ~2x einsum's speed."""
    return np.sqrt(np.matmul(rows[:, None, :], rows[:, :, None]).reshape(-1))
