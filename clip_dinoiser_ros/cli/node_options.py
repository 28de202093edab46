"""The node's parameters as command-line options, generated from its one parameter table.

Each option is the parameter's name with dashes (``max_depth_m`` -> ``--max-depth-m``) and takes the
node's default, allowed values and refusal message from ``ros.parameters``, so a tool never accepts what the
node refuses, nor runs with another default. Options are None after parsing and settled afterwards
(command line, then ``--params-file``, then the node's default): a params file fills what the command line
left out.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from clip_dinoiser_ros.cli.params_file import ParamsFileError, read_params_file
from clip_dinoiser_ros.ros.parameters import SPECS, ParameterSpec, refusals

# What builds the engine (model.build.EngineSettings), what each frame is run with, what the outputs are
# made with, and a camera's depth (the node's 3D outputs).
ENGINE = ("device", "precision", "backend", "onnx_provider_options", "clip_model", "clip_pretrained", "heads",
          "random_weights", "templates", "gamma", "delta", "embedding_cache")
FRAME = ("mode", "short_side", "background")
OUTPUT = ("confidence_threshold", "confidence_encoding")
RGBD = ("depth_topics", "camera_info_topics", "sync", "sync_slop_s", "sync_wait_s", "sync_queue_size", "depth_scale",
        "max_depth_m", "min_object_pixels")
# What decides an exported graph: the weights, gamma (inside the graph), the input size; templates with --prompts.
GRAPH = ("device", "precision", "clip_model", "clip_pretrained", "heads", "random_weights", "templates", "gamma",
         "embedding_cache", "mode", "short_side")
# Spellings kept from before the options were generated: one flag per camera, repeated.
ALIASES = {"depth_topics": ("--depth-topic",), "camera_info_topics": ("--camera-info-topic",),
           "image_topics": ("--topic",)}
_REGISTERED = "node_parameters"  # the Namespace attribute naming the options a (sub)parser generated


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_node_options(parser: argparse.ArgumentParser, names: Sequence[str], title: str = "the node's parameters") -> None:
    """One option per node parameter in ``names``; ``parse_node_options`` settles their values."""
    group = parser.add_argument_group(title, "the node's names, defaults and allowed values (see config/clip_dinoiser.yaml)")
    for name in names:
        spec = SPECS[name]
        shown = spec.default if spec.kind != "string array" else " ".join(map(repr, spec.default))
        text = f"{spec.description}; allowed: {spec.allowed()}; default: {shown}".replace("%", "%%")
        if spec.kind == "bool":
            group.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif spec.kind == "string array":
            group.add_argument(flag(name), *ALIASES.get(name, ()), dest=name, action="extend", nargs="+",
                               default=None, metavar="VALUE", help=text)
        else:
            metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else name.upper()
            group.add_argument(flag(name), dest=name, type=_command_line_value(spec), default=None, metavar=metavar,
                               help=text)
    parser.set_defaults(**{_REGISTERED: tuple(names)})


def add_params_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params-file", type=Path, help="the node's ROS 2 params file: its '/**' section and the "
                        "node's own (by --node-name), as the node reads them; command-line options override it")
    parser.add_argument("--node-name", default="/clip_dinoiser",
                        help="the node's fully qualified name the params file's sections are matched against "
                        "(default /clip_dinoiser; /robot/clip_dinoiser for a namespaced one)")


def _command_line_value(spec: ParameterSpec):
    """An argparse type: the text as the parameter's type, refused in the node's words."""
    def value(text: str) -> Any:
        parsed = _typed(text, spec.kind)
        problem = spec.problem(parsed)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return spec.normalise(parsed)

    value.__name__ = spec.name
    return value


def _typed(text: str, kind: str) -> Any:
    """The command line's text as a value of ``kind``, or as what it is when it is not (the refusal says so)."""
    if kind == "string":
        return text
    for convert in ((int,) if kind == "integer" else ()) + (float,):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_node_options(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` with every generated option settled: the command line's value, else the params
    file's (checked by the node's own refusals), else the node's default. A refusal exits as argparse does."""
    args = parser.parse_args(argv)
    names = getattr(args, _REGISTERED, ())
    from_file: Mapping[str, Any] = {}
    if getattr(args, "params_file", None) is not None:
        try:
            from_file = read_params_file(args.params_file, args.node_name)
        except ParamsFileError as error:
            parser.error(f"--params-file {args.params_file}: {error}")
        refused = refusals(from_file, {})
        if refused:
            parser.error(f"--params-file {args.params_file}: {'; '.join(refused.values())}")
    for name in names:
        spec, value = SPECS[name], getattr(args, name)
        if value is None:
            value = from_file.get(name, spec.default)
        elif spec.kind == "string array" and (problem := spec.problem(value)):
            parser.error(f"argument {flag(name)}: {problem}")
        setattr(args, name, spec.normalise(value))
    return args
