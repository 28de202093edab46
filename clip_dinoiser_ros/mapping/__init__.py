"""An open-vocabulary 3D map in numpy: posed RGB-D frames and the engine's patch features fused into a sparse
voxel map, asked with any text later. No ROS and no torch here; the node and the bag tools wrap it.

    from clip_dinoiser_ros.mapping import MapSettings, VoxelMap, query, save_map, load_map
    voxel_map = VoxelMap(MapSettings(voxel_size=0.05, budget=500_000))
    voxel_map.integrate(depth_m, camera, pose, f.features, f.objectness, rgb, f.grid, stamp)
    answer = query(voxel_map, text_embeddings, background_index=0)
"""
from .query import QueryResult, VoxelAnswers, query, voxel_answers
from .storage import load_map, save_map
from .voxel_map import MapSettings, VoxelMap

__all__ = ["MapSettings", "QueryResult", "VoxelAnswers", "VoxelMap", "load_map", "query", "save_map",
           "voxel_answers"]
