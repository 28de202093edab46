"""``clip-dinoiser-eval-3d``: a saved map scored against a labelled point cloud, by ConceptGraphs' protocol.

Each voxel's class is the argmax of the map's query over the classes present in the ground truth (texts from
the engine's text tower, with the same model options as the other tools); each ground-truth point takes the
class of its nearest voxel within --radius (or, --association map-to-gt, each voxel the class of its nearest
ground-truth point, as ConceptGraphs pairs them); mAcc and F-mIoU as ConceptGraphs computes them
(evaluation/map_metrics.py cites the definitions).

Exit codes: 0 done, 2 nothing could run (arguments, files, weights).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from clip_dinoiser_ros.cli.model_options import SetupError, add_model_arguments, check_model_arguments, load_engine
from clip_dinoiser_ros.cli.node_options import ENGINE, parse_node_options
from clip_dinoiser_ros.extras import missing_extra

ASSOCIATION_HELP = ("gt-to-map (default): each ground-truth point takes the class of its nearest voxel within "
                    "--radius, a point without one counts as a miss; map-to-gt: each voxel takes the class of its "
                    "nearest ground-truth point (ConceptGraphs' pairing; with the default unlimited radius, exactly)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-dinoiser-eval-3d", description=__doc__.split("\n\n")[0])
    parser.add_argument("map", type=Path, help="a saved map (.npz of mapping.save_map: the mapping node's ~/save, "
                        "clip-dinoiser-bag map)")
    parser.add_argument("--ground-truth", type=Path, required=True,
                        help=".npz with 'points' (N, 3) in metres in the map's frame and 'labels' (N,) integer class "
                        "ids (line numbers of --classes from 0; negative: unlabelled, left out), or a .ply (ASCII "
                        "or binary) whose vertices have x y z and the ids in 'label', 'class_id', 'class' or "
                        "'semantic' (as ScanNet's *_vh_clean_2.labels.ply)")
    parser.add_argument("--classes", type=Path, required=True,
                        help="line i names class id i; synonyms separated by commas (as clip-dinoiser-bag eval)")
    parser.add_argument("--exclude", action="extend", nargs="+", default=[], metavar="CLASS",
                        help="classes neither scored nor predicted (ConceptGraphs excludes 'other'; its other "
                        "settings add floor wall ceiling, then door window)")
    parser.add_argument("--association", choices=("gt-to-map", "map-to-gt"), default="gt-to-map",
                        help=ASSOCIATION_HELP)
    parser.add_argument("--radius", type=float, help="metres (inf: unlimited); default: the map's voxel size for "
                        "gt-to-map, unlimited for map-to-gt")
    parser.add_argument("--json", type=Path, dest="json_out", help="also write the results to this JSON file")
    add_model_arguments(parser, ENGINE)
    parser.set_defaults(prompts=["placeholder"])  # the classes file's names are the prompts
    return parser


def excluded_ids(names: Sequence[str], classes: list[list[str]]) -> list[int]:
    """The ids of the classes ``names`` (any synonym, any case); SetupError for a name the file lacks."""
    ids = {name.casefold(): index for index, synonyms in enumerate(classes) for name in synonyms}
    unknown = [name for name in names if name.casefold() not in ids]
    if unknown:
        raise SetupError(f"--exclude: {', '.join(unknown)} not in --classes")
    return sorted({ids[name.casefold()] for name in names})


def percent(value: float) -> Optional[float]:
    return None if math.isnan(value) else round(100 * value, 4)


def shown(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def results(args: argparse.Namespace, names: list[str], evaluation, weights: str) -> dict:
    """What is printed and written to --json: percentages, per scored class and in total."""
    scores = evaluation.scores
    return {
        "map": str(args.map), "ground_truth": str(args.ground_truth), "weights": weights,
        "protocol": "ConceptGraphs eval_replica_semseg.py / utils/eval.py compute_metrics",
        "association": args.association, "radius_m": None if math.isinf(args.radius) else args.radius,
        "excluded": args.exclude,
        "classes": [{"id": int(c), "name": names[c], "points": int(n), "accuracy": percent(a), "iou": percent(i)}
                    for c, n, a, i in zip(scores.classes, scores.points, scores.accuracy, scores.iou)],
        "mAcc": percent(scores.macc), "F-mIoU": percent(scores.fmiou), "mIoU": percent(scores.miou),
        "pairs": evaluation.pairs, "missed_points": evaluation.missed, "far_voxels": evaluation.far_voxels,
        "confusion": evaluation.matrix.tolist(),
    }


def table(result: dict) -> str:
    lines = ["| class | points | Acc % | IoU % |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {row['name'].replace('|', chr(92) + '|')} | {row['points']} | {shown(row['accuracy'])} | "
              f"{shown(row['iou'])} |" for row in result["classes"]]
    radius = "any distance" if result["radius_m"] is None else f"{result['radius_m']} m"
    lines += ["", f"mAcc: {shown(result['mAcc'])}", f"F-mIoU: {shown(result['F-mIoU'])}",
              f"mIoU: {shown(result['mIoU'])}",
              f"pairs: {result['pairs']} ({result['missed_points']} ground-truth points without a voxel within "
              f"{radius}, counted as misses; {result['far_voxels']} voxels without ground truth within it, left out)"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_node_options(build_parser(), argv)
    if (missing := missing_extra("eval")) is not None:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    from clip_dinoiser_ros.bag.errors import BagError
    from clip_dinoiser_ros.bag.evaluate import prompts_and_lookup, read_classes
    from clip_dinoiser_ros.evaluation.map_metrics import evaluate_map, read_labelled_points
    from clip_dinoiser_ros.mapping import load_map
    from clip_dinoiser_ros.visualization import RANDOM_NOTICE

    try:
        classes = read_classes(args.classes)
        args.prompts, lookup = prompts_and_lookup(classes)
        excluded = excluded_ids(args.exclude, classes)
        truth = read_labelled_points(args.ground_truth, len(classes))
        voxel_map = load_map(args.map)
        if args.radius is None:
            args.radius = voxel_map.settings.voxel_size if args.association == "gt-to-map" else math.inf
        if not args.radius > 0:  # before the model loads
            raise SetupError(f"--radius must be positive (metres, or inf), got {args.radius}")
        check_model_arguments(args)
        engine = load_engine(args)
        vocabulary = engine.encode_prompts(args.prompts)
        if vocabulary.text_embeddings.shape[1] != voxel_map.settings.feature_dim:
            raise SetupError(f"the map holds {voxel_map.settings.feature_dim}-d features, {args.clip_model}'s texts "
                             f"are {vocabulary.text_embeddings.shape[1]}-d: score a map with the model that made it")
        text_class = lookup[vocabulary.synonym_to_class.numpy()]
        evaluation = evaluate_map(voxel_map, truth, vocabulary.text_embeddings.numpy(), text_class, len(classes),
                                  args.radius, args.association, excluded)
    except (SetupError, BagError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = RANDOM_NOTICE if args.random_weights else f"CLIP {args.clip_model}/{args.clip_pretrained}"
    result = results(args, [synonyms[0] for synonyms in classes], evaluation, weights)
    print(table(result))
    if args.random_weights:
        print(f"\n{RANDOM_NOTICE}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
