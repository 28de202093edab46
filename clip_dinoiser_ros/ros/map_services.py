"""The mapping node's ~/query, ~/save and ~/load: each answers with success and a message that says what was
done or why not (a missing encoder, an empty map, a file that is not a map)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..mapping import load_map, query, save_map
from ..mapping.clusters import clusters
from ..model.vocabulary import BACKGROUND_PROMPT
from ..pipeline.map_messages import cluster_detections, no_detection
from ..srv import MapFile, QueryMap
from .text_client import TextsRefused

if TYPE_CHECKING:
    from .mapping_node import MappingNode


def _refuse(response, message: str):
    response.success, response.message = False, message
    return response


async def answer_query(node: MappingNode, request: QueryMap.Request, response: QueryMap.Response) -> QueryMap.Response:
    """Per text, its clusters (Detection3DArray, best first) and the best one; a voxel counts where the
    text wins the softmax over the texts (and background) with at least ``min_score``."""
    texts = [text.strip() for text in request.texts]
    if not texts or not all(texts):
        return _refuse(response, f"texts must be a non-empty list of non-blank texts, got {list(request.texts)}")
    offset = 1 if request.with_background else 0
    try:
        embeddings = await node.text_client.embeddings([BACKGROUND_PROMPT] * offset + texts,
                                                       node.param("encode_timeout_s"))
    except TextsRefused as error:
        return _refuse(response, f"query refused: {error}")
    voxel_map, header = node.voxel_map, node.header()
    found = [[] for _ in texts]
    if voxel_map is not None and len(voxel_map):
        try:
            answer = query(voxel_map, embeddings, 0 if offset else None, node.param("delta"))
        except ValueError as error:
            return _refuse(response, f"query refused: {error}")
        keys = voxel_map.slots["keys"][voxel_map.rows]
        for index in range(len(texts)):
            where = (answer.labels == index + offset) & (answer.scores >= request.min_score)
            found[index] = clusters(keys[where], answer.scores[where], voxel_map.settings.voxel_size,
                                    node.param("min_cluster_voxels"))
    for text, text_clusters in zip(texts, found):
        detections = cluster_detections(text_clusters, text, header)
        response.detections.append(detections)
        response.best.append(detections.detections[0] if detections.detections else no_detection(text, header))
    voxels = 0 if voxel_map is None else len(voxel_map)
    response.success = True
    response.message = (f"{voxels} voxels: " + ", ".join(f"{text} {len(c)} places" for text, c in zip(texts, found))
                        if voxels else "the map is empty: no frame integrated or loaded yet")
    return response


def _path(node: MappingNode, request: MapFile.Request) -> Path:
    return Path(request.path or node.param("map_file")).expanduser()


def save_from(node: MappingNode, request: MapFile.Request, response: MapFile.Response) -> MapFile.Response:
    voxel_map = node.voxel_map
    if voxel_map is None:
        return _refuse(response, "nothing to save: the map is empty (no frame integrated or loaded yet)")
    path = _path(node, request)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_map(voxel_map, path)
    except OSError as error:
        return _refuse(response, f"cannot save to {path}: {error}")
    response.success, response.message = True, f"saved {len(voxel_map)} voxels to {path}"
    return response


def load_into(node: MappingNode, request: MapFile.Request, response: MapFile.Response) -> MapFile.Response:
    """Replace the map with the file's (its own settings: voxel size, budget, ... as saved)."""
    path = _path(node, request)
    try:
        voxel_map = load_map(path)
    except ValueError as error:
        return _refuse(response, f"cannot load: {error}")
    node.replace_map(voxel_map)
    response.success = True
    response.message = f"loaded {len(voxel_map)} voxels from {path} ({voxel_map.settings.voxel_size} m voxels)"
    return response
