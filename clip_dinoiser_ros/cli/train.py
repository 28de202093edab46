"""clip-dinoiser-train: train the two CLIP-DINOiser heads on a folder of unlabeled images.

The defaults are the paper's recipe (DINO ViT-B/16 correlations and FOUND objectness as teachers, batch 16,
448-pixel crops, AdamW 5e-5 / 1e-2, step at 5000, 6300 iterations). The checkpoint has the published layout
(loads with --heads / heads:=) plus the state --resume needs; a loss curve (.loss.png) and the run's record
(.run.json, with the held-out teacher agreement) are written next to it.
Many GPUs or machines: torchrun --nproc-per-node N $(which clip-dinoiser-train) ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from clip_dinoiser_ros.extras import missing_extra
from clip_dinoiser_ros.model.choices import DEFAULT_MODEL, DEFAULT_PRETRAINED, PRECISIONS
from clip_dinoiser_ros.model.errors import CheckpointError, WeightsUnavailableError
from clip_dinoiser_ros.train.settings import TrainSettings

DEFAULTS = TrainSettings(images=Path("."), out=Path("."))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-dinoiser-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of training images (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="the heads checkpoint to write, e.g. heads.pt")
    recipe = parser.add_argument_group("recipe (defaults: the paper's)")
    for option, kind, help_text in (
        ("--iterations", int, "optimiser steps"),
        ("--batch-size", int, "global batch, split over torchrun's processes"),
        ("--image-size", int, "side of the square training crops"),
        ("--lr-obj-proj", float, "AdamW learning rate of obj_proj"),
        ("--lr-bkg-decoder", float, "AdamW learning rate of bkg_decoder"),
        ("--lr-gamma", float, "learning-rate factor at each milestone"),
        ("--weight-decay", float, "AdamW weight decay"),
        ("--seed", int, "data order, augmentations and the heads' initialisation"),
        ("--projection-dim", int, "obj_proj's output channels"),
        ("--views", int, "augmented views per image; each view's teacher targets are computed once and cached "
                         "(1: every epoch after the first runs at the student's speed; 100: a fresh view every "
                         "epoch of the recipe, as the reference draws them)"),
        ("--held-out", float, "fraction of the images kept out of training for the teacher-agreement report"),
        ("--checkpoint-every", int, "write the checkpoint every N steps (and at the end)"),
        ("--workers", int, "image-decoding worker processes"),
    ):
        name = option[2:].replace("-", "_")
        recipe.add_argument(option, type=kind, default=getattr(DEFAULTS, name),
                            help=f"{help_text} (default {getattr(DEFAULTS, name)})")
    recipe.add_argument("--lr-milestones", type=int, nargs="+", default=list(DEFAULTS.lr_milestones),
                        help=f"steps at which the learning rates drop (default {list(DEFAULTS.lr_milestones)})")
    models = parser.add_argument_group("models")
    models.add_argument("--clip-model", default=DEFAULT_MODEL, help="any open_clip ViT, e.g. ViT-B-32, ViT-L-14")
    models.add_argument("--clip-pretrained", default=DEFAULT_PRETRAINED, help="open_clip tag or a local file")
    models.add_argument("--dino", type=Path, help="local DINO ViT-B/16 weights (default: timm's hub)")
    models.add_argument("--found-encoder", type=Path,
                        help="local DINO ViT-S/8 weights, the 300-epoch release FOUND was trained on "
                             "(dino_deitsmall8_300ep_pretrain.pth; default: downloaded through timm)")
    models.add_argument("--found-decoder", type=Path,
                        help="local FOUND decoder_weights.pt (default: the published file, sha256-checked)")
    models.add_argument("--random-weights", action="store_true",
                        help="random CLIP, teachers and FOUND decoder: checks the plumbing, trains nothing useful")
    run = parser.add_argument_group("run")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="the frozen networks (CLIP, teachers); the heads train in fp32")
    run.add_argument("--resume", action="store_true", help="continue from --out's training state")
    run.add_argument("--target-cache", type=Path, help="folder of cached teacher targets "
                     "(default $XDG_CACHE_HOME/clip_dinoiser_ros/targets)")
    run.add_argument("--no-target-cache", action="store_true", help="compute the teachers at every step")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def settings_from(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        images=args.images, out=args.out, iterations=args.iterations, batch_size=args.batch_size,
        image_size=args.image_size, lr_obj_proj=args.lr_obj_proj, lr_bkg_decoder=args.lr_bkg_decoder,
        lr_milestones=tuple(args.lr_milestones), lr_gamma=args.lr_gamma, weight_decay=args.weight_decay,
        seed=args.seed, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
        projection_dim=args.projection_dim, views=args.views, held_out=args.held_out,
        checkpoint_every=args.checkpoint_every, cache_targets=not args.no_target_cache,
        target_cache=args.target_cache, dino=args.dino, found_encoder=args.found_encoder,
        found_decoder=args.found_decoder, random_weights=args.random_weights, device=args.device,
        precision=args.precision, workers=args.workers, resume=args.resume, progress=not args.no_progress,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if (missing := missing_extra("train")) is not None:  # before any work, not hours into it
        print(f"error: {missing}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    try:
        settings.check()
        from clip_dinoiser_ros.train import train  # torch, open_clip and timm load here

        result = train(settings)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint written can be continued with --resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, WeightsUnavailableError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":
        return 0
    if result.agreement:
        print("held-out teacher agreement: " + json.dumps({k: round(v, 4) for k, v in result.agreement.items()}))
    if args.random_weights:
        print("random weights: these heads check the plumbing only; they segment nothing")
    print(f"wrote {result.checkpoint}, {result.loss_plot}, {result.run_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
