"""Every parameter of the node, declared in one place: default, description, range, when it applies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..model.engine import BACKGROUND_SETTINGS

LIVE = "live"  # applied to the next frame
REACTIVATE = "reactivate"  # applied on the next activate (deactivate -> activate)
RECONFIGURE = "reconfigure"  # the model is rebuilt on the next configure (cleanup -> configure)


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    applies: str
    choices: tuple[str, ...] = ()
    int_range: Optional[tuple[int, int]] = None
    float_range: Optional[tuple[float, float]] = None

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description)
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.int_range:
            descriptor.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1])]
        if self.float_range:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1])
            ]
        descriptor.additional_constraints += f" (applies: {self.applies})".strip()
        return descriptor


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("image_topics", ["/camera/image_raw"],
                  "Input image topics; a name ending in /compressed is read as sensor_msgs/CompressedImage",
                  REACTIVATE),
    ParameterSpec("input_reliability", "best_effort", "QoS reliability of the image subscriptions", REACTIVATE,
                  choices=("best_effort", "reliable")),
    ParameterSpec("prompts", ["floor", "wall", "person", "chair|seat", "table"],
                  "Class prompts; 'a|b' lists synonyms of one class named 'a'", LIVE),
    ParameterSpec("max_prompts", 100, "Largest accepted prompt list", LIVE, int_range=(1, 1000)),
    ParameterSpec("max_prompt_length", 200, "Longest accepted prompt, in characters", LIVE, int_range=(1, 1000)),
    ParameterSpec("max_rate_hz", 0.0, "Per-camera processing rate limit; 0 = as fast as possible", LIVE,
                  float_range=(0.0, 1000.0)),
    ParameterSpec("max_image_pixels", 16_777_216, "Larger input frames are rejected with a warning", LIVE,
                  int_range=(1, 1 << 30)),
    ParameterSpec("mode", "whole", "whole: one pass over the resized image; slide: the paper's 448/224 windows",
                  LIVE, choices=("whole", "slide")),
    ParameterSpec("short_side", 448, "Frames are resized so their short side has this many pixels", LIVE,
                  int_range=(16, 4096)),
    ParameterSpec("background", "auto", "Background filtering: auto = when prompt 0 is 'background'", LIVE,
                  choices=tuple(BACKGROUND_SETTINGS)),
    ParameterSpec("gamma", 0.2, "Correlations below gamma are ignored by the guided pooling", LIVE,
                  float_range=(-1.0, 1.0)),
    ParameterSpec("delta", 0.99, "Background filtering: patches less confident than delta may become background",
                  LIVE, float_range=(0.0, 1.0)),
    ParameterSpec("confidence_threshold", 0.0, "Mask pixels below this winning probability are unlabelled", LIVE,
                  float_range=(0.0, 1.0)),
    ParameterSpec("device", "auto", "auto (cuda when available), cpu, cuda or cuda:N", RECONFIGURE),
    ParameterSpec("precision", "auto", "auto = fp16 on CUDA, fp32 on CPU", RECONFIGURE,
                  choices=("auto", "fp32", "fp16", "bf16")),
    ParameterSpec("clip_model", "ViT-B-16", "open_clip model name", RECONFIGURE),
    ParameterSpec("clip_pretrained", "laion2b_s34b_b88k", "open_clip pretrained tag or path to a weights file",
                  RECONFIGURE),
    ParameterSpec("heads", "", "Path to the CLIP-DINOiser heads checkpoint (checkpoints/last.pt)", RECONFIGURE),
    ParameterSpec("templates", "imagenet", "Prompt template set: imagenet (80 templates), simple, none",
                  RECONFIGURE, choices=("imagenet", "simple", "none")),
    ParameterSpec("random_weights", False,
                  "Random CLIP and heads: plumbing and timing only, outputs are NOT segmentations", RECONFIGURE),
    ParameterSpec("autostart", True, "Configure and activate at start-up", RECONFIGURE),
)

SPECS = {spec.name: spec for spec in PARAMETERS}


def check_value(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for ``name`` (choices not covered by ROS ranges), or None."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    if name == "device" and not (value in ("auto", "cpu", "cuda") or str(value).startswith("cuda:")):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    if name == "image_topics" and (not value or not all(str(t).strip() for t in value)):
        return "image_topics must list at least one non-empty topic"
    return None
