"""Launch the clip_dinoiser lifecycle node (it configures and activates itself: autostart).

    ros2 launch clip_dinoiser_ros clip_dinoiser.launch.py params_file:=my_robot.yaml namespace:=perception \
        image_topics:="['/front/image_raw', '/rear/image_raw/compressed']" prompts:="['floor', 'chair|seat']"

The params file is the base. Every node parameter is also a launch argument, and one overrides the file
only when it is given on the command line: it is passed to the node as ``-p name:=value``, so the node
checks it exactly like a value from the file or from ``ros2 run ... -p`` (a refused value makes the
node log why and exit 1). ``ros2 launch ... --show-args`` lists them all.
"""
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from clip_dinoiser_ros.ros.parameters import PARAMETERS

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "config" / "clip_dinoiser.yaml"
NOT_GIVEN = ""
FORWARDED = {spec.name: spec.description for spec in PARAMETERS}
FORWARDED["use_sim_time"] = "Use /clock (bag replay) instead of the system clock"


def _node(context: LaunchContext) -> list[LifecycleNode]:
    # rcl lets the later source win: the file first, then the arguments given.
    overrides = ["--params-file", LaunchConfiguration("params_file").perform(context)]
    for name in FORWARDED:
        value = LaunchConfiguration(name).perform(context)
        if value != NOT_GIVEN:
            overrides += ["-p", f"{name}:={value}"]
    return [LifecycleNode(
        package="clip_dinoiser_ros",
        executable="clip_dinoiser_node",
        name="clip_dinoiser",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        ros_arguments=overrides,
    )]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("params_file", default_value=str(DEFAULT_PARAMS),
                              description="YAML with the node's parameters: the base that arguments override"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        *(DeclareLaunchArgument(name, default_value=NOT_GIVEN,
                                description=f"{description}. Not given: the value in params_file")
          for name, description in FORWARDED.items()),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
