"""One set of options for the node and the tools: every engine and output parameter of the node is an option
of each tool it applies to, with the node's name, default, allowed values and refusal; ``clip-dinoiser-bag
segment --params-file`` reads the node's own params file and makes what the node publishes."""
from __future__ import annotations

import pytest
import yaml
from sensor_msgs.msg import Image

from clip_dinoiser_ros.bag.conversion import to_rclpy
from clip_dinoiser_ros.bag.reading import messages, open_bag
from clip_dinoiser_ros.cli import bag, eval as eval_cli, export, segment
from clip_dinoiser_ros.cli.node_options import parse_node_options
from clip_dinoiser_ros.cli.params_file import ParamsFileError, read_params_file
from clip_dinoiser_ros.model.build import EngineSettings
from clip_dinoiser_ros.pipeline.topics import output_topic
from clip_dinoiser_ros.ros.parameters import SPECS, refusals
from ros_harness import NodeProcess, answer_to, wait_until
from test_bag_tool import write_frames

# The node's settings by what they decide: the engine it builds (its EngineSettings), how each frame is
# segmented, what its outputs are made with, and a camera's depth.
ENGINE = tuple(name for name in EngineSettings.__dataclass_fields__)
FRAME = ("mode", "short_side", "background")
OUTPUT = ("confidence_threshold", "confidence_encoding")
RGBD = ("depth_topics", "camera_info_topics", "sync", "sync_slop_s", "sync_wait_s", "sync_queue_size", "depth_scale",
        "max_depth_m", "min_object_pixels")
NODE_ONLY = ("image_topics", "prompts", "max_prompts", "max_prompt_length", "input_reliability", "max_rate_hz",
             "max_image_pixels", "batch_cameras", "autostart")
# Which tool takes what: eval runs the paper's protocol (its mode, short side and background per dataset);
# an export is one graph (no runtime, no delta: background filtering runs after it).
TOOLS = {
    "clip-dinoiser-bag segment": (bag.build_parser, ["segment", "in.bag", "--out", "out", "--topic", "/cam/image_raw"],
                                  ENGINE + FRAME + OUTPUT + RGBD),
    "clip-dinoiser-segment": (segment.build_parser, ["a.png", "--prompts", "a", "--out", "out"], ENGINE + FRAME),
    "clip-dinoiser-eval": (eval_cli.build_parser, ["--all", "--root", "data"], ENGINE),
    "clip-dinoiser-export": (export.build_parser, ["--size", "48x64", "--out", "a.onnx"],
                             tuple(n for n in ENGINE if n not in ("backend", "onnx_provider_options", "delta"))
                             + ("mode", "short_side")),
}


def test_every_node_parameter_is_a_tool_setting_or_named_node_only():
    """A new node parameter fails here until it is given to the tools it applies to (or said not to apply)."""
    assert set(SPECS) == set(ENGINE + FRAME + OUTPUT + RGBD + NODE_ONLY)


def parse(tool: str, *extra: str):
    build, base, _ = TOOLS[tool]
    return parse_node_options(build(), [*base, *extra])


def refused(tool: str, capsys, *extra: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        parse(tool, *extra)
    assert stopped.value.code == 2
    return capsys.readouterr().err


def accepted_values(name: str) -> list:
    spec = SPECS[name]
    if spec.choices:
        return list(spec.choices)
    if spec.value_range:
        return [spec.normalise(bound) for bound in spec.value_range]
    return {"bool": [True, False], "string": [spec.default], "string array": [["/a/image", ""]]}[spec.kind]


def refused_values(name: str) -> list:
    spec = SPECS[name]
    if spec.choices:
        return ["no-such-choice"]
    if spec.value_range:
        low, high = spec.value_range
        return [spec.normalise(low - 1), spec.normalise(high + 1), "text"]
    return {"string array": [["not a topic!"]], "string": ["cuda:x", "fp16=maybe"]}.get(spec.kind, [])


def as_arguments(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_takes_the_node_parameters_it_applies_to_with_its_name_default_values_and_refusals(tool, capsys):
    settings = TOOLS[tool][2]
    defaults = parse(tool)
    for name in settings:
        spec = SPECS[name]
        assert getattr(defaults, name) == spec.normalise(spec.default), f"{tool} --{name}: default"
        for value in accepted_values(name):
            assert getattr(parse(tool, *as_arguments(name, value)), name) == value, f"{tool}: {name} {value!r}"
        for value in refused_values(name):
            reason = refusals({name: value}, {}).get(name)
            if reason is None:  # e.g. a string with a rule this value happens to meet
                continue
            assert reason in refused(tool, capsys, *as_arguments(name, value)), f"{tool}: {name} {value!r}"
    others = set(ENGINE + FRAME + OUTPUT + RGBD) - set(settings)
    for name in others:  # what a tool would silently ignore is not offered
        assert "--" + name.replace("_", "-") not in TOOLS[tool][0]().format_help(), f"{tool} offers --{name}"


def write_params(path, sections: dict) -> None:
    path.write_text(yaml.safe_dump({node: {"ros__parameters": values} for node, values in sections.items()},
                                   sort_keys=False))


def test_the_params_file_is_read_as_rcl_gives_it_to_the_node(tmp_path):
    path = tmp_path / "robot.yaml"
    write_params(path, {"/**": {"gamma": 0.1, "templates": "none", "depth_topics": []},
                        "clip_dinoiser": {"gamma": 0.3},
                        "/robot/clip_dinoiser": {"gamma": 0.5},
                        "/**/other": {"delta": 0.1}})
    assert read_params_file(path, "/clip_dinoiser") == {"gamma": 0.3, "templates": "none", "depth_topics": None}
    assert read_params_file(path, "/robot/clip_dinoiser")["gamma"] == 0.5
    path.write_text(yaml.safe_dump({"robot": {"clip_dinoiser": {"ros__parameters": {"mode": "slide"}}}}))
    assert read_params_file(path, "/robot/clip_dinoiser") == {"mode": "slide"}
    with pytest.raises(ParamsFileError, match="no section applies to the node /clip_dinoiser"):
        read_params_file(path, "/clip_dinoiser")


def test_the_command_line_overrides_the_params_file_and_its_refusals_are_the_nodes(tmp_path, capsys):
    path = tmp_path / "robot.yaml"
    write_params(path, {"/**": {"gamma": 0.3, "short_side": 64, "prompts": ["a", "b|c"], "image_topics": ["/x/image"]}})
    args = parse("clip-dinoiser-bag segment", "--params-file", str(path), "--short-side", "96")
    assert (args.gamma, args.short_side, args.prompts) == (0.3, 96, ["a", "b|c"])
    assert args.image_topics == ["/cam/image_raw"]  # --topic given
    write_params(path, {"/clip_dinoiser": {"short_side": 8, "max_prompts": 1, "prompts": ["a", "b"]}})
    error = refused("clip-dinoiser-bag segment", capsys, "--params-file", str(path))
    for reason in refusals({"short_side": 8, "max_prompts": 1, "prompts": ["a", "b"]}, {}).values():
        assert reason in error


NON_DEFAULT = {"templates": "simple", "gamma": 0.3, "delta": 0.5, "confidence_threshold": 0.2,
               "confidence_encoding": "mono8", "short_side": 64, "mode": "whole", "background": "on"}


def test_bag_segment_with_the_nodes_params_file_makes_the_nodes_masks(probe, tmp_path):
    root = write_frames(tmp_path / "frames", 3, size=(96, 72), labels=False)
    source = tmp_path / "camera"
    assert bag.main(["from-images", str(root / "images"), "--topic", "/cam/image_raw", "--rate", "10", "--start", "100",
                     "--out", str(source)]) == 0
    parameters = {"image_topics": ["/cam/image_raw"], "prompts": ["background", "sky", "road|street"],
                  "clip_model": "ViT-Tiny-16-test", "random_weights": True, "input_reliability": "reliable",
                  **NON_DEFAULT}
    assert all(SPECS[name].default != value for name, value in NON_DEFAULT.items() if name != "mode")
    node = NodeProcess(tmp_path / "node", parameters, node_name="/clip_dinoiser")
    try:
        wait_until(lambda: "active on" in node.log(), 120, "the node active")
        with open_bag(source) as reader:
            frames = [to_rclpy(item.message, item.msgtype) for item in messages(reader, ["/cam/image_raw"])]
        live = {}
        for frame in frames:
            outputs = [answer_to(probe, node, frame, "/cam/image_raw", output_topic("/cam/image_raw", name), Image)
                       for name in ("mask", "confidence")]
            live[(frame.header.stamp.sec, frame.header.stamp.nanosec)] = outputs
    finally:
        assert node.stop() == 0, node.log()
    out = tmp_path / "labelled"
    assert bag.main(["segment", str(source), "--params-file", str(node.params_file), "--out", str(out)]) == 0
    recorded = {}
    with open_bag(out) as reader:
        for name in ("mask", "confidence"):
            for item in messages(reader, [output_topic("/cam/image_raw", name)]):
                stamp = (item.message.header.stamp.sec, item.message.header.stamp.nanosec)
                recorded.setdefault(stamp, []).append(item.message)
    assert set(recorded) == set(live) and len(live) == 3
    for stamp, (mask, confidence) in live.items():
        bag_mask, bag_confidence = recorded[stamp]
        assert (bag_mask.encoding, bag_confidence.encoding) == (mask.encoding, "mono8") == ("mono8", "mono8")
        assert bytes(bag_mask.data) == bytes(mask.data)
        assert bytes(bag_confidence.data) == bytes(confidence.data)
    default = tmp_path / "default"  # the node's settings made a difference: without them, other masks
    assert bag.main(["segment", str(source), "--topic", "/cam/image_raw", "--prompts", *parameters["prompts"],
                     "--clip-model", "ViT-Tiny-16-test", "--random-weights", "--device", "cpu", "--out", str(default)]) == 0
    masks = [bytes(item.message.data) for item in bag_masks(default)]
    assert masks != [bytes(live[stamp][0].data) for stamp in sorted(live)]


def bag_masks(path):
    with open_bag(path) as reader:
        return list(messages(reader, [output_topic("/cam/image_raw", "mask")]))
