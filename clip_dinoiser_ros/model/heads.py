"""The two light convolutional heads CLIP-DINOiser trains, and loading of their published checkpoint."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic_file import atomic_write
from .errors import CheckpointError
from .heads_download import resolve_heads

HEAD_KEYS = ("obj_proj.weight", "obj_proj.bias", "bkg_decoder.weight", "bkg_decoder.bias")
# Sub-modules of the reference model whose weights may ride along in a saved state dict.
REFERENCE_MODULE_PREFIXES = ("clip_backbone.", "vit_encoder.", "found_model.")
DEFAULT_PROJECTION_DIM = 256

HeadsSource = Union[str, Path, Mapping[str, torch.Tensor], None]


class DinoiserHeads(nn.Module):
    """``obj_proj`` predicts DINO's patch correlations, ``bkg_decoder`` FOUND's objectness."""

    def __init__(self, feature_dim: int, projection_dim: int = DEFAULT_PROJECTION_DIM) -> None:
        super().__init__()
        self.obj_proj = nn.Conv2d(feature_dim, projection_dim, 3, padding=1, padding_mode="replicate")
        self.bkg_decoder = nn.Conv2d(feature_dim, 1, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, h, w) block features -> (projected (B, P, h, w), objectness logit (B, 1, h, w))."""
        projected = self.obj_proj(features)
        objectness = self.bkg_decoder(F.normalize(features, dim=1))
        return projected, objectness


def expected_shapes(feature_dim: int, projection_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        "obj_proj.weight": (projection_dim, feature_dim, 3, 3),
        "obj_proj.bias": (projection_dim,),
        "bkg_decoder.weight": (1, feature_dim, 1, 1),
        "bkg_decoder.bias": (1,),
    }


def read_checkpoint(source: Union[str, Path]) -> Mapping[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only``) and return its model state dict.

    A ``str`` may also be ``published`` or an http(s) URL: downloaded once into the user cache first.
    """
    path = resolve_heads(source) if isinstance(source, str) else Path(source)
    if not path.is_file():
        raise CheckpointError(f"heads checkpoint {path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"heads checkpoint {path} holds objects other than tensors and plain containers, refused for "
            f"safety (weights_only=True): {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"heads checkpoint {path} is truncated or not a torch file: {error}") from error
    if isinstance(content, Mapping) and "model_state_dict" in content:
        content = content["model_state_dict"]
    if not isinstance(content, Mapping):
        raise CheckpointError(f"heads checkpoint {path} holds a {type(content).__name__}, expected a state dict")
    return content


def validate_state_dict(state: Mapping[str, torch.Tensor], feature_dim: int) -> dict[str, torch.Tensor]:
    """Keep the four head tensors; name every missing, unknown or mis-shaped entry."""
    missing = [key for key in HEAD_KEYS if key not in state]
    unknown = [key for key in state if key not in HEAD_KEYS and not key.startswith(REFERENCE_MODULE_PREFIXES)]
    if missing or unknown:
        raise CheckpointError(
            f"heads state dict does not have the published layout: missing {missing or 'nothing'}, "
            f"unexpected {unknown or 'nothing'} (expected exactly {list(HEAD_KEYS)})"
        )
    heads = {key: state[key] for key in HEAD_KEYS}
    not_tensors = [key for key, value in heads.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"heads entries {not_tensors} are not tensors")
    projection_dim = heads["obj_proj.weight"].shape[0]
    wrong = {
        key: (tuple(heads[key].shape), shape)
        for key, shape in expected_shapes(feature_dim, projection_dim).items()
        if tuple(heads[key].shape) != shape
    }
    if wrong:
        details = "; ".join(f"{key} is {got}, expected {want}" for key, (got, want) in wrong.items())
        raise CheckpointError(f"heads do not fit a CLIP backbone of width {feature_dim}: {details}")
    return heads


def build_heads(source: HeadsSource, feature_dim: int) -> DinoiserHeads:
    """Heads from a checkpoint (path, ``published`` or URL), a state dict, or ``None`` for explicitly random weights."""
    if source is None:
        return DinoiserHeads(feature_dim).eval()
    state = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    heads_state = validate_state_dict(state, feature_dim)
    heads = DinoiserHeads(feature_dim, heads_state["obj_proj.weight"].shape[0])
    heads.load_state_dict({key: value.float() for key, value in heads_state.items()})
    return heads.eval()


def save_checkpoint(heads: DinoiserHeads, path: Union[str, Path], epoch: int, **extra: Any) -> None:
    """Write heads in the published layout (``epoch`` + ``model_state_dict``), plus any ``extra`` entries (the
    training tool's resume state); written atomically, so a reader never sees half a checkpoint."""
    state = {key: value.detach().cpu() for key, value in heads.state_dict().items()}
    with atomic_write(Path(path)) as sink:
        torch.save({"epoch": epoch, "model_state_dict": state, **extra}, sink)
