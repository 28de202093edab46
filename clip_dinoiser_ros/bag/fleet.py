"""Many bags in one run: finding them, sharing them between processes, and remembering finished outputs.

An input names a bag (a rosbag2 folder or a ROS 1 ``.bag``), a folder holding bags at any depth, or a glob.
Each bag keeps the name it has under the input it was found in, and its output gets that name under
``--out``. Processes (torchrun's ranks) take whole bags, balanced by frame count. A finished output bag
is recorded beside it with everything that made it; ``--resume`` skips it only when all of that is the same.
"""
from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..atomic_file import atomic_write
from .errors import BagError

RECORD_SUFFIX = ".done.json"
GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class BagInput:
    path: Path
    name: Path  # relative: the output's name under --out


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix == ".bag")


def _bags_under(folder: Path) -> list[Path]:
    """Every bag below ``folder``; a bag's own folder is not searched further."""
    found, pending = [], [folder]
    while pending:
        current = pending.pop()
        for child in sorted(current.iterdir(), reverse=True):
            if is_bag(child):
                found.append(child)
            elif child.is_dir():
                pending.append(child)
    return sorted(found)


def find_bags(inputs: Sequence[str]) -> list[BagInput]:
    """The bags the inputs name, in order; a BagError when one names none or two outputs would collide."""
    bags: list[BagInput] = []
    for text in inputs:
        paths = [Path(match) for match in sorted(glob.glob(text))] if GLOB_CHARACTERS & set(text) else [Path(text)]
        found = []
        for path in paths:
            if is_bag(path):
                found.append(BagInput(path, Path(path.name)))
            elif path.is_dir():
                found += [BagInput(bag, bag.relative_to(path)) for bag in _bags_under(path)]
        if not found:
            raise BagError(f"{text}: no bag there (a rosbag2 folder with metadata.yaml, a ROS 1 .bag, a folder "
                           "holding such bags, or a glob matching them)")
        bags += found
    names = [bag.name for bag in bags]
    clashes = sorted({str(name) for name in names if names.count(name) > 1})
    if clashes:
        raise BagError(f"several inputs are named {', '.join(clashes)}: their outputs would overwrite each other")
    return bags


def single_bag(inputs: Sequence[str]) -> bool:
    """One input naming one bag directly: then --out is that bag's output itself, not a folder of outputs."""
    return len(inputs) == 1 and not GLOB_CHARACTERS & set(inputs[0]) and is_bag(Path(inputs[0]))


def shard(bags: Sequence[BagInput], frames: Sequence[int], world: int, rank: int) -> list[BagInput]:
    """This process's whole bags: the largest first, each to the least-loaded process (ties: lowest rank)."""
    loads = [0] * world
    owner: dict[int, int] = {}
    for index in sorted(range(len(bags)), key=lambda i: (-frames[i], i)):
        process = min(range(world), key=lambda r: (loads[r], r))
        owner[index] = process
        loads[process] += frames[index]
    return [bag for index, bag in enumerate(bags) if owner[index] == rank]


def input_identity(path: Path) -> dict[str, Any]:
    """The input bag's files by size and modification time: a re-recorded bag is another input."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(path) if path.is_dir() else p.name): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in files}


def record_path(output: Path) -> Path:
    return output.parent / (output.name + RECORD_SUFFIX)


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def finished(output: Path, settings: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The record of ``output`` when it was finished with exactly ``settings``; None otherwise."""
    try:
        record = json.loads(record_path(output).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != settings_key(settings) or not is_bag(output):
        return None
    return record


def record_finished(output: Path, settings: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Written after the output bag is closed: a bag without it (Ctrl-C, a crash) is redone by --resume."""
    content = {"key": settings_key(settings), "settings": dict(settings), **result}
    with atomic_write(record_path(output)) as sink:
        sink.write((json.dumps(content, indent=2, sort_keys=True, default=str) + "\n").encode())


def forget(output: Path) -> None:
    record_path(output).unlink(missing_ok=True)
