"""A whole map in one .npz file: its settings and every live voxel's fields, written atomically."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Union

import numpy as np

from ..atomic_file import atomic_write, remove_abandoned
from .voxel_map import DERIVED_FIELDS, SLOT_FIELDS, MapSettings, VoxelMap

FORMAT = "clip_dinoiser_ros voxel map 1"
SAVED_FIELDS = tuple(name for name in SLOT_FIELDS if name not in DERIVED_FIELDS)


def save_map(voxel_map: VoxelMap, path: Union[str, Path]) -> None:
    """Write the live voxels (key order) and the settings to ``path`` (.npz, uncompressed: fp16 features do
    not compress); a reader never sees half a file."""
    rows = voxel_map.rows
    fields = {name: voxel_map.slots[name][rows] for name in SAVED_FIELDS}
    header = json.dumps({"format": FORMAT, "settings": asdict(voxel_map.settings)})
    remove_abandoned(Path(path))  # earlier saves killed outright: a map can be ~500 MB
    with atomic_write(Path(path)) as sink:
        np.savez(sink, header=np.array(header), **fields)


def load_map(path: Union[str, Path]) -> VoxelMap:
    """The map ``save_map`` wrote; ValueError for a file that is not one."""
    try:
        with np.load(path, allow_pickle=False) as content:
            header = json.loads(str(content["header"]))
            fields = {name: content[name] for name in SAVED_FIELDS}
    except (KeyError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a saved voxel map: {error}") from error
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} holds {header.get('format')!r}, expected {FORMAT!r}")
    voxel_map = VoxelMap(MapSettings(**header["settings"]))
    rows = voxel_map.add(fields["keys"])
    for name, values in fields.items():
        if name == "features":
            voxel_map.set_features(rows, values)
        else:
            voxel_map.slots[name][rows] = values
    return voxel_map
