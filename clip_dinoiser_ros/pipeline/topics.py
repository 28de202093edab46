"""Topic naming: outputs live next to the camera, under <camera namespace>/segmentation/."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

COMPRESSED_SUFFIX = "/compressed"
OUTPUT_NAMESPACE = "segmentation"
OUTPUTS = ("mask", "confidence", "class_confidences", "overlay", "label_info", "camera_info", "detections",
           "features")
DEPTH_OUTPUTS = ("points", "detections_3d")  # only for a camera with depth


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


def camera_info_topic(image_topic: str) -> str:
    """The sibling camera_info, as image_transport names it: ``/front/image_raw`` -> ``/front/camera_info``."""
    namespace = camera_namespace(image_topic)
    return f"{namespace}/camera_info" if namespace else ("/camera_info" if image_topic.startswith("/") else "camera_info")


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
    camera_info: str = ""
    depth: str = ""  # "" = no depth camera


def per_camera(name: str, values: Sequence[str], cameras: int) -> list[str]:
    """``values`` for each camera: one entry per image topic, or a single "" for the default of all."""
    if list(values) == [""] or not values:
        return [""] * cameras
    if len(values) != cameras:
        raise TopicPlanError(f"{name} has {len(values)} entries for {cameras} image_topics: give one per image "
                             f"topic, in the same order (\"\" for the default), or [''] for all")
    return list(values)


def plan_cameras(image_topics: Sequence[str], resolve: Callable[[str], str], depth_topics: Sequence[str] = ("",),
                 camera_info_topics: Sequence[str] = ("",)) -> list[CameraTopics]:
    """Every camera's topics, checked before anything is created (activation is all or nothing).

    ``resolve`` expands and remaps a name as the node will (``Node.resolve_topic_name``), so names
    that only break after expansion (an unknown ``{substitution}``) and cameras whose outputs only meet
    after remapping or namespacing are caught too. Raises TopicPlanError with the reason.
    """
    depths = per_camera("depth_topics", depth_topics, len(image_topics))
    infos = per_camera("camera_info_topics", camera_info_topics, len(image_topics))
    plans = [CameraTopics(topic, {name: output_topic(topic, name)
                                  for name in (*OUTPUTS, *(DEPTH_OUTPUTS if depth else ()))},
                          info or camera_info_topic(topic), depth)
             for topic, depth, info in zip(image_topics, depths, infos)]
    owners: dict[str, str] = {}
    for plan in plans:
        depth = [("depth", plan.depth)] if plan.depth else []
        for role, name in [("input", plan.input), *plan.outputs.items(), *depth, ("camera_info", plan.camera_info)]:
            try:
                resolved = resolve(name)
            except (RuntimeError, ValueError) as error:
                reason = str(error).splitlines()[0].removeprefix("failed to resolve name: ").split(", at /")[0]
                raise TopicPlanError(f"image_topics: {plan.input!r} gives the {role} topic {name!r}, "
                                     f"which is not a valid topic name: {reason}") from error
            if resolved in owners and owners[resolved] != plan.input:
                raise TopicPlanError(
                    f"image_topics: {owners[resolved]!r} and {plan.input!r} would both use {resolved} (as its {role}); "
                    f"outputs go to <camera namespace>/{OUTPUT_NAMESPACE}/ and camera_info next to the image, so give "
                    "each camera its own namespace and depth topic"
                )
            owners[resolved] = plan.input
    return plans
