"""Every parameter of the node, declared in one place, and the one validation every value goes through.

A value may come from a params file, ``-p``, a launch argument (forwarded as ``-p``), ``ros2 param set``
or the ``~/set_prompts`` service: all of them end in ``refusals``. The parameters are declared with
dynamic typing so that rclpy itself refuses nothing; these rules own every message, which names the
parameter, the value and what is allowed.

No torch here on purpose: the launch file imports this module, and the node checks its start-up values
before the model libraries load, so a typo is reported in well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from rcl_interfaces.msg import ParameterDescriptor

from ..model.choices import BACKENDS, DEFAULT_MODEL, DEFAULT_PRETRAINED, MODES, PRECISIONS
from ..model.heads_download import PUBLISHED
from ..model.onnx_providers import SYNTAX as PROVIDER_OPTIONS_SYNTAX, provider_options_problem
from ..model.vocabulary import BACKGROUND_SETTINGS, parse_prompts

LIVE = "live"  # applied to the next frame
REACTIVATE = "reactivate"  # applied on the next activate (deactivate -> activate)
RECONFIGURE = "reconfigure"  # the model is rebuilt on the next configure (cleanup -> configure)
START = "start"  # read once, when the process starts: a run-time change is refused (it would do nothing)

Check = Callable[[Any], Optional[str]]  # why a (well-typed) value is wrong, or None


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "double"
    if isinstance(default, str):
        return "string"
    return "string array"


def _has_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "double":  # 5 in a params file means 5.0: accepted for doubles
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def _with_article(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _kind_in_words(value: Any) -> str:
    """A value's ROS parameter type, as a user reads it in a refusal."""
    if isinstance(value, (list, tuple)):
        return f"a list of {type(value[0]).__name__} values" if value else "an empty list"
    return _with_article(_kind(value)) if isinstance(value, (bool, int, float, str)) else type(value).__name__


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    applies: str
    choices: tuple[str, ...] = ()
    value_range: Optional[tuple[float, float]] = None
    check: Optional[Check] = None
    rule: str = ""  # what ``check`` allows, in words

    @property
    def kind(self) -> str:
        return _kind(self.default)

    def allowed(self) -> str:
        """What this parameter accepts, in the words every refusal and the README use."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.value_range:
            low, high = self.value_range
            return f"{'an integer' if self.kind == 'integer' else 'a number'} in {low}..{high}"
        if self.rule:
            return self.rule
        return {"bool": "true or false", "string": "a string", "string array": "a list of strings"}[self.kind]

    def descriptor(self) -> ParameterDescriptor:
        return ParameterDescriptor(
            description=self.description,
            additional_constraints=f"{self.allowed()} (applies: {self.applies})",
            dynamic_typing=True,
        )

    def normalise(self, value: Any) -> Any:
        """The value as the node uses it (an integer given for a double becomes a float)."""
        if self.kind == "double":
            return float(value)
        if self.kind == "string array":
            return list(value)
        return value

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is refused (parameter, value and what is allowed), or None."""
        detail = None
        if not _has_kind(value, self.kind):
            detail = f"it is {_kind_in_words(value)}, not {_with_article(self.kind)}"
        elif self.choices and value not in self.choices:
            detail = ""
        elif self.value_range and not self.value_range[0] <= value <= self.value_range[1]:
            detail = "out of range"
        elif self.check:
            detail = self.check(value)
        if detail is None:
            return None
        if value is None:  # rcl gives an empty YAML list no type, so it arrives as "not set"
            shown, detail = "an empty value ([] or nothing)", ""
        else:
            shown = repr(list(value) if isinstance(value, tuple) else value)
        return f"{self.name}: {shown} is refused{': ' + detail if detail else ''}; allowed: {self.allowed()}"


def _topic_list_problem(topics: list[str]) -> Optional[str]:
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    if not topics:
        return "the list is empty"
    for topic in topics:
        try:
            validate_topic_name(topic)
        except InvalidTopicNameException as error:
            return f"{topic!r} is not a valid topic name ({str(error).splitlines()[0].rstrip(':')})"
    repeated = sorted({t for t in topics if topics.count(t) > 1})
    if repeated:
        return f"{', '.join(repeated)} listed twice"
    return None


def _optional_topics_problem(topics: list[str]) -> Optional[str]:
    """Entries are topic names or "" (the camera's default); the count is checked against image_topics at activate."""
    named = [topic for topic in topics if topic]
    return _topic_list_problem(named) if named else (None if topics else "the list is empty")


def _device_problem(device: str) -> Optional[str]:
    if device in ("auto", "cpu", "cuda"):
        return None
    index = device[len("cuda:"):] if device.startswith("cuda:") else ""
    return None if index.isdigit() else ""


def _prompts_problem(prompts: list[str]) -> Optional[str]:
    """Form only; the limits (max_prompts, max_prompt_length) are checked in ``refusals``."""
    try:
        parse_prompts(prompts, max_prompts=len(prompts) or 1, max_length=max(map(len, prompts), default=1))
    except ValueError as error:
        return str(error)
    return None


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("image_topics", ["/camera/image_raw"],
                  "Input image topics; a name ending in /compressed is read as sensor_msgs/CompressedImage",
                  REACTIVATE, check=_topic_list_problem, rule="a non-empty list of distinct topic names"),
    ParameterSpec("input_reliability", "best_effort",
                  "QoS reliability of every input subscription (images, depth, camera_info), set at each activate; "
                  "not a qos_overrides policy of the inputs", REACTIVATE, choices=("best_effort", "reliable")),
    ParameterSpec("depth_topics", [""],
                  "Depth images registered to each colour camera (16UC1 in depth_scale units, millimetres by "
                  "default, or 32FC1 metres), one entry per "
                  "image_topics entry, '' for none: the camera then publishes segmentation/points and detections_3d",
                  REACTIVATE, check=_optional_topics_problem,
                  rule="one topic name or '' per image_topics entry, or [''] for no depth at all"),
    ParameterSpec("camera_info_topics", [""],
                  "camera_info of each colour camera, one entry per image_topics entry; '' = the image topic's "
                  "sibling <namespace>/camera_info, as image_transport names it", REACTIVATE,
                  check=_optional_topics_problem,
                  rule="one topic name or '' per image_topics entry, or [''] for the siblings of all"),
    ParameterSpec("sync", "exact", "How colour, depth and camera_info are paired: identical stamps, or within "
                  "sync_slop_s (approximate)", REACTIVATE, choices=("exact", "approximate")),
    ParameterSpec("sync_slop_s", 0.02, "approximate sync: the largest stamp difference of a pair, in seconds",
                  REACTIVATE, value_range=(0.0, 1.0)),
    ParameterSpec("sync_wait_s", 0.1, "How long a colour frame of a depth camera waits for its depth and "
                  "camera_info, counted from the first frame still unpaired; then it is segmented alone",
                  REACTIVATE, value_range=(0.0, 10.0)),
    ParameterSpec("sync_queue_size", 10, "Messages message_filters keeps per input (colour, depth, camera_info) "
                  "while a pair is incomplete, as depth_image_proc's queue_size", REACTIVATE, value_range=(1, 1000)),
    ParameterSpec("depth_scale", 0.001, "Metres per unit of 16UC1 depth: 0.001 = millimetres (REP 118), 0.0002 "
                  "for 5000 units per metre; 32FC1 depth is metres whatever this says", LIVE,
                  value_range=(1e-06, 1.0)),
    ParameterSpec("max_depth_m", 10.0, "Points farther than this are NaN in segmentation/points", LIVE,
                  value_range=(0.0, 1000.0)),
    ParameterSpec("min_object_pixels", 50, "Smallest connected region of a class reported in segmentation/detections",
                  LIVE, value_range=(1, 1 << 24)),
    ParameterSpec("max_prompts", 100, "Largest accepted prompt list", LIVE, value_range=(1, 1000)),
    ParameterSpec("max_prompt_length", 200, "Longest accepted prompt, in characters", LIVE, value_range=(1, 1000)),
    ParameterSpec("prompts", ["floor", "wall", "person", "chair|seat", "table"],
                  "Class prompts; 'a|b' lists synonyms of one class named 'a'", LIVE, check=_prompts_problem,
                  rule="a non-empty list of distinct, non-blank prompts within max_prompts and max_prompt_length"),
    ParameterSpec("max_rate_hz", 0.0, "Per-camera processing rate limit; 0 = as fast as possible", LIVE,
                  value_range=(0.0, 1000.0)),
    ParameterSpec("max_image_pixels", 16_777_216, "Larger input frames are rejected with a warning", LIVE,
                  value_range=(1, 1 << 30)),
    ParameterSpec("mode", MODES[0], "whole: one pass over the resized image; slide: the paper's 448/224 windows",
                  LIVE, choices=MODES),
    ParameterSpec("batch_cameras", "auto", "Frames waiting on several cameras share one pass (whole mode): "
                  "auto = on CUDA only (on the CPU it measured no faster), on, off", LIVE,
                  choices=("auto", "on", "off")),
    ParameterSpec("short_side", 448, "Frames are resized (cv2, uint8) so their short side has this many "
                  "pixels, the long side at most 2048/448 times that", LIVE, value_range=(16, 4096)),
    ParameterSpec("background", "auto", "Background filtering: auto = when prompt 0 is 'background'", LIVE,
                  choices=tuple(BACKGROUND_SETTINGS)),
    ParameterSpec("gamma", 0.2, "Correlations below gamma are ignored by the guided pooling", LIVE,
                  value_range=(-1.0, 1.0)),
    ParameterSpec("delta", 0.99, "Background filtering: patches less confident than delta may become background",
                  LIVE, value_range=(0.0, 1.0)),
    ParameterSpec("confidence_threshold", 0.0,
                  "Mask pixels below this winning probability are unlabelled (255); also sent in label_info", LIVE,
                  value_range=(0.0, 1.0)),
    ParameterSpec("confidence_encoding", "32FC1",
                  "Encoding of the confidence image: 32FC1 = probability 0..1; mono8 = round(255 * probability), "
                  "as Nav2's semantic segmentation layer reads it", LIVE, choices=("32FC1", "mono8")),
    ParameterSpec("device", "auto", "Where the model runs (auto = cuda when available)", RECONFIGURE,
                  check=_device_problem, rule="auto, cpu, cuda or cuda:N"),
    ParameterSpec("precision", "auto", "ViT and heads; auto = fp16 on CUDA, bf16 on CPUs with native bf16 "
                  "(avx512_bf16, AMX), fp32 elsewhere; bf16 on other CPUs and fp16 on any CPU are refused",
                  RECONFIGURE, choices=PRECISIONS),
    ParameterSpec("clip_model", DEFAULT_MODEL, "open_clip model name (checked when the model loads)", RECONFIGURE),
    ParameterSpec("clip_pretrained", DEFAULT_PRETRAINED,
                  "open_clip pretrained tag or path to a weights file (checked when the model loads)", RECONFIGURE),
    ParameterSpec("heads", PUBLISHED,
                  "CLIP-DINOiser heads: 'published' (the paper's checkpoint, downloaded once and cached), "
                  "a local checkpoint file or an http(s) URL", RECONFIGURE),
    ParameterSpec("templates", "imagenet", "Prompt template set: imagenet (80 templates), simple, none",
                  RECONFIGURE, choices=("imagenet", "simple", "none")),
    ParameterSpec("random_weights", False,
                  "Random CLIP and heads: plumbing and timing only, outputs are NOT segmentations", RECONFIGURE),
    ParameterSpec("backend", "torch", "What runs the per-frame graph: torch, or onnxruntime (fp32; an ONNX export "
                  "per input size, made on first use and cached; TensorRT, then CUDA, then the CPU)", RECONFIGURE,
                  choices=BACKENDS),
    ParameterSpec("embedding_cache", True,
                  "Keep class embeddings in the user cache ($XDG_CACHE_HOME/clip_dinoiser_ros): a restart with "
                  "known prompts encodes nothing", RECONFIGURE),
    ParameterSpec("autostart", True, "Configure and activate at start-up (read at start only: a run-time change "
                  "is refused)", START),
    ParameterSpec("onnx_provider_options", "",
                  "backend onnxruntime: TensorRT/CUDA options as key=value,... (fp16, engine_cache, timing_cache: "
                  "true/false, default true; device_id: default the engine's CUDA device); '' = the defaults",
                  RECONFIGURE, check=provider_options_problem, rule=PROVIDER_OPTIONS_SYNTAX),
)

SPECS = {spec.name: spec for spec in PARAMETERS}
PROMPT_LIMITS = ("prompts", "max_prompts", "max_prompt_length")


def refusals(changes: Mapping[str, Any], current: Mapping[str, Any],
             specs: Mapping[str, ParameterSpec] = SPECS) -> dict[str, str]:
    """Why each of ``changes`` is refused, given the ``current`` values of the others (empty: accepted).

    Names this node does not declare (``use_sim_time``, ...) are left to rclpy. ``specs``: the node's
    table (the mapping node has its own); the prompt limits are checked where the table has them.
    """
    found = {name: reason for name, value in changes.items()
             if name in specs and (reason := specs[name].problem(value))}
    if all(name in specs for name in PROMPT_LIMITS) and any(name in changes for name in PROMPT_LIMITS) \
            and not any(name in found for name in PROMPT_LIMITS):
        values = {name: changes.get(name, current.get(name, specs[name].default)) for name in PROMPT_LIMITS}
        try:
            parse_prompts(values["prompts"], max_prompts=values["max_prompts"], max_length=values["max_prompt_length"])
        except ValueError as error:
            blamed = next(name for name in PROMPT_LIMITS if name in changes)
            found[blamed] = f"{blamed}: {changes[blamed]!r} is refused: {error}; allowed: {specs[blamed].allowed()}"
    return found


def run_time_refusals(changes: Mapping[str, Any], current: Mapping[str, Any],
                      specs: Mapping[str, ParameterSpec] = SPECS) -> dict[str, str]:
    """``refusals``, and a change of a start-only parameter: it is read once, so a new value would do nothing."""
    found = refusals(changes, current, specs)
    for name, value in changes.items():
        if name in specs and specs[name].applies == START and name not in found and value != current.get(name):
            found[name] = (f"{name}: {value!r} is refused: it is read at start only (a run-time change would do "
                           f"nothing); restart the node with -p {name}:={str(value).lower()} or a params file")
    return found
