"""Launch the clip_dinoiser_map lifecycle node (the semantic map; it configures and activates itself: autostart).

    ros2 launch clip_dinoiser_ros clip_dinoiser_mapping.launch.py map_params_file:=my_map.yaml \
        feature_topics:="['/front/segmentation/features']" depth_topics:="['/front/aligned_depth_to_color/image_raw']"

The params file (map_params_file, default config/clip_dinoiser_mapping.yaml) is the base; every node parameter is also a launch
argument, passed as ``-p name:=value`` only when given, so the node checks it like any other value.
``clip_dinoiser.launch.py mapping:=true`` includes this file (with its namespace and log level).
Text embeddings come from the segmentation node's ~/encode_texts (``encode_texts_service``).
"""
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from clip_dinoiser_ros.ros.launch_arguments import LOG_LEVELS, NOT_GIVEN, ros_arguments
from clip_dinoiser_ros.ros.map_parameters import MAP_PARAMETERS

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "config" / "clip_dinoiser_mapping.yaml"
FORWARDED = {spec.name: spec.description for spec in MAP_PARAMETERS}
FORWARDED["use_sim_time"] = "Use /clock (bag replay) instead of the system clock"
NODE_NAME = "clip_dinoiser_map"


def _node(context: LaunchContext) -> list[LifecycleNode]:
    arguments = ros_arguments(context, "map_params_file", NODE_NAME, FORWARDED)
    return [LifecycleNode(package="clip_dinoiser_ros", executable="clip-dinoiser-map-node", name=NODE_NAME,
                          namespace=LaunchConfiguration("namespace"), output="screen", ros_arguments=arguments)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("map_params_file", default_value=str(DEFAULT_PARAMS),
                              description="YAML with the mapping node's parameters: the base that arguments override"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("log_level", default_value="info", choices=list(LOG_LEVELS),
                              description="Level of the node's logger"),
        *(DeclareLaunchArgument(name, default_value=NOT_GIVEN,
                                description=f"{description}. Not given: the value in map_params_file")
          for name, description in FORWARDED.items()),
        OpaqueFunction(function=_node),
    ])
