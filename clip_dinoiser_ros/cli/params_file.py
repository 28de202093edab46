"""A ROS 2 params file read as a node of a given name reads it, for tools that must run as that node does.

A section applies when its key matches the node's fully qualified name: ``/**`` (any node), ``/**/name``
(any namespace), ``*`` (one name), the name itself with or without its leading slash, or nested namespace
keys (``robot: {clip_dinoiser: {ros__parameters: ...}}``). Sections apply in file order, a later one
overriding an earlier one, and an empty list is "not set", as rcl gives them to the node.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

PARAMETERS_KEY = "ros__parameters"


class ParamsFileError(ValueError):
    """The file cannot be read as a ROS 2 params file, or gives this node nothing."""


def read_params_file(path: Path, node: str) -> dict[str, Any]:
    """The parameters ``node`` (a fully qualified name, e.g. /robot/clip_dinoiser) gets from ``path``."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ParamsFileError(getattr(error, "strerror", None) or str(error).splitlines()[0]) from error
    if not isinstance(document, dict):
        raise ParamsFileError(f"not a ROS 2 params file (a mapping of node names to '{PARAMETERS_KEY}')")
    fully_qualified = node if node.startswith("/") else "/" + node
    values: dict[str, Any] = {}
    matched = []
    for key, parameters in _sections(document, ""):
        if re.fullmatch(_pattern(key), fully_qualified):
            matched.append(key)
            values.update(_flat(parameters, ""))
    if not matched:
        keys = ", ".join(key for key, _ in _sections(document, "")) or "none"
        raise ParamsFileError(f"no section applies to the node {fully_qualified} (sections: {keys})")
    return values


def _sections(document: dict, prefix: str) -> Iterator[tuple[str, dict]]:
    """(node name, its parameters) of every section, nested namespace keys joined with '/'."""
    for key, value in document.items():
        name = f"{prefix}/{str(key).strip('/')}" if prefix or not str(key).startswith("/") else str(key)
        if not isinstance(value, dict):
            raise ParamsFileError(f"{name}: expected a mapping holding '{PARAMETERS_KEY}'")
        if PARAMETERS_KEY in value:
            if not isinstance(value[PARAMETERS_KEY], dict):
                raise ParamsFileError(f"{name}: '{PARAMETERS_KEY}' is not a mapping of names to values")
            yield name, value[PARAMETERS_KEY]
        else:
            yield from _sections(value, name)


def _pattern(key: str) -> str:
    """A section key as a regular expression over fully qualified node names."""
    parts = []
    for token in key.strip("/").split("/"):
        if token == "**":
            parts.append("(/[^/]+)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in token.split("*")))
    return "".join(parts)


def _flat(parameters: dict, prefix: str) -> dict[str, Any]:
    """Nested parameter namespaces as dotted names; [] as None (rcl gives an empty list no type)."""
    flat: dict[str, Any] = {}
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = None if value == [] else value
    return flat
