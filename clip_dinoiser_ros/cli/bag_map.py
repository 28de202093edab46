"""``clip-dinoiser-bag map`` and ``query``: a voxel map built offline from a recorded RGB-D bag, and texts asked of
a saved one. The model options are the node's (as ``segment``); the map's settings are mapping.MapSettings'."""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Callable

from clip_dinoiser_ros.bag.errors import BagError
from clip_dinoiser_ros.cli.node_options import ENGINE, add_node_options, add_params_file_option
from clip_dinoiser_ros.mapping.voxel_map import EVICTION_POLICIES, MapSettings

# The cameras and their depth, paired as the node pairs them; the engine's resize.
MAP_INPUTS = ("image_topics", "depth_topics", "camera_info_topics", "sync", "sync_slop_s", "sync_wait_s",
              "sync_queue_size", "depth_scale", "short_side")
FEATURE_PROMPTS = ["object"]  # the engine segments with a vocabulary; the features it returns do not depend on it
DEFAULTS = MapSettings()


def add_map_parser(commands: argparse._SubParsersAction) -> None:
    fuse = commands.add_parser("map", help="fuse a bag's RGB-D frames, posed by its /tf and /tf_static, into a "
                               "voxel map of open-vocabulary features (.npz)")
    fuse.add_argument("bag", type=Path)
    fuse.add_argument("--out", type=Path, required=True, help="the map file to write (.npz)")
    fuse.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    fuse.add_argument("--map-frame", default="map", help="the fixed frame of the map (default map)")
    settings = fuse.add_argument_group("the map (mapping.MapSettings)")
    settings.add_argument("--voxel-size", type=float, default=DEFAULTS.voxel_size,
                          help=f"metres (default {DEFAULTS.voxel_size})")
    settings.add_argument("--budget", type=int, default=DEFAULTS.budget,
                          help=f"most voxels held; over it the farthest or oldest go (default {DEFAULTS.budget})")
    settings.add_argument("--eviction", choices=EVICTION_POLICIES, default=DEFAULTS.eviction)
    settings.add_argument("--map-max-depth", type=float, default=DEFAULTS.max_depth_m,
                          help=f"depth beyond this many metres is not mapped (default {DEFAULTS.max_depth_m})")
    settings.add_argument("--carve", action=argparse.BooleanOptionalAction, default=DEFAULTS.carve,
                          help="lower the weight of voxels a frame sees through (things that moved go away)")
    add_params_file_option(fuse)
    add_node_options(fuse, MAP_INPUTS + ENGINE)

    ask = commands.add_parser("query", help="where each text wins in a saved map: its connected voxel clusters")
    ask.add_argument("map", type=Path, help="a map written by `map` (or the mapping node's ~/save)")
    ask.add_argument("--text", action="append", required=True, dest="texts", metavar="TEXT",
                     help="a text to find (repeat for several; 'a|b' lists synonyms)")
    ask.add_argument("--background", action="store_true",
                     help="add 'background' to the texts, with the engine's background rule")
    ask.add_argument("--min-voxels", type=int, default=1, help="smallest cluster reported (default 1)")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_params_file_option(ask)
    add_node_options(ask, ENGINE)


def run_map(args: argparse.Namespace, stop: threading.Event, load_engine: Callable) -> int:
    from clip_dinoiser_ros.bag.mapping import BagMapOptions, map_bag
    from clip_dinoiser_ros.bag.writing import prepare_output
    from clip_dinoiser_ros.cli.bag_fleet import camera_plan
    from clip_dinoiser_ros.mapping import save_map
    from clip_dinoiser_ros.pipeline.frame_geometry import PairingOptions
    from clip_dinoiser_ros.visualization import RANDOM_NOTICE

    prepare_output(args.out, args.overwrite)
    if args.backend != "torch":
        raise BagError(f"--backend {args.backend}: map needs the engine's features, which only the torch backend "
                       "returns (the exported graph ends at the class logits)")
    args.topics = args.image_topics
    try:
        settings = MapSettings(voxel_size=args.voxel_size, budget=args.budget, eviction=args.eviction,
                               max_depth_m=args.map_max_depth, carve=args.carve)
    except ValueError as error:
        raise BagError(f"map settings: {error}") from error
    options = BagMapOptions(camera_plan(args), PairingOptions(args.sync_wait_s, args.sync_queue_size, args.sync,
                                                              args.sync_slop_s),
                            args.depth_scale, args.short_side, args.map_frame, settings)
    args.prompts = FEATURE_PROMPTS
    result = map_bag(args.bag, load_engine(args), options, stop)
    save_map(result.voxel_map, args.out)
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.transform_errors.items()))
    print(f"wrote {args.out}: {len(result.voxel_map)} voxels ({result.voxel_map.nbytes / 2**20:.1f} MiB in memory) "
          f"from {result.integrated} of {result.frames} frames; skipped: {result.no_transform} without a transform "
          f"to {args.map_frame}" + (f" ({skipped})" if skipped else "") + f", {result.no_depth} without depth or "
          f"camera_info, {result.refused} refused", file=sys.stderr)
    if args.random_weights:
        print(f"{RANDOM_NOTICE}: the map's geometry is real, its features carry no meaning", file=sys.stderr)
    return 130 if result.interrupted else 0


def run_query(args: argparse.Namespace, stop: threading.Event, load_engine: Callable) -> int:
    from clip_dinoiser_ros.mapping import load_map, query
    from clip_dinoiser_ros.mapping.clusters import clusters
    from clip_dinoiser_ros.model.vocabulary import BACKGROUND_PROMPT
    from clip_dinoiser_ros.visualization import RANDOM_NOTICE

    try:
        voxel_map = load_map(args.map)
    except (ValueError, FileNotFoundError) as error:
        raise BagError(str(error)) from error
    args.prompts = [BACKGROUND_PROMPT, *args.texts] if args.background else list(args.texts)
    vocabulary = load_engine(args).vocabulary
    try:
        answer = query(voxel_map, vocabulary.class_embeddings().numpy(), 0 if args.background else None)
    except ValueError as error:
        raise BagError(f"{args.map}: {error}") from error
    keys = voxel_map.slots["keys"][voxel_map.rows]
    first = 1 if args.background else 0
    found = {}
    for index, name in enumerate(vocabulary.names[first:], start=first):
        wins = answer.labels == index
        found[name] = clusters(keys[wins], answer.scores[wins], voxel_map.settings.voxel_size, args.min_voxels)
    if args.json:
        print(json.dumps({"map": str(args.map), "voxels": len(voxel_map), "random_weights": bool(args.random_weights),
                          "texts": [{"text": name, "clusters": [vars(c) for c in places]}
                                    for name, places in found.items()]}, indent=2))
        return 0
    if args.random_weights:
        print(f"{RANDOM_NOTICE}: these clusters mean nothing", file=sys.stderr)
    for name, places in found.items():
        print(f"{name}: {len(places)} cluster(s)")
        for place in places:
            print("  centre ({:.3f}, {:.3f}, {:.3f}) m  size ({:.3f}, {:.3f}, {:.3f}) m  score {:.3f}  {} voxels"
                  .format(*place.centre, *place.size, place.score, place.voxels))
    return 0
