"""ROS 2 command-line arguments (``--ros-args ...``) and parameter YAML files, without rclpy.

The DDS backend reads the same arguments ``ros2 run`` / ``ros2 launch`` pass to a node, so one
command line works on both backends::

    python -m mirage_ros.nodes.memory_node --ros-args -r __node:=memory -r __ns:=/mirage \\
        --params-file config/sim_rollout.yaml -p autosave_path:=/tmp/memory.safetensors

Supported (as rcl parses them): ``-p/--param name:=value`` (value parsed as YAML),
``--params-file FILE``, ``-r/--remap [node:]from:=to`` (``__node``, ``__ns`` and topic or
service names), ``--log-level [name:=]LEVEL``; ``--`` ends the ROS arguments. Anything else
inside ``--ros-args`` is an error, as in rcl.

Parameter files use ROS 2's layout: ``<node>: ros__parameters: {...}`` where ``<node>`` is the
node name, its fully qualified name, or a wildcard (``/**``, ``/**/name``); nested mappings
flatten to dotted names. Later sources win: files in order, then ``-p``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirage_core.errors import MirageInputError

__all__ = ["RosArgs", "load_params_file", "node_params", "parse_ros_args"]


@dataclass
class RosArgs:
    """What ``--ros-args`` said.

    Attributes:
        node_name: ``-r __node:=NAME`` or ``None``.
        namespace: ``-r __ns:=/NS`` or ``None``.
        params_files: ``--params-file`` paths, in order.
        params: ``-p name:=value`` values (YAML-typed).
        remaps: ``from -> to`` name remappings (``__node``/``__ns`` excluded).
        log_level: ``--log-level`` value or ``None``.
    """

    node_name: str | None = None
    namespace: str | None = None
    params_files: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    remaps: dict[str, str] = field(default_factory=dict)
    log_level: str | None = None


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _split_assign(arg: str, flag: str) -> tuple[str, str]:
    if ":=" not in arg:
        raise MirageInputError(f"{flag} expects 'name:=value', got {arg!r}")
    k, _, v = arg.partition(":=")
    if not k:
        raise MirageInputError(f"{flag} expects 'name:=value', got {arg!r}")
    return k, v


def parse_ros_args(argv: list[str], node_name: str | None = None) -> tuple[list[str], RosArgs]:
    """Split ``argv`` into (non-ROS arguments, :class:`RosArgs`).

    ``node_name``: the node's name, for node-specific remaps (``name:from:=to``).
    Raises:
        MirageInputError: an unknown flag or a malformed value inside ``--ros-args``.
    """
    rest: list[str] = []
    ra = RosArgs()
    i, in_ros = 0, False
    while i < len(argv):
        a = argv[i]
        if a == "--ros-args":
            in_ros = True
            i += 1
            continue
        if not in_ros:
            rest.append(a)
            i += 1
            continue
        if a == "--":
            in_ros = False
            i += 1
            continue

        def value(flag: str, i: int = i) -> str:
            if i + 1 >= len(argv):
                raise MirageInputError(f"{flag} needs a value")
            return argv[i + 1]

        if a in ("-p", "--param"):
            k, v = _split_assign(value(a), a)
            ra.params[k] = _yaml_value(v)
        elif a == "--params-file":
            ra.params_files.append(value(a))
        elif a in ("-r", "--remap"):
            k, v = _split_assign(value(a), a)
            if k.count(":") == 1 and not k.startswith("/"):
                target, _, k = k.partition(":")
                if node_name is not None and target != node_name:
                    i += 2
                    continue
            if k == "__node" or k == "__name":
                ra.node_name = v
            elif k == "__ns":
                ra.namespace = v
            else:
                ra.remaps[k] = v
        elif a == "--log-level":
            lv = value(a)
            ra.log_level = lv.partition(":=")[2] if ":=" in lv else lv
        elif a in ("-e", "--enclave"):
            pass  # security enclaves are not supported by the DDS backend; accepted, ignored
        else:
            raise MirageInputError(f"unknown ROS argument {a!r} (inside --ros-args)")
        i += 2
    return rest, ra


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def load_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{node key: {param: value}}`` from a ROS 2 parameter YAML file.

    Raises:
        MirageInputError: missing or unreadable file, or not ROS 2's layout (names the key).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise MirageInputError(f"parameter file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise MirageInputError(f"parameter file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise MirageInputError(f"parameter file {p}: the top level must be a mapping")
    out: dict[str, dict[str, Any]] = {}
    for key, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise MirageInputError(
                f"parameter file {p}: {key!r} must hold 'ros__parameters:' (ROS 2 layout "
                f"'<node>: ros__parameters: {{...}}')"
            )
        params = body["ros__parameters"] or {}
        if not isinstance(params, dict):
            raise MirageInputError(f"parameter file {p}: {key}.ros__parameters is not a mapping")
        out[str(key)] = _flatten(params)
    return out


def _key_matches(key: str, name: str, fqn: str) -> bool:
    if key in (name, fqn, "/**", "**"):
        return True
    pattern = key if key.startswith("/") else "/**/" + key
    return fnmatch.fnmatchcase(fqn, pattern.replace("/**/", "/*")) or fnmatch.fnmatchcase(
        fqn, pattern.replace("/**/", "/")
    )


def node_params(ra: RosArgs, name: str, namespace: str) -> dict[str, Any]:
    """Parameter overrides for node ``namespace/name``: matching file sections, then ``-p``."""
    fqn = f"{namespace.rstrip('/')}/{name}"
    out: dict[str, Any] = {}
    for f in ra.params_files:
        for key, params in load_params_file(f).items():
            if _key_matches(key, name, fqn):
                out.update(params)
    out.update(ra.params)
    return out
