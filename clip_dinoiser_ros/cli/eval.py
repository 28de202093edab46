"""``clip-dinoiser-eval``: the paper's benchmarks (Table 1) with the paper's protocol.

Data-parallel with PyTorch's own launcher: ``torchrun --nproc-per-node N $(which clip-dinoiser-eval) ...``
shards the images across processes and sums their confusion matrices (gloo on CPU, NCCL on CUDA); the
result equals one process's. ``--resume`` skips images whose confusion rows are already in the cache.

Exit codes: 0 done, 2 nothing could run (arguments, data layout, weights).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from clip_dinoiser_ros.cli.node_options import ENGINE, parse_node_options
from clip_dinoiser_ros.cli.model_options import SetupError, add_model_arguments, build_engine, check_model_arguments
from clip_dinoiser_ros.evaluation import ConfusionMatrix, scores, write_reports
from clip_dinoiser_ros.evaluation.benchmarks import IGNORE_INDEX, Benchmark, benchmarks, read_ground_truth, samples
from clip_dinoiser_ros.evaluation.benchmarks import protocol as benchmark_protocol
from clip_dinoiser_ros.distributed import Ranks, process_device
from clip_dinoiser_ros.extras import missing_extra
from clip_dinoiser_ros.model.heads_download import PUBLISHED, PUBLISHED_HEADS, sha256_of
from clip_dinoiser_ros.provenance import versions
from clip_dinoiser_ros.evaluation.protocol import predict


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-dinoiser-eval", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", choices=tuple(benchmarks()), action="append", dest="datasets")
    which.add_argument("--all", action="store_true", help="the eight benchmarks")
    parser.add_argument("--root", type=Path, required=True, help="the folder holding each set's data_root")
    parser.add_argument("--limit", type=int, help="only the first N images of each set")
    parser.add_argument("--resume", action="store_true", help="skip images already in --out's cache")
    parser.add_argument("--out", type=Path, default=Path("eval-results"))
    add_model_arguments(parser, ENGINE)  # mode, short side and background: the paper's protocol
    parser.set_defaults(prompts=["placeholder"])  # the classes come from each benchmark
    return parser


def model_fingerprint(args: argparse.Namespace) -> str:
    """The cache's key for the model: --resume never mixes rows that other weights or settings made."""
    settings = {name: str(getattr(args, name)) for name in
                ("clip_model", "clip_pretrained", "heads", "random_weights", "precision", "device", "backend",
                 "templates", "gamma", "delta")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def evaluate(benchmark: Benchmark, args: argparse.Namespace, engine, ranks: Ranks) -> np.ndarray:
    pairs = samples(benchmark, args.root)[: args.limit]
    cache = args.out / "cache" / benchmark.name / model_fingerprint(args)
    cache.mkdir(parents=True, exist_ok=True)
    engine.set_prompts(list(benchmark.classes))
    confusion = ConfusionMatrix(len(benchmark.classes))
    mine = pairs[ranks.rank::ranks.world]
    started = time.perf_counter()
    with tqdm(mine, unit="image", desc=benchmark.name, disable=ranks.rank != 0, dynamic_ncols=True) as progress:
        for done, (image_path, label_path) in enumerate(progress, 1):
            cached = cache / (str(image_path.relative_to(args.root)).replace("/", "__") + ".npy")
            if args.resume and cached.is_file():
                confusion.add(np.load(cached))
            else:
                with Image.open(image_path) as image:
                    rgb = np.array(image.convert("RGB"))
                labels = predict(engine, rgb, benchmark.background_filtering)
                frame = confusion.update(labels, read_ground_truth(label_path, benchmark.reduce_zero_label),
                                         IGNORE_INDEX)
                np.save(cached, frame)
            progress.set_postfix(mIoU=f"{100 * scores(confusion.matrix).miou:.1f}",
                                 img_s=f"{done / (time.perf_counter() - started):.2f}")
    return ranks.total(confusion.matrix)


def weight_hashes(args: argparse.Namespace) -> dict[str, str]:
    """sha256 of the local weight files used; the published heads are pinned by their git blob id."""
    if args.random_weights:
        return {}
    hashes = {"heads": PUBLISHED_HEADS.git_blob_id if args.heads == PUBLISHED else args.heads}
    for name, value in (("heads", args.heads), ("clip_pretrained", args.clip_pretrained)):
        if Path(value).is_file():
            hashes[name] = f"sha256:{sha256_of(Path(value))}"
    return hashes


def table_row(benchmark: Benchmark, miou: float) -> str:
    ours = 100 * miou
    return f"| {benchmark.name} | {ours:.1f} | {benchmark.paper_miou:.1f} | {ours - benchmark.paper_miou:+.1f} |"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_node_options(build_parser(), argv)
    if (missing := missing_extra("eval")) is not None:  # before any work, not hours into it
        print(f"error: {missing}", file=sys.stderr)
        return 2
    chosen = list(benchmarks().values()) if args.all else [benchmarks()[name] for name in args.datasets]
    args.device = process_device(args.device)  # under torchrun: the GPU of this process's LOCAL_RANK
    try:
        check_model_arguments(args)
        for benchmark in chosen:
            samples(benchmark, args.root)  # a missing set fails before the model loads
        engine, weights = build_engine(args)
    except (SetupError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ranks = Ranks(args.device)
    rows = ["| dataset | mIoU (ours) | mIoU (paper) | difference |", "|---|---|---|---|"]
    try:
        for benchmark in chosen:
            matrix = evaluate(benchmark, args, engine, ranks)
            if ranks.rank == 0:
                result = scores(matrix)
                rows.append(table_row(benchmark, result.miou))
                folder = args.out / benchmark.name
                folder.mkdir(parents=True, exist_ok=True)
                meta = {"dataset": benchmark.name, "weights": weights, "pixels": result.pixels,
                        "processes": ranks.world, "protocol": "mmcv rescale (2048, 448) uint8 bilinear, slide 448/224"}
                write_reports(folder, benchmark.classes, matrix, None, meta, title=weights)
    finally:
        ranks.close()
    if ranks.rank == 0:
        table = "\n".join(rows)
        print(table)
        (args.out / "table1.md").write_text(table + "\n")
        run = {"weights": weights, "weight_files": weight_hashes(args), "versions": versions(),
               "datasets": [b.name for b in chosen], "limit": args.limit, "processes": ranks.world,
               "precision": str(engine.dtype), "protocol": benchmark_protocol()}
        (args.out / "run.json").write_text(json.dumps(run, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
