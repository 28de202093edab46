"""Launch the clip_dinoiser lifecycle node (it configures and activates itself: autostart).

    ros2 launch clip_dinoiser_ros clip_dinoiser.launch.py params_file:=my_robot.yaml namespace:=perception \
        image_topics:="['/front/image_raw', '/rear/image_raw/compressed']" prompts:="['floor', 'chair|seat']"

The params file is the base. Every node parameter is also a launch argument, and one overrides the file
only when it is given on the command line: it is passed to the node as ``-p name:=value``, so the node
checks it exactly like a value from the file or from ``ros2 run ... -p`` (a refused value makes the
node log why and exit 1). ``ros2 launch ... --show-args`` lists them all.

Two arguments are the launch's own: ``log_level:=debug`` (the node's logger only, as
``--ros-args --log-level <node logger>:=debug``: rcl's own loggers stay quiet) and ``respawn:=true``, which
starts the node again ``respawn_delay`` seconds after it exits, however it exits (launch's ExecuteLocal),
until the launch itself is stopped. ``mapping:=true`` also starts the semantic map node
(clip_dinoiser_mapping.launch.py, its parameters from ``map_params_file``, this namespace and log level).
"""
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from clip_dinoiser_ros.ros.launch_arguments import LOG_LEVELS, NOT_GIVEN, ros_arguments
from clip_dinoiser_ros.ros.parameters import PARAMETERS

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "config" / "clip_dinoiser.yaml"
MAPPING_LAUNCH = Path(__file__).resolve().parent / "clip_dinoiser_mapping.launch.py"
DEFAULT_MAP_PARAMS = DEFAULT_PARAMS.parent / "clip_dinoiser_mapping.yaml"
FORWARDED = {spec.name: spec.description for spec in PARAMETERS}
FORWARDED["use_sim_time"] = "Use /clock (bag replay) instead of the system clock"
NODE_NAME = "clip_dinoiser"


def _respawn_delay(context: LaunchContext) -> float:
    text = LaunchConfiguration("respawn_delay").perform(context)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"respawn_delay: {text!r} is refused; allowed: seconds, e.g. 2.0") from None


def _node(context: LaunchContext) -> list[LifecycleNode]:
    overrides = ros_arguments(context, "params_file", NODE_NAME, FORWARDED)
    return [LifecycleNode(
        package="clip_dinoiser_ros",
        executable="clip_dinoiser_node",
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        ros_arguments=overrides,
        respawn=LaunchConfiguration("respawn"),
        respawn_delay=_respawn_delay(context),
    )]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("params_file", default_value=str(DEFAULT_PARAMS),
                              description="YAML with the node's parameters: the base that arguments override"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("log_level", default_value="info", choices=list(LOG_LEVELS),
                              description="Level of the node's logger"),
        DeclareLaunchArgument("respawn", default_value="false", choices=["true", "false"],
                              description="Start the node again when it exits (until the launch is stopped)"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0",
                              description="Seconds between the node's exit and its restart, with respawn:=true"),
        DeclareLaunchArgument("mapping", default_value="false", choices=["true", "false"],
                              description="Also start the semantic map node (clip_dinoiser_mapping.launch.py)"),
        DeclareLaunchArgument("map_params_file", default_value=str(DEFAULT_MAP_PARAMS),
                              description="With mapping:=true: the mapping node's parameters"),
        *(DeclareLaunchArgument(name, default_value=NOT_GIVEN,
                                description=f"{description}. Not given: the value in params_file")
          for name, description in FORWARDED.items()),
    ]
    mapping = GroupAction(  # the mapping launch sees only what is passed here, not this node's arguments
        [IncludeLaunchDescription(PythonLaunchDescriptionSource(str(MAPPING_LAUNCH)))],
        condition=IfCondition(LaunchConfiguration("mapping")), forwarding=False,
        launch_configurations={name: LaunchConfiguration(name)
                               for name in ("namespace", "log_level", "map_params_file")})
    return LaunchDescription([*arguments, OpaqueFunction(function=_node), mapping])
