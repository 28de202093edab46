"""Creating open_clip models: pretrained weights from tags or files, or explicitly random weights."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Optional

import open_clip
import torch
from torch import nn

from .choices import DEFAULT_MODEL, DEFAULT_PRETRAINED
from .errors import WeightsUnavailableError

TEST_CONFIG_DIR = Path(__file__).with_name("configs")  # tiny test towers (random weights only), as data
TEST_MODELS = tuple(sorted(path.stem for path in TEST_CONFIG_DIR.glob("*.json")))


def register_test_configs() -> None:
    """Make our tiny test towers (``ViT-Tiny-16-test``) known to open_clip.

    Called where random weights are built or a model name is checked for them, never on import:
    open_clip's registry is global, and importing the product must not change it.
    """
    if not set(TEST_MODELS) <= set(open_clip.list_models()):
        open_clip.add_model_config(TEST_CONFIG_DIR)


def hf_cache_dir() -> Path:
    """Where open_clip (through huggingface_hub) keeps downloaded weights."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def fetch_command(model_name: str, pretrained: str) -> str:
    return (
        f"python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{pretrained}')\""
    )


def resolve_pretrained_file(model_name: str, pretrained: str, cache_dir: Optional[str] = None) -> str:
    """Local path of the weights for a tag or a file; WeightsUnavailableError says how to get them."""
    if os.path.sep in pretrained or Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"}:
        if not Path(pretrained).is_file():
            raise WeightsUnavailableError(
                f"CLIP weights file {pretrained!r} for {model_name} does not exist; pass an existing file "
                f"or an open_clip tag such as {DEFAULT_PRETRAINED!r}"
            )
        return pretrained
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ValueError(f"{pretrained!r} is not an open_clip pretrained tag of {model_name}; known tags: {tags}")
    config = open_clip.get_pretrained_cfg(model_name, pretrained)
    try:
        return open_clip.download_pretrained(config, cache_dir=cache_dir)
    except Exception as error:  # huggingface_hub and urllib raise many types for "offline"
        cache = cache_dir or hf_cache_dir()
        raise WeightsUnavailableError(
            f"CLIP weights {model_name}/{pretrained} are not in the cache ({cache}) and cannot be downloaded "
            f"from here ({type(error).__name__}). On a connected machine run:\n    "
            f"{fetch_command(model_name, pretrained)}\n"
            f"then copy its {hf_cache_dir()} folder to this machine (or pass pretrained=<path to the .bin file>)."
        ) from error


def load_clip(model_name: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED, device: str = "cpu") -> nn.Module:
    """A frozen open_clip model in eval mode; ``pretrained`` is an open_clip tag or a local file path."""
    weights = resolve_pretrained_file(model_name, pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=weights, device=device)
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError) as error:
        # torch.load and load_state_dict name neither the file nor the model: say which, keep their reason
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
        raise ValueError(f"CLIP weights {weights} cannot be loaded into {model_name}: "
                         f"{type(error).__name__}: {reason}") from error
    return freeze(model)


def random_clip(model_name: str = DEFAULT_MODEL, device: str = "cpu", seed: int = 0) -> nn.Module:
    """The real architecture with random weights: for plumbing, tests and timing, never for results."""
    register_test_configs()
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None, device=device)
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
