"""Prompt template sets, by name (the 80 ImageNet templates are open_clip's own)."""
from __future__ import annotations

from typing import Callable, Sequence, Union

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

Template = Callable[[str], str]
TemplatesSpec = Union[str, Sequence[str]]

TEMPLATE_SETS: dict[str, tuple[Template, ...]] = {
    "imagenet": tuple(OPENAI_IMAGENET_TEMPLATES),
    "simple": tuple(SIMPLE_IMAGENET_TEMPLATES),
    "none": (lambda c: c,),
}


def resolve_templates(spec: TemplatesSpec) -> tuple[str, tuple[Template, ...]]:
    """A cache key and the template functions for a set name or a list of ``"... {} ..."`` strings."""
    if isinstance(spec, str):
        if spec not in TEMPLATE_SETS:
            raise ValueError(f"unknown template set {spec!r}; choose one of {sorted(TEMPLATE_SETS)} or pass format strings")
        return spec, TEMPLATE_SETS[spec]
    formats = tuple(spec)
    if not formats or not all(isinstance(f, str) and "{}" in f for f in formats):
        raise ValueError("custom templates must be a non-empty list of strings that each contain '{}'")
    return "custom:" + "\x1f".join(formats), tuple((lambda c, f=f: f.format(c)) for f in formats)
