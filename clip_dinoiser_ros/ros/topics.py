"""Topic naming: outputs live next to the camera, under <camera namespace>/segmentation/."""
from __future__ import annotations

import re

COMPRESSED_SUFFIX = "/compressed"
OUTPUT_NAMESPACE = "segmentation"


def is_compressed(topic: str) -> bool:
    return topic.rstrip("/").endswith(COMPRESSED_SUFFIX)


def camera_namespace(topic: str) -> str:
    """``/front/image_raw`` and ``/front/image_raw/compressed`` -> ``/front``; ``/image_raw`` -> ``""``."""
    topic = topic.rstrip("/")
    if is_compressed(topic):
        topic = topic[: -len(COMPRESSED_SUFFIX)]
    return topic.rsplit("/", 1)[0] if "/" in topic else ""


def output_topic(input_topic: str, name: str) -> str:
    namespace = camera_namespace(input_topic)
    prefix = f"{namespace}/" if namespace else ("/" if input_topic.startswith("/") else "")
    return f"{prefix}{OUTPUT_NAMESPACE}/{name}"


def topic_token(name: str) -> str:
    """A class name as a legal topic name token: ``traffic light`` -> ``traffic_light``."""
    token = re.sub(r"[^a-z0-9_]+", "_", name.casefold()).strip("_")
    token = re.sub(r"_+", "_", token)
    if not token:
        return "class"
    return f"c_{token}" if token[0].isdigit() else token


def class_topic_tokens(names: tuple[str, ...]) -> tuple[str, ...]:
    """Tokens for every class, made unique by an index suffix when two names collapse to one token."""
    tokens = [topic_token(name) for name in names]
    return tuple(f"{t}_{i}" if tokens.count(t) > 1 else t for i, t in enumerate(tokens))
