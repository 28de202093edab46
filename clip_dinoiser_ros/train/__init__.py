"""Training the CLIP-DINOiser heads for any open_clip ViT (no ROS here): ``train(TrainSettings(...))``.

``clip-dinoiser-train`` is the command line; ``torchrun --nproc-per-node N $(which clip-dinoiser-train)``
trains data-parallel.
"""
from .run import TrainResult, train
from .settings import TrainSettings

__all__ = ["TrainResult", "TrainSettings", "train"]
