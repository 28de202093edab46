"""Training steps per second with cached teacher targets vs the teachers computed at every step.

Both sides run the same full student step (frozen CLIP to block -3, both heads, both losses, backward,
AdamW) on the same pre-augmented batch; one side reads the teachers' targets from the on-disk cache, the
other runs DINO ViT-B/16 and DINO ViT-S/8 + FOUND for them. Alternating runs, medians, one process.
RANDOM weights of the real architectures: timing only.

    PYTHONPATH=.:bench HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_train_targets.py [--image-size 448 --batch 16]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from clip_dinoiser_ros.distributed import Ranks
from clip_dinoiser_ros.train import TrainSettings
from clip_dinoiser_ros.train.images import augmented_view, list_images, load_rgb, view_generator
from clip_dinoiser_ros.model.build import resolve_device
from clip_dinoiser_ros.train.run import Trainer
from clip_dinoiser_ros.train.student import losses, predictions
from timing import alternating_medians

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip-model", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        settings = TrainSettings(images=IMAGES, out=Path(folder) / "heads.pt", batch_size=args.batch,
                                 image_size=args.image_size, clip_model=args.clip_model, random_weights=True,
                                 device=device.type, precision=args.precision, target_cache=Path(folder) / "targets")
        trainer = Trainer(settings, Ranks(device.type), device)
        paths = list_images(IMAGES)[: args.batch]
        views = torch.stack([augmented_view(load_rgb(p), args.image_size, view_generator(0, i, 0))
                             for i, p in enumerate(paths)])
        padded = trainer.features.padded(views.to(device))
        ids, view_ids = list(range(args.batch)), [0] * args.batch
        cache = trainer.cache
        trainer.targets(padded, ids, view_ids)  # fills the cache
        optimizer = torch.optim.AdamW(trainer.heads.parameters(), lr=1e-5)

        def step(use_cache: bool) -> None:
            trainer.cache = cache if use_cache else None
            targets = trainer.targets(padded, ids, view_ids)
            with trainer.autocast():
                head_input = trainer.features(padded)
            terms = losses(*predictions(trainer.heads, head_input), *targets)
            optimizer.zero_grad()
            terms.total.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        medians = alternating_medians({"cached": lambda: step(True), "teachers": lambda: step(False)},
                                      args.repeats)
    print(f"device {device} ({trainer.dtype}), {args.clip_model} student, batch {args.batch} of "
          f"{args.image_size}x{args.image_size}, grid {trainer.grid}")
    print(f"cached targets:      {1 / medians['cached']:.3f} steps/s ({medians['cached'] * 1000:.0f} ms)")
    print(f"teachers every step: {1 / medians['teachers']:.3f} steps/s ({medians['teachers'] * 1000:.0f} ms)")
    print(f"ratio cached / on the fly: {medians['teachers'] / medians['cached']:.2f}x")


if __name__ == "__main__":
    main()
