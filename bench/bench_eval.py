"""``clip-dinoiser-eval`` images/s vs the engine alone (the protocol's ``predict``) on the same images.

A VOC-layout tree is made from the CamVid frames (their labels as ground truth), or from generated
frames without ../shared/data. The eval side is the whole per-image loop of the command (read the
image and label, predict, update and cache the confusion); the engine side runs ``predict`` on the
same images, decoded beforehand. Alternating runs, medians. RANDOM weights: timing only.

    PYTHONPATH=.:bench HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_eval.py [--model ViT-B-16 --images 4]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clip_dinoiser_ros.cli.eval import build_parser, evaluate
from clip_dinoiser_ros.cli.node_options import parse_node_options
from clip_dinoiser_ros.distributed import Ranks
from clip_dinoiser_ros.evaluation.benchmarks import benchmarks
from clip_dinoiser_ros.evaluation.protocol import predict
from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from timing import alternating_medians

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "0016E5"


def voc_tree(root: Path, count: int) -> None:
    spec = benchmarks()["voc"]
    base = root / spec.data_root
    (base / spec.img_dir).mkdir(parents=True)
    (base / spec.ann_dir).mkdir(parents=True)
    rng = np.random.default_rng(0)
    stems = []
    for index in range(count):
        stem = f"frame_{index:04d}"
        if CAMVID.is_dir():
            name = sorted((CAMVID / "images").glob("*.png"))[index].name
            rgb = np.array(Image.open(CAMVID / "images" / name).convert("RGB"))
            label = np.array(Image.open(CAMVID / "labels" / name))
        else:
            rgb = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
            label = rng.integers(0, 21, (360, 480), dtype=np.uint8)
        Image.fromarray(rgb).save(base / spec.img_dir / f"{stem}.jpg", quality=95)
        Image.fromarray(label).save(base / spec.ann_dir / f"{stem}.png")
        stems.append(stem)
    (base / spec.split).parent.mkdir(parents=True)
    (base / spec.split).write_text("\n".join(stems) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-Tiny-16-test")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    voc_tree(root / "data", options.images)
    args = parse_node_options(build_parser(), ["--dataset", "voc", "--root", str(root / "data"), "--out", str(root / "out"),
                                      "--random-weights", "--clip-model", options.model])
    torch.manual_seed(0)
    engine = ClipDinoiser(random_clip(options.model), None)
    spec = benchmarks()["voc"]
    engine.set_prompts(list(spec.classes))
    images = [np.array(Image.open(p).convert("RGB"))
              for p in sorted((root / "data" / spec.data_root / spec.img_dir).glob("*.jpg"))]

    def engine_alone() -> None:
        for rgb in images:
            predict(engine, rgb, spec.background_filtering)

    def eval_command() -> None:
        evaluate(spec, args, engine, Ranks("cpu"))

    medians = alternating_medians({"engine": engine_alone, "eval": eval_command}, options.repeats)
    engine_rate, eval_rate = (len(images) / medians[name] for name in ("engine", "eval"))
    print(f"{options.model} RANDOM weights, {len(images)} images ({'CamVid' if CAMVID.is_dir() else 'generated'}"
          f" 480x360 as VOC), {engine.dtype}, median of {options.repeats}: engine alone {engine_rate:.2f} images/s, "
          f"clip-dinoiser-eval {eval_rate:.2f} images/s, ratio {eval_rate / engine_rate:.3f}")


if __name__ == "__main__":
    main()
