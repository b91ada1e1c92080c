"""The graphs Mirage launches, described once for ``ros2 launch`` and ``mirage launch``.

A :class:`LaunchSpec` lists launch arguments (default + description + which node parameter each
sets) and nodes (executable, name, whether its exit ends the launch, an optional argument that
must be non-empty for the node to start). Parameters come from ``config/<spec>.yaml`` in ROS 2's
layout, keyed by a node-name pattern: ``/**/generator: ros__parameters: {...}`` (any namespace;
rcl does not apply a bare ``generator:`` key to ``/mirage/generator``). Launch arguments
override them.

* ``ros2 launch mirage <name>_launch.py`` (a ROS 2 machine with launch_ros):
  :func:`ros_launch_description` turns a spec into launch_ros ``Node`` actions, each with
  ``--params-file config/<name>.yaml`` and the launch arguments as a second parameter file.
* ``mirage launch <name> [arg:=value ...]`` (:mod:`mirage_ros.launcher`, wherever rclpy runs,
  including the PyPI wheels, which have no ``launch`` package) starts the same node
  executables as separate rclpy processes with the same two parameter files.

:func:`node_params_from_yaml` reads the parameters a YAML file gives one node, following rcl's
matching of the keys (``/**/name``, ``/ns/name``, ``name``, ``/**``).

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

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LAUNCHES", "NODE_CONFIGS", "PARAMS_KEY", "LaunchArg", "LaunchSpec", "NodeSpec",
           "config_file", "model_params", "node_config_class", "node_key", "node_parameters",
           "node_params_from_yaml", "ros_launch_description", "yaml_node_names"]


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
        stop_last: on shutdown, stopped after the other nodes (the memory and the recorder:
            what the others still send while they finish is kept).
    """

    executable: str
    name: str
    exit_ends_launch: bool = False
    if_arg: str | None = None
    stop_last: bool = False


#: where :func:`mirage_ros.launcher.parse_launch_args` keeps ``node.param:=value`` overrides
PARAMS_KEY = "__node_params__"

#: each node executable's parameter class (``module:Class``), imported when needed
NODE_CONFIGS = {
    "memory_node": "mirage_ros.nodes.memory_node:MemoryNodeConfig",
    "trajectory_node": "mirage_ros.nodes.trajectory_node:TrajectoryNodeConfig",
    "generator_node": "mirage_ros.nodes.generator_node:GeneratorNodeConfig",
    "sim_camera_node": "mirage_ros.nodes.sim_camera_node:SimCameraNodeConfig",
    "recorder_node": "mirage_ros.nodes.recorder_node:RecorderNodeConfig",
    "replay_node": "mirage_ros.nodes.replay_node:ReplayNodeConfig",
}


def node_config_class(executable: str) -> type:
    """The config dataclass whose fields are ``executable``'s parameters."""
    import importlib

    module, _, cls = NODE_CONFIGS[executable].partition(":")
    return getattr(importlib.import_module(module), cls)


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
        LaunchArg("weights", "", "weights directory (Wan2.2-TI2V-5B in diffusers layout, or "
                  "a trained small model); '' = the shipped small model",
                  (("generator", "weights"),)),
        LaunchArg("side_branch", "", "side-branch file, 'zero', or '' = in weights/",
                  (("generator", "side_branch"),)),
        LaunchArg("steps", 40, "UniPC steps per chunk", (("generator", "steps"),)),
        LaunchArg("stop_sigma", 0.0, "stop the sampler at this noise level and publish the "
                  "model's posterior-mean estimate (0 = the paper's sampler)",
                  (("generator", "stop_sigma"),)),
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
            NodeSpec("memory_node", "memory", stop_last=True),
            NodeSpec("trajectory_node", "trajectory"),
            NodeSpec("generator_node", "generator", exit_ends_launch=True),
            NodeSpec("recorder_node", "recorder", if_arg="record", stop_last=True),
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
            NodeSpec("memory_node", "memory", stop_last=True),
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
            NodeSpec("memory_node", "memory", stop_last=True),
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


def model_params(spec: LaunchSpec, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Node parameters that follow from the generator's model: ``{node: {param: value}}``.

    The model is ``values["weights"]``, or with ``weights`` empty (and not ``tiny``) the
    shipped small model (:func:`~mirage_core.generator.loading.shipped_weights_dir`). From its
    directory (read, not loaded: :func:`~mirage_core.generator.loading.weights_profile`):

    * ``memory.stride``: its codec's stride (16 for Wan2.2-TI2V-5B, 8 for the small model),
      so the memory stores and reads latents on the model's grid;
    * ``memory.hole_fill``: the readout hole-fill passes it runs with (its marker's
      ``readout_hole_fill``), so the graph reads out as `mirage rollout` does;
    * ``sim_camera.width`` / ``height``: the resolution a small model was trained at (the
      full model has none: the config file's size stays).

    Nothing for tiny weights (stride 16, any size: the defaults) or a directory without a
    marker or codec files (the generator says what is missing when it loads). ``mirage
    launch`` applies these below the launch arguments and above the config file;
    ``NODE.PARAM:=VALUE`` still wins.

    Raises:
        MirageInputError: ``weights`` is not a directory, or its marker holds a bad value
            (``weights_profile``): refused before any node starts, rather than launching
            nodes on defaults that do not fit the model.
    """
    from mirage_core.errors import MirageInputError
    from mirage_core.generator.loading import shipped_weights_dir, weights_profile

    if values.get("tiny"):  # typed by parse_launch_args / the ros2 launch OpaqueFunction
        return {}
    weights = str(values.get("weights") or "") or (str(shipped_weights_dir() or ""))
    if not weights:
        return {}
    if not Path(weights).is_dir():
        raise MirageInputError(
            f"weights:={weights!r} is not a directory: give a weights directory (the "
            "diffusers-format Wan2.2-TI2V-5B, or a small model such as "
            "out/mirage-small-rooms), leave weights empty for the shipped model, or tiny:=true")
    prof = weights_profile(weights)
    nodes = {n.name for n in spec.nodes}
    out: dict[str, dict[str, Any]] = {}
    if "memory" in nodes and prof["latent_stride"] is not None:
        out["memory"] = {"stride": int(prof["latent_stride"]),
                         "hole_fill": int(prof["readout_hole_fill"])}
    if "sim_camera" in nodes and prof["image_hw"] is not None:
        h, w = prof["image_hw"]
        out["sim_camera"] = {"width": int(w), "height": int(h)}
    return out


def config_file(spec: str, share_dir: str | Path | None = None) -> Path:
    """``config/<spec>.yaml`` in the source tree or in ``share_dir`` (a colcon install)."""
    if share_dir is None:
        from mirage_ros.interfaces import interface_root

        share_dir = interface_root()
    return Path(share_dir) / "config" / f"{spec}.yaml"


# ------------------------------------------------------------------------------ parameter YAML
def node_key(node_name: str) -> str:
    """The key of a node's section in the parameter files: ``/**/<node_name>``.

    ``/**`` matches any namespace, so the same file serves ``ros2 launch`` and ``mirage launch``
    with any ``namespace:=``. A bare ``<node_name>:`` key would be taken by rcl as
    ``/<node_name>`` and never reach ``/mirage/<node_name>`` (measured, rclpy and ros2 launch).
    """
    return f"/**/{node_name}"


def _key_pattern(key: str) -> re.Pattern:
    """rcl's reading of a parameter-file key as a fully qualified node name pattern: a key
    without a leading ``/`` is absolute, ``*`` is one name token, ``**`` any number of them."""
    parts = [p for p in str(key).strip("/").split("/") if p]
    rx = ""
    for p in parts:
        if p == "**":
            rx += r"(?:/[^/]+)*"
        elif p == "*":
            rx += r"/[^/]+"
        else:
            rx += "/" + re.escape(p)
    return re.compile(rx or "/")


def _load_yaml(source: str | Path | dict) -> dict:
    if isinstance(source, dict):
        return source
    import yaml

    path = config_file(source) if str(source) in LAUNCHES else Path(source)
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a ROS 2 parameter file is a mapping of node keys")
    return data


def _section(data: dict, key: str) -> dict:
    body = data[key]
    if not isinstance(body, dict) or not isinstance(body.get("ros__parameters"), dict):
        raise ValueError(f"parameter file section {key!r} has no 'ros__parameters:' mapping")
    return body["ros__parameters"]


def yaml_node_names(source: str | Path | dict) -> set[str]:
    """The node names a parameter file has sections for: the last part of each key
    (``/**/generator``, ``/mirage/generator`` and ``generator`` all name ``generator``); keys
    for every node (``/**``, ``/**/*``) are left out."""
    out = set()
    for key in _load_yaml(source):
        last = str(key).rstrip("/").rsplit("/", 1)[-1]
        if last and "*" not in last:
            out.add(last)
    return out


def node_params_from_yaml(source: str | Path | dict, node_name: str,
                          namespace: str | None = None) -> dict[str, Any]:
    """The parameters a ROS 2 parameter file gives one node, sections merged in file order
    (later ones win, as in rcl).

    Args:
        source: a launch spec name (its ``config/<name>.yaml``), a YAML path, or the loaded
            mapping.
        node_name: the node's name (``generator``).
        namespace: the node's namespace (``/mirage``): the keys are matched as rcl matches
            them (``/**/generator`` and ``/mirage/generator`` apply, a bare ``generator`` does
            not). ``None``: any section whose key ends in the node's name applies
            (``/**/generator``, ``/ns/generator``, ``generator``), plus ``/**``.

    Raises:
        ValueError: a matching section without a ``ros__parameters`` mapping.
    """
    data = _load_yaml(source)
    out: dict[str, Any] = {}
    if namespace is None:
        for key in data:
            last = str(key).rstrip("/").rsplit("/", 1)[-1]
            if last in (node_name, "*", "**"):
                out.update(_section(data, key))
        return out
    fqn = "/".join(p for p in (*namespace.split("/"), node_name) if p)
    for key in data:
        if _key_pattern(key).fullmatch("/" + fqn):
            out.update(_section(data, key))
    return out


def node_parameters(spec: LaunchSpec, values: dict[str, Any],
                    model: dict[str, dict[str, Any]] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """What the launch gives each node on top of the config file: ``{node: {param: value}}``.

    In order, later ones winning: what follows from the model (``model``, default
    :func:`model_params`, which reads the weights directory), the
    launch arguments (``values``, typed), then ``NODE.PARAM:=VALUE`` items (``values
    [PARAMS_KEY]``, :func:`mirage_ros.launcher.parse_launch_args`). Both ``mirage launch`` and
    ``ros2 launch`` pass exactly this, as a second parameter file after the config file.
    """
    src = model_params(spec, values) if model is None else model
    per_node = {node: dict(params) for node, params in src.items()}
    for a in spec.args:
        for node_name, param in a.sets:
            per_node.setdefault(node_name, {})[param] = values[a.name]
    for node_name, params in values.get(PARAMS_KEY, {}).items():
        per_node.setdefault(node_name, {}).update(params)
    return per_node


def ros_launch_description(name: str):
    """A launch_ros ``LaunchDescription`` of ``LAUNCHES[name]`` (ROS 2 machines with
    launch_ros; not on PyPI, so ``mirage launch`` is the way elsewhere).

    The launch arguments are declared with their defaults and descriptions; the nodes are made
    when the launch runs (an ``OpaqueFunction``), once the arguments' values are known, so each
    node gets what it gets under ``mirage launch``: the config file (``--params-file``; its
    ``/**/<node>`` keys match the node in any namespace) and then :func:`node_parameters` (the
    model's, then the arguments'), so the arguments win. Unverified here: launch_ros does not
    install from PyPI (the pure part, :func:`node_parameters`, is tested).
    """
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    spec = LAUNCHES[name]
    params_file = str(config_file(name, get_package_share_directory("mirage")))

    def make_nodes(context, *args, **kwargs):
        from mirage_ros.launcher import _enabled, _typed

        values = {a.name: _typed(a.name, a.default, LaunchConfiguration(a.name).perform(context))
                  for a in spec.args}
        per_node = node_parameters(spec, values)
        nodes = []
        for n in spec.nodes:
            if n.if_arg is not None and not _enabled(values.get(n.if_arg)):
                continue
            kw = {"on_exit": Shutdown()} if n.exit_ends_launch else {}
            nodes.append(Node(package="mirage", executable=n.executable, name=n.name,
                              namespace=str(values["namespace"]), output="screen",
                              parameters=[params_file, per_node.get(n.name, {})], **kw))
        return nodes

    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=str(a.default).lower()
                                if isinstance(a.default, bool) else str(a.default),
                                description=a.description) for a in spec.args),
        OpaqueFunction(function=make_nodes),
    ])
