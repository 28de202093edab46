"""The CLIP-DINOiser engine (no ROS here): load CLIP, build the engine, segment images."""
from .clip_loading import load_clip, random_clip
from .engine import ClipDinoiser, Segmentation
from .errors import CheckpointError, WeightsUnavailableError
from .heads import DinoiserHeads, build_heads, save_checkpoint
from .text_encoder import Vocabulary
from .vocabulary import ClassPrompt, parse_prompts

__all__ = [
    "CheckpointError",
    "ClassPrompt",
    "ClipDinoiser",
    "DinoiserHeads",
    "Segmentation",
    "Vocabulary",
    "WeightsUnavailableError",
    "build_heads",
    "load_clip",
    "parse_prompts",
    "random_clip",
    "save_checkpoint",
]
