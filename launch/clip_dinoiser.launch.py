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
until the launch itself is stopped.
"""
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.utilities import make_namespace_absolute, prefix_namespace

from clip_dinoiser_ros.ros.parameters import PARAMETERS

DEFAULT_PARAMS = Path(__file__).resolve().parent.parent / "config" / "clip_dinoiser.yaml"
NOT_GIVEN = ""
FORWARDED = {spec.name: spec.description for spec in PARAMETERS}
FORWARDED["use_sim_time"] = "Use /clock (bag replay) instead of the system clock"
NODE_NAME = "clip_dinoiser"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def _logger_name(context: LaunchContext) -> str:
    """The node's rcl logger, ``<namespace with dots>.<name>``: its namespace as launch_ros's Node expands it
    (under an enclosing PushRosNamespace too)."""
    namespace = make_namespace_absolute(prefix_namespace(context.launch_configurations.get("ros_namespace"),
                                                         LaunchConfiguration("namespace").perform(context)))
    return ".".join([*filter(None, (namespace or "").split("/")), NODE_NAME])


def _respawn_delay(context: LaunchContext) -> float:
    text = LaunchConfiguration("respawn_delay").perform(context)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"respawn_delay: {text!r} is refused; allowed: seconds, e.g. 2.0") from None


def _node(context: LaunchContext) -> list[LifecycleNode]:
    # rcl lets the later source win: the file first, then the arguments given.
    overrides = ["--params-file", LaunchConfiguration("params_file").perform(context),
                 "--log-level", f"{_logger_name(context)}:={LaunchConfiguration('log_level').perform(context)}"]
    for name in FORWARDED:
        value = LaunchConfiguration(name).perform(context)
        if value != NOT_GIVEN:
            overrides += ["-p", f"{name}:={value}"]
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
        *(DeclareLaunchArgument(name, default_value=NOT_GIVEN,
                                description=f"{description}. Not given: the value in params_file")
          for name, description in FORWARDED.items()),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
