"""Every parameter of the mapping node, in the segmentation node's table form (ros/parameters.py's
ParameterSpec, refusals and wording), so both nodes refuse and document values alike. No torch here.

The map's own settings (mapping.MapSettings) apply at configure: a new voxel size or budget makes a new map,
which only cleanup -> configure does (the map in memory is dropped then; ~/save it first).
"""
from __future__ import annotations

from ..mapping.voxel_map import EVICTION_POLICIES, MapSettings
from ..pipeline.image_codec import REP118_DEPTH_SCALE
from .parameters import (LIVE, REACTIVATE, RECONFIGURE, START, ParameterSpec, _optional_topics_problem,
                         _prompts_problem, _topic_list_problem)

DEFAULT_SETTINGS = MapSettings()
TOPICS_RULE = "one topic name or '' per feature_topics entry, or [''] for "

MAP_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("feature_topics", ["/camera/segmentation/features"],
                  "SegmentationFeatures of each camera (the segmentation node's <camera>/segmentation/features)",
                  REACTIVATE, check=_topic_list_problem, rule="a non-empty list of distinct topic names"),
    ParameterSpec("depth_topics", ["/camera/aligned_depth_to_color/image_raw"],
                  "Depth registered to each camera's colour image (16UC1 in depth_scale units or 32FC1 metres), "
                  "one per feature_topics entry", REACTIVATE, check=_topic_list_problem,
                  rule="one topic name per feature_topics entry"),
    ParameterSpec("camera_info_topics", [""],
                  "camera_info of each camera, one per feature_topics entry; '' = <camera>/camera_info beside "
                  "<camera>/segmentation/features", REACTIVATE, check=_optional_topics_problem,
                  rule=TOPICS_RULE + "the siblings of all"),
    ParameterSpec("image_topics", [""],
                  "Colour image of each camera (the one segmented), one per feature_topics entry, to colour the "
                  "voxels; '' = none: its voxels are grey", REACTIVATE, check=_optional_topics_problem,
                  rule=TOPICS_RULE + "grey voxels for all"),
    ParameterSpec("input_reliability", "best_effort", "QoS reliability of every input subscription", REACTIVATE,
                  choices=("best_effort", "reliable")),
    ParameterSpec("sync", "exact", "How a camera's features, depth, camera_info (and colour) are paired: identical "
                  "stamps, or within sync_slop_s (approximate)", REACTIVATE, choices=("exact", "approximate")),
    ParameterSpec("sync_slop_s", 0.02, "approximate sync: the largest stamp difference of a pair, in seconds",
                  REACTIVATE, value_range=(0.0, 1.0)),
    ParameterSpec("sync_queue_size", 10, "Messages message_filters keeps per input while a pair is incomplete",
                  REACTIVATE, value_range=(1, 1000)),
    ParameterSpec("depth_scale", REP118_DEPTH_SCALE, "Metres per unit of 16UC1 depth: 0.001 = millimetres "
                  "(REP 118), 0.0002 for 5000 units per metre; 32FC1 depth is metres whatever this says", LIVE,
                  value_range=(1e-06, 1.0)),
    ParameterSpec("max_image_pixels", 16_777_216, "Larger depth or colour images are refused", LIVE,
                  value_range=(1, 1 << 30)),
    ParameterSpec("map_frame", "map", "The map's frame: each frame's pose is the TF transform from its depth's "
                  "frame_id to this frame at the depth's stamp (no wait: a frame without one is skipped and "
                  "counted)", RECONFIGURE),
    ParameterSpec("voxel_size", DEFAULT_SETTINGS.voxel_size, "Edge of a voxel, metres; also the grid's resolution",
                  RECONFIGURE, value_range=(0.005, 10.0)),
    ParameterSpec("budget", DEFAULT_SETTINGS.budget, "Most voxels the map holds (then the eviction policy drops some)",
                  RECONFIGURE, value_range=(1, 1 << 28)),
    ParameterSpec("eviction", DEFAULT_SETTINGS.eviction, "Over budget, drop the voxels farthest from the camera "
                  "(distance) or the least recently seen (age)", RECONFIGURE, choices=EVICTION_POLICIES),
    ParameterSpec("max_weight", DEFAULT_SETTINGS.max_weight, "Frames of evidence a voxel keeps: how many frames "
                  "seeing through it erase it", RECONFIGURE, value_range=(1.0, 1e6)),
    ParameterSpec("max_depth_m", DEFAULT_SETTINGS.max_depth_m, "Depth beyond this is neither mapped nor carved",
                  RECONFIGURE, value_range=(0.01, 1000.0)),
    ParameterSpec("carve", DEFAULT_SETTINGS.carve, "Voxels a frame sees through lose weight (what moved goes away)",
                  RECONFIGURE),
    ParameterSpec("carve_margin_m", DEFAULT_SETTINGS.carve_margin_m, "A voxel must lie this far in front of the "
                  "measured depth to be seen through", RECONFIGURE, value_range=(0.0, 10.0)),
    ParameterSpec("feature_dtype", DEFAULT_SETTINGS.feature_dtype, "Storage of the voxels' features (float32 "
                  "doubles the memory)", RECONFIGURE, choices=("float16", "float32")),
    ParameterSpec("prompts", ["floor", "wall", "person", "chair|seat", "table"],
                  "Labels of semantic_map/points ('a|b' = synonyms of class 'a'); a change is encoded by "
                  "encode_texts_service and applies at the next publication", LIVE, check=_prompts_problem,
                  rule="a non-empty list of distinct, non-blank prompts"),
    ParameterSpec("delta", 0.99, "Background rule (prompt 0 'background', or a query with_background): a voxel "
                  "less confident than delta and not an object is background", LIVE, value_range=(0.0, 1.0)),
    ParameterSpec("encode_texts_service", "clip_dinoiser/encode_texts",
                  "The segmentation node's EncodeTexts service: text embeddings for prompts, queries and keep-out "
                  "(a relative name resolves in this node's namespace, as the segmentation node's does)",
                  RECONFIGURE),
    ParameterSpec("encode_timeout_s", 5.0, "How long a query or keep-out waits for the text embeddings before it "
                  "is refused", LIVE, value_range=(0.1, 600.0)),
    ParameterSpec("publish_rate_hz", 1.0, "Rate of semantic_map/points and semantic_map/grid (each only when the "
                  "map, the prompts or the keep-out changed)", REACTIVATE, value_range=(0.01, 100.0)),
    ParameterSpec("min_cluster_voxels", 3, "Smallest connected group of voxels a query reports", LIVE,
                  value_range=(1, 1 << 24)),
    ParameterSpec("map_file", "~/.ros/semantic_map.npz", "File of ~/save and ~/load when they are given no path",
                  LIVE),
    ParameterSpec("autostart", True, "Configure and activate at start-up (read at start only: a run-time change "
                  "is refused)", START),
)

MAP_SPECS = {spec.name: spec for spec in MAP_PARAMETERS}
MAP_SETTING_NAMES = ("voxel_size", "budget", "eviction", "max_weight", "max_depth_m", "carve", "carve_margin_m",
                     "feature_dtype")
