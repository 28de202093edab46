"""What both launch files give their lifecycle node: its params file, its logger's level, and each node
parameter given on the command line as ``-p name:=value`` (rcl lets the later source win: the file first).

A parameter not given stays ``NOT_GIVEN`` and is not passed, so the params file decides; one given is checked
by the node exactly like a value from the file.
"""
from __future__ import annotations

from typing import Iterable

from launch import LaunchContext
from launch.substitutions import LaunchConfiguration
from launch_ros.utilities import make_namespace_absolute, prefix_namespace

NOT_GIVEN = ""
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def logger_name(context: LaunchContext, node_name: str) -> str:
    """The node's rcl logger, ``<namespace with dots>.<name>``: its namespace as launch_ros's Node expands it
    (under an enclosing PushRosNamespace too)."""
    namespace = make_namespace_absolute(prefix_namespace(context.launch_configurations.get("ros_namespace"),
                                                         LaunchConfiguration("namespace").perform(context)))
    return ".".join([*filter(None, (namespace or "").split("/")), node_name])


def ros_arguments(context: LaunchContext, params_file_argument: str, node_name: str,
                  parameters: Iterable[str]) -> list[str]:
    """``--params-file``, ``--log-level`` (the node's logger only) and ``-p`` for each parameter given."""
    arguments = ["--params-file", LaunchConfiguration(params_file_argument).perform(context),
                 "--log-level",
                 f"{logger_name(context, node_name)}:={LaunchConfiguration('log_level').perform(context)}"]
    for name in parameters:
        value = LaunchConfiguration(name).perform(context)
        if value != NOT_GIVEN:
            arguments += ["-p", f"{name}:={value}"]
    return arguments
