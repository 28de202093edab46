"""Topic naming: outputs live next to the camera, under <camera namespace>/segmentation/."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

COMPRESSED_SUFFIX = "/compressed"
OUTPUT_NAMESPACE = "segmentation"
OUTPUTS = ("mask", "confidence", "class_confidences", "overlay", "label_info")


class TopicPlanError(ValueError):
    """The cameras' topics cannot all be created: the reason names the topics involved."""


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


@dataclass(frozen=True)
class CameraTopics:
    """One camera's input and output topic names, as the node passes them to rclpy."""

    input: str
    outputs: dict[str, str]


def plan_cameras(image_topics: Sequence[str], resolve: Callable[[str], str]) -> list[CameraTopics]:
    """Every camera's topics, checked before anything is created (activation is all or nothing).

    ``resolve`` expands and remaps a name as the node will (``Node.resolve_topic_name``), so names
    that only break after expansion (an unknown ``{substitution}``) and cameras whose outputs only meet
    after remapping or namespacing are caught too. Raises TopicPlanError with the reason.
    """
    plans = [CameraTopics(topic, {name: output_topic(topic, name) for name in OUTPUTS}) for topic in image_topics]
    owners: dict[str, str] = {}
    for plan in plans:
        for role, name in [("input", plan.input), *plan.outputs.items()]:
            try:
                resolved = resolve(name)
            except (RuntimeError, ValueError) as error:
                reason = str(error).splitlines()[0].removeprefix("failed to resolve name: ").split(", at /")[0]
                raise TopicPlanError(f"image_topics: {plan.input!r} gives the {role} topic {name!r}, "
                                     f"which is not a valid topic name: {reason}") from error
            if resolved in owners and owners[resolved] != plan.input:
                raise TopicPlanError(
                    f"image_topics: {owners[resolved]!r} and {plan.input!r} would both use {resolved}; "
                    f"outputs go to <camera namespace>/{OUTPUT_NAMESPACE}/, so give each camera its own namespace"
                )
            owners[resolved] = plan.input
    return plans
