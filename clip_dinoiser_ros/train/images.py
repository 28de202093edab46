"""Training images: the folder's listing, the held-out split, and deterministic augmented views.

The recipe's augmentations (Resize(448) of the short side, RandomCrop(448), horizontal flip 0.5,
ColorJitter(brightness=0.5)) are drawn from a generator seeded by (seed, image, view): view ``v`` of an
image is the same in every epoch and every process, which is what lets the teachers' targets be cached
and a resumed or multi-process run see exactly the images a single uninterrupted run sees.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
BRIGHTNESS = 0.5  # ColorJitter(0.5): a factor drawn from [0.5, 1.5]
FLIP_PROBABILITY = 0.5


def list_images(directory: Path) -> list[Path]:
    """Every image under ``directory`` (recursively), in a stable order."""
    if not directory.is_dir():
        raise FileNotFoundError(f"--images {directory} is not a folder")
    images = sorted(path for path in directory.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"--images {directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def split_held_out(images: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """(train, held out): ``fraction`` of the images, evenly spaced through the listing, are never trained on."""
    count = int(round(len(images) * fraction))
    if fraction > 0 and len(images) > 1:
        count = min(max(count, 1), len(images) - 1)
    held = set(np.linspace(0, len(images) - 1, count).round().astype(int).tolist()) if count else set()
    return [p for i, p in enumerate(images) if i not in held], [p for i, p in enumerate(images) if i in held]


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1]; grayscale and palette images become RGB."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read training image {path}: {error}") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def view_generator(seed: int, image: int, view: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, image, view]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def resize_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's Resize(size) on a tensor as the reference ran it (bilinear, no antialias)."""
    height, width = image.shape[-2:]
    if height <= width:
        target = (size, int(size * width / height))
    else:
        target = (int(size * height / width), size)
    return F.interpolate(image[None], size=target, mode="bilinear", align_corners=False, antialias=False)[0]


def augmented_view(image: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Resize the short side, random square crop, random horizontal flip, random brightness."""
    image = resize_short_side(image, size)
    height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    image = image[:, top:top + size, left:left + size]
    if float(torch.rand(1, generator=generator)) < FLIP_PROBABILITY:
        image = image.flip(-1)
    factor = float(torch.empty(1).uniform_(1 - BRIGHTNESS, 1 + BRIGHTNESS, generator=generator))
    return (image * factor).clamp_(0.0, 1.0)


def evaluation_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side and take the centre square: the held-out images' one fixed view."""
    image = resize_short_side(image, size)
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[:, top:top + size, left:left + size]
