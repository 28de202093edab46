"""A known 20-class vocabulary after a restart: read back from the embedding cache vs encoded again.

The real ViT-B/16 text tower (random weights: the cost does not depend on the values), the node's 80
ImageNet templates, 20 prompts of a street scene. ``encode``: a fresh PromptEncoder without a cache, what
every restart paid before; ``restore``: a fresh PromptEncoder over a cache that holds the prompts (what a
restarted process has), its tower fingerprint included. Alternating runs, medians.

    PYTHONPATH=. .venv/bin/python bench/bench_vocabulary_cache.py [--repeats 3] [--templates imagenet]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_dinoiser_ros.model.clip_loading import random_clip  # noqa: E402
from clip_dinoiser_ros.model.embedding_store import EmbeddingStore  # noqa: E402
from clip_dinoiser_ros.model.text_encoder import PromptEncoder  # noqa: E402
from timing import alternating_medians  # noqa: E402

PROMPTS = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "background"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--templates", default="imagenet")
    args = parser.parse_args()
    model = random_clip("ViT-B-16")
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddingStore(Path(folder))
        expected = PromptEncoder(model, tokenizer, args.templates, store=store).encode(PROMPTS)

        def encode():
            return PromptEncoder(model, tokenizer, args.templates).encode(PROMPTS)

        def restore():
            encoder = PromptEncoder(model, tokenizer, args.templates, store=store)
            vocabulary = encoder.encode(PROMPTS)
            assert encoder.encoded_texts == 0 and torch.equal(vocabulary.text_embeddings, expected.text_embeddings)
            return vocabulary

        medians = alternating_medians({"encode": encode, "restore": restore}, args.repeats, warmup=0)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ViT-B-16 text tower, {len(PROMPTS)} classes x {args.templates} templates, {args.repeats} alternating runs")
    print(f"encode {medians['encode']:.2f} s, restore {1000 * medians['restore']:.1f} ms (target < 100 ms): "
          f"{medians['encode'] / medians['restore']:.0f}x faster")


if __name__ == "__main__":
    main()
