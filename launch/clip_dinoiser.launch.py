"""Launch the clip_dinoiser lifecycle node (it configures and activates itself: autostart).

    ros2 launch clip_dinoiser_ros clip_dinoiser.launch.py \
        image_topics:="['/front/image_raw', '/rear/image_raw/compressed']" \
        prompts:="['floor', 'chair|seat', 'person']" heads:=/path/to/last.pt namespace:=perception
"""
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "config" / "clip_dinoiser.yaml"


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("params_file", default_value=str(DEFAULT_PARAMS),
                              description="YAML with the node's parameters (config/clip_dinoiser.yaml)"),
        DeclareLaunchArgument("image_topics", default_value="['/camera/image_raw']",
                              description="Camera topic(s); a name ending in /compressed is read as CompressedImage"),
        DeclareLaunchArgument("prompts", default_value="['floor', 'wall', 'person', 'chair|seat', 'table']",
                              description="Class prompts; 'a|b' lists synonyms of one class"),
        DeclareLaunchArgument("heads", default_value="", description="CLIP-DINOiser heads checkpoint (last.pt)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
    ]
    node = LifecycleNode(
        package="clip_dinoiser_ros",
        executable="clip_dinoiser_node",
        name="clip_dinoiser",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "image_topics": ParameterValue(LaunchConfiguration("image_topics"), value_type=list[str]),
                "prompts": ParameterValue(LaunchConfiguration("prompts"), value_type=list[str]),
                "heads": LaunchConfiguration("heads"),
            },
        ],
    )
    return LaunchDescription([*arguments, node])
