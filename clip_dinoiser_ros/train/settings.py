"""Everything a training run depends on, with the paper's recipe as the defaults (DESIGN.md)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..model.choices import DEFAULT_MODEL, DEFAULT_PRETRAINED, PRECISIONS
from ..model.heads import DEFAULT_PROJECTION_DIM

# Settings a resumed run must share with the run that wrote the checkpoint: they decide every step's result.
RESULT_SETTINGS = ("batch_size", "image_size", "lr_obj_proj", "lr_bkg_decoder", "lr_milestones", "lr_gamma",
                   "weight_decay", "seed", "clip_model", "clip_pretrained", "projection_dim", "views", "held_out",
                   "random_weights")


@dataclass
class TrainSettings:
    images: Path
    out: Path
    iterations: int = 6300  # 100 epochs of 1,000 images at batch 16
    batch_size: int = 16
    image_size: int = 448
    lr_obj_proj: float = 5e-5
    lr_bkg_decoder: float = 1e-2
    lr_milestones: tuple[int, ...] = (5000,)
    lr_gamma: float = 0.1
    weight_decay: float = 0.01  # AdamW's default, as the reference leaves it
    seed: int = 0
    clip_model: str = DEFAULT_MODEL
    clip_pretrained: str = DEFAULT_PRETRAINED
    projection_dim: int = DEFAULT_PROJECTION_DIM
    views: int = 1  # augmented views per image whose teacher targets are cached
    held_out: float = 0.05  # fraction of the images kept for the label-free evaluation
    checkpoint_every: int = 500
    cache_targets: bool = True
    target_cache: Optional[Path] = None  # default: $XDG_CACHE_HOME/clip_dinoiser_ros/targets
    dino: Optional[Path] = None  # local DINO ViT-B/16 weights (else timm's hub)
    found_encoder: Optional[Path] = None  # local DINO ViT-S/8 (300 epochs) weights
    found_decoder: Optional[Path] = None  # local FOUND decoder (else the published file)
    random_weights: bool = False
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        """Refuse values that cannot work, naming the option and the fix."""
        positive = {"--iterations": self.iterations, "--batch-size": self.batch_size,
                    "--image-size": self.image_size, "--projection-dim": self.projection_dim,
                    "--views": self.views, "--checkpoint-every": self.checkpoint_every}
        for option, value in positive.items():
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value}")
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if not 0 <= self.held_out < 1:
            raise ValueError(f"--held-out is a fraction in [0, 1), got {self.held_out}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        for option, value in {"--lr-obj-proj": self.lr_obj_proj, "--lr-bkg-decoder": self.lr_bkg_decoder}.items():
            if not value > 0:
                raise ValueError(f"{option} must be positive, got {value}")

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}

    def result_settings(self) -> dict[str, Any]:
        values = self.as_json()
        values = {key: values[key] for key in RESULT_SETTINGS}
        values["lr_milestones"] = list(values["lr_milestones"])
        values["images"] = str(Path(self.images).resolve())
        return values
