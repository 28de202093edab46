"""How likely each place of a map is one of the keep-out texts ("stairs|wet floor"), seen from above.

The texts compete with the node's prompts: the softmax runs over the prompts plus the keep-out texts that
are not prompts already (one competitor per class name), so "stairs" scores high only where it beats
"floor", "wall", ... as the cloud's labels do. A voxel's keep-out value is the summed probability of the
keep-out texts; a ground cell's is the largest over its column (projection.project_max).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..model.vocabulary import parse_prompt
from .projection import GroundProjection, project_max
from .query import query
from .voxel_map import VoxelMap

KEEPOUT_SEPARATOR = "|"


def keepout_texts(keepout: str) -> list[str]:
    """``"stairs|wet floor"`` -> ``["stairs", "wet floor"]``; ValueError for an empty part; "" -> []."""
    if not keepout.strip():
        return []
    texts = [part.strip() for part in keepout.split(KEEPOUT_SEPARATOR)]
    if not all(texts):
        raise ValueError(f"keep-out query {keepout!r} has an empty text (texts are separated by '|')")
    return texts


def competing_texts(prompts: Sequence[str], keepout: Sequence[str]) -> tuple[list[str], list[int]]:
    """The texts of the softmax (the prompts, then the keep-out texts no prompt names) and the indices of
    the keep-out texts among them (a keep-out text that names a prompt's class is that prompt)."""
    texts = list(prompts)
    names = [parse_prompt(prompt).name.casefold() for prompt in prompts]
    indices = []
    for text in keepout:
        name = text.casefold()
        if name not in names:
            texts.append(text)
            names.append(name)
        indices.append(names.index(name))
    return texts, sorted(set(indices))


def keepout_projection(voxel_map: VoxelMap, embeddings: np.ndarray, keepout_indices: Sequence[int],
                       background_index: Optional[int] = None) -> GroundProjection:
    """Per ground cell, the largest summed probability of the texts ``keepout_indices`` (0..1)."""
    answer = query(voxel_map, embeddings, background_index)
    value = answer.probs[:, list(keepout_indices)].sum(axis=1)
    return project_max(voxel_map.slots["keys"][voxel_map.rows], value, voxel_map.settings.voxel_size)
