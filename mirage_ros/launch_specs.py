"""The graphs Mirage launches, described once for ``ros2 launch`` and ``mirage launch``.

A :class:`LaunchSpec` lists launch arguments (default + description + which node parameter each
sets) and nodes (executable, name, whether its exit ends the launch, an optional argument that
must be non-empty for the node to start). Parameters come from ``config/<spec>.yaml`` (ROS 2
layout, ``<node>: ros__parameters:``); launch arguments override them.

* On ROS 2 machines ``launch/<name>_launch.py`` turns a spec into a ``LaunchDescription``
  (:func:`ros_launch_description`, launch_ros ``Node`` actions).
* Elsewhere ``mirage launch <name> [arg:=value ...]`` (:mod:`mirage_ros.launcher`) starts the
  same node executables as separate processes with the same YAML, on the DDS backend,
  loopback-only unless ``--network``.

Graphs:
    ``sim_rollout``  simulated camera + trajectory + memory + generator (+ bag recorder): one
                     rollout along a named motion from the simulated camera's view; ends
                     when the generator finished ``exit_after`` rollouts.
    ``planner``      memory + generator serving the ``imagine`` action (and ``target_path``)
                     for a robot planner; with ``sim_camera:=true`` the simulated camera
                     stands in for the robot's.
    ``bag_replay``   replays a rosbag2 of camera images + poses through memory + generator
                     and writes per-frame PSNR/SSIM, timing (JSON) and a plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LAUNCHES", "LaunchArg", "LaunchSpec", "NodeSpec", "config_file",
           "ros_launch_description"]


@dataclass(frozen=True)
class LaunchArg:
    """A launch argument.

    Attributes:
        name: argument name (``name:=value``).
        default: default value as the parameter's type (bool, int, float, str).
        description: what it sets, shown by ``ros2 launch -s`` and ``mirage launch NAME -h``.
        sets: ``("node", "param")`` pairs it overrides; empty = used by the launch itself
            (``namespace``, node conditions).
    """

    name: str
    default: bool | int | float | str
    description: str
    sets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    """A node of a launch.

    Attributes:
        executable: module under ``mirage_ros.nodes`` and ``ros2 run mirage`` executable.
        name: node name.
        exit_ends_launch: when this node exits, the whole launch shuts down.
        if_arg: start only when this launch argument is non-empty / true.
    """

    executable: str
    name: str
    exit_ends_launch: bool = False
    if_arg: str | None = None


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    args: tuple[LaunchArg, ...] = field(default_factory=tuple)

    def arg(self, name: str) -> LaunchArg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


def _common(generator_exit: int, depth: str, masks: str) -> tuple[LaunchArg, ...]:
    return (
        LaunchArg("namespace", "/mirage", "namespace of every node, topic and service"),
        LaunchArg("tiny", False, "tiny random-weight models on the CPU (frames are noise)",
                  (("generator", "tiny"),)),
        LaunchArg("weights", "", "diffusers-format Wan2.2-TI2V-5B directory",
                  (("generator", "weights"),)),
        LaunchArg("side_branch", "", "side-branch file, 'zero', or '' = in weights/",
                  (("generator", "side_branch"),)),
        LaunchArg("steps", 40, "UniPC steps per chunk", (("generator", "steps"),)),
        LaunchArg("device", "", "compute device ('' = cuda if available)",
                  (("generator", "device"),)),
        LaunchArg("depth", depth, "depth of generated frames: sim, da3:DIR, constant:Z",
                  (("generator", "depth"),)),
        LaunchArg("masks", masks, "dynamic/sky masks of generated frames: none, sim, sam3:DIR",
                  (("generator", "masks"),)),
        LaunchArg("memory_file", "", "memory autosave/reload file ('' = off)",
                  (("memory", "autosave_path"),)),
        LaunchArg("exit_after", generator_exit,
                  "the generator exits after this many rollouts (0 = serve forever)",
                  (("generator", "exit_after"),)),
    )


LAUNCHES: dict[str, LaunchSpec] = {
    "sim_rollout": LaunchSpec(
        "sim_rollout",
        "Simulated camera rollout: PyBullet camera -> trajectory -> memory + generator.",
        nodes=(
            NodeSpec("sim_camera_node", "sim_camera"),
            NodeSpec("memory_node", "memory"),
            NodeSpec("trajectory_node", "trajectory"),
            NodeSpec("generator_node", "generator", exit_ends_launch=True),
            NodeSpec("recorder_node", "recorder", if_arg="record"),
        ),
        args=(*_common(1, "sim", "sim"),
              LaunchArg("motion", "loop", "camera motion (orbit_left, loop, ...)",
                        (("trajectory", "motion"),)),
              LaunchArg("chunks", 3, "chunks per rollout (32 frames each)",
                        (("trajectory", "chunks"),)),
              LaunchArg("record", "", "record the rollout into this rosbag2 directory "
                        "('' = no recording)", (("recorder", "out"),))),
    ),
    "planner": LaunchSpec(
        "planner",
        "Planner serving: memory + generator answering the imagine action.",
        nodes=(
            NodeSpec("memory_node", "memory"),
            NodeSpec("generator_node", "generator", exit_ends_launch=True),
            NodeSpec("sim_camera_node", "sim_camera", if_arg="sim_camera"),
        ),
        args=(*_common(0, "sim", "sim"),
              LaunchArg("sim_camera", True, "start the simulated camera (false on a robot: "
                        "remap its camera to camera/image, camera/pose, camera/camera_info)")),
    ),
    "bag_replay": LaunchSpec(
        "bag_replay",
        "Rosbag replay evaluation: bag camera -> memory + generator -> PSNR/SSIM report.",
        nodes=(
            NodeSpec("memory_node", "memory"),
            NodeSpec("generator_node", "generator"),
            NodeSpec("replay_node", "replay", exit_ends_launch=True),
        ),
        args=(*_common(1, "", "none"),
              LaunchArg("bag", "", "input rosbag2 directory (camera images + poses)",
                        (("replay", "bag"),)),
              LaunchArg("out", "out/replay", "report directory (report.json, report.png)",
                        (("replay", "out"),)),
              LaunchArg("chunks", 0, "chunks to generate (0 = as many as the bag holds)",
                        (("replay", "chunks"),))),
    ),
}


def config_file(spec: str, share_dir: str | Path | None = None) -> Path:
    """``config/<spec>.yaml`` in the source tree or in ``share_dir`` (a colcon install)."""
    if share_dir is None:
        from mirage_ros.interfaces import interface_root

        share_dir = interface_root()
    return Path(share_dir) / "config" / f"{spec}.yaml"


def ros_launch_description(name: str):
    """A launch_ros ``LaunchDescription`` of ``LAUNCHES[name]`` (ROS 2 machines only)."""
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument, Shutdown
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration, PythonExpression
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    from launch import LaunchDescription

    spec = LAUNCHES[name]
    params_file = str(config_file(name, get_package_share_directory("mirage")))
    actions: list = [
        DeclareLaunchArgument(a.name, default_value=str(a.default).lower()
                              if isinstance(a.default, bool) else str(a.default),
                              description=a.description)
        for a in spec.args
    ]
    for n in spec.nodes:
        overrides = {}
        for a in spec.args:
            for node_name, param in a.sets:
                if node_name == n.name:
                    overrides[param] = ParameterValue(LaunchConfiguration(a.name),
                                                      value_type=type(a.default))
        kw = {}
        if n.if_arg is not None:
            kw["condition"] = IfCondition(PythonExpression(
                ["'", LaunchConfiguration(n.if_arg), "' not in ('', 'false', 'False', '0')"]))
        if n.exit_ends_launch:
            kw["on_exit"] = Shutdown()
        actions.append(Node(package="mirage", executable=n.executable, name=n.name,
                            namespace=LaunchConfiguration("namespace"), output="screen",
                            parameters=[params_file, overrides], **kw))
    return LaunchDescription(actions)
