"""The paper's eight benchmarks as data: layouts, class names (the prompts), label conventions.

``benchmarks.json`` holds the facts from the authors' evaluation configs and mmseg's dataset classes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from .labels import read_label_image

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Benchmark:
    name: str
    classes: tuple[str, ...]
    paper_miou: float
    background_filtering: bool
    data_root: str
    img_dir: str
    ann_dir: str
    split: Optional[str]
    img_suffix: str
    seg_map_suffix: str
    reduce_zero_label: bool


@lru_cache(maxsize=1)
def _facts() -> dict:
    return json.loads(Path(__file__).with_name("benchmarks.json").read_text())


def protocol() -> dict:
    return _facts()["protocol"]


def benchmarks() -> dict[str, Benchmark]:
    fields = Benchmark.__dataclass_fields__
    return {name: Benchmark(name=name, **{k: (tuple(v) if k == "classes" else v) for k, v in spec.items()
                                          if k in fields})
            for name, spec in _facts()["datasets"].items()}


def samples(benchmark: Benchmark, root: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs in a stable order: the split file's order, else sorted names (as mmseg scans)."""
    base = root / benchmark.data_root
    images, labels = base / benchmark.img_dir, base / benchmark.ann_dir
    if benchmark.split:
        split = base / benchmark.split
        if not split.is_file():
            raise FileNotFoundError(f"{split}: the {benchmark.name} split file is missing (see README, Reproduce Table 1)")
        stems = [line.strip() for line in split.read_text().splitlines() if line.strip()]
    else:
        if not images.is_dir():
            raise FileNotFoundError(f"{images}: the {benchmark.name} images are missing (see README, Reproduce Table 1)")
        stems = sorted(str(p.relative_to(images))[: -len(benchmark.img_suffix)]
                       for p in images.rglob(f"*{benchmark.img_suffix}"))
    pairs = [(images / f"{stem}{benchmark.img_suffix}", labels / f"{stem}{benchmark.seg_map_suffix}") for stem in stems]
    missing = [str(path) for pair in pairs for path in pair if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files of {benchmark.name} are missing, first: {missing[0]}")
    return pairs


def read_ground_truth(path: Path, reduce_zero_label: bool) -> np.ndarray:
    """Labels as mmseg reads them: with reduce_zero_label, 0 (unlabelled) becomes 255 and the others shift down."""
    labels = read_label_image(path, ("L", "P"))
    if reduce_zero_label:
        labels[labels == 0] = IGNORE_INDEX
        labels = labels - 1
        labels[labels == IGNORE_INDEX - 1] = IGNORE_INDEX
    return labels
