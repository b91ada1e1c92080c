"""``mirage launch NAME [arg:=value ...]``: a launch spec's nodes as separate rclpy processes.

What ``ros2 launch mirage NAME_launch.py`` does, for ROS 2 installs without the ``launch``
package (the PyPI wheels have rclpy but not launch/launch_ros): the same node executables
(``python -m mirage_ros.nodes.<executable>``), each started as

    python -m mirage_ros.nodes.<executable> --ros-args -r __node:=NAME -r __ns:=NS
        --params-file config/NAME.yaml --params-file <launch arguments>.yaml

so rcl itself parses the arguments and applies the YAML (keyed ``/**/<node>``, see
:func:`mirage_ros.launch_specs.node_key`); the launch arguments are written to the second
file, which wins. Real ROS 2 (rclpy over the installed rmw, Fast DDS from the wheels) in
domain ``$ROS_DOMAIN_ID`` (or ``domain_id``); discovery stays on this host
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, and no ``ROS_STATIC_PEERS``) unless
``network=True``, which leaves the user's settings (ROS 2's default: the subnet). A missing
rclpy, rmw or interface build is one clear error before any node starts
(:func:`mirage_ros.node_base.require_ros`). Node output is prefixed with ``[name]``. When a
node marked ``exit_ends_launch`` exits, or on Ctrl-C / SIGTERM, every node gets SIGINT (then
SIGTERM, then SIGKILL after ``grace_s``), so memory nodes save their cache. The exit code is
that of the node that ended the launch (or the first non-zero one).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from mirage_core.errors import MirageInputError
from mirage_ros.fastdds import PROFILE_VARS, profile_xml, user_profile
from mirage_ros.launch_specs import (
    LAUNCHES,
    PARAMS_KEY,
    LaunchSpec,
    config_file,
    model_params,
    node_key,
    node_parameters,
)

__all__ = ["PARAMS_KEY", "Launch", "launch_env", "node_commands", "overrides_yaml",
           "parse_launch_args", "run_launch"]



def parse_launch_args(spec: LaunchSpec, items: list[str]) -> dict[str, Any]:
    """``["arg:=value", ...]`` -> every argument's typed value (defaults filled in).

    ``node.param:=value`` (``node`` a node name of the spec) sets one parameter of one node
    directly; those are kept under :data:`PARAMS_KEY`.

    Raises:
        MirageInputError: unknown argument (lists the known ones) or a value of the wrong type.
    """

    values: dict[str, Any] = {a.name: a.default for a in spec.args}
    nodes = {n.name for n in spec.nodes}
    for item in items:
        if ":=" not in item:
            raise MirageInputError(f"launch arguments are 'name:=value', got {item!r}")
        k, _, v = item.partition(":=")
        node, dot, param = k.partition(".")
        if dot and node in nodes and param:
            # NODE.PARAM:=VALUE sets any parameter of one node, checked against its config
            # class here: rcl would silently drop a value whose type differs from the YAML's
            execu = next(n.executable for n in spec.nodes if n.name == node)
            values.setdefault(PARAMS_KEY, {}).setdefault(node, {})[param] = _node_param(
                node, execu, param, v)
            continue
        if k not in values:
            known = ", ".join(a.name for a in spec.args)
            raise MirageInputError(f"{spec.name} has no argument {k!r}; known: {known} (or "
                                   "NODE.PARAM:=VALUE for one node's parameter)")
        values[k] = _typed(k, spec.arg(k).default, v)
    ns = str(values.get("namespace", "/"))
    if "namespace" in values and not (ns and _NAMESPACE.match(ns)):
        raise MirageInputError(f"namespace must be a ROS name like /mirage or /robot1/mirage, "
                               f"got {ns!r}")
    return values


_NAMESPACE = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*)?$")


def _typed(name: str, default: Any, text: str) -> Any:
    """``text`` as a value of ``default``'s type (YAML syntax; int accepted for float)."""
    import yaml

    if isinstance(default, str):
        return text
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        v = text
    if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if isinstance(default, list) and isinstance(v, list):
        return v
    if type(v) is not type(default):
        raise MirageInputError(f"{name} must be {type(default).__name__}, got {text!r}")
    return v


def _node_param(node: str, executable: str, param: str, text: str) -> Any:
    """``NODE.PARAM:=text`` checked against the node's config class (name and type)."""
    from dataclasses import MISSING, fields

    from mirage_ros.launch_specs import node_config_class

    declared = {f.name: f for f in fields(node_config_class(executable))}
    if param not in declared:
        raise MirageInputError(f"node {node} has no parameter {param!r}; known: "
                               f"{', '.join(sorted(declared))}")
    f = declared[param]
    default = f.default if f.default is not MISSING else f.default_factory()
    return _typed(f"{node}.{param}", default, text)


def _enabled(value: Any) -> bool:
    return value not in ("", None, False, 0, "false", "False", "0")


def node_commands(spec: LaunchSpec, values: dict[str, Any], overrides_file: Path,
                  python: str = sys.executable) -> list[tuple[str, list[str], bool]]:
    """``[(node name, argv, exit_ends_launch)]`` for the nodes that start."""
    params = str(config_file(spec.name))
    ns = "/" + str(values.get("namespace") or "").strip("/")  # rcl wants it absolute
    out = []
    for n in spec.nodes:
        if n.if_arg is not None and not _enabled(values.get(n.if_arg)):
            continue
        argv = [python, "-m", f"mirage_ros.nodes.{n.executable}", "--ros-args",
                "-r", f"__node:={n.name}", "-r", f"__ns:={ns}",
                "--params-file", params, "--params-file", str(overrides_file)]
        out.append((n.name, argv, n.exit_ends_launch))
    return out


def overrides_yaml(spec: LaunchSpec, values: dict[str, Any],
                   model: dict[str, dict[str, Any]] | None = None) -> dict:
    """The launch's parameters (:func:`~mirage_ros.launch_specs.node_parameters`: the model's,
    the launch arguments, ``NODE.PARAM:=VALUE``) as a ROS 2 parameter file's content, keyed
    like the config files (``/**/<node>``: any namespace). ``model``: what
    :func:`~mirage_ros.launch_specs.model_params` gave, if already read."""
    return {node_key(name): {"ros__parameters": p}
            for name, p in node_parameters(spec, values, model).items()}


_overrides_yaml = overrides_yaml  # the earlier private name (test/test_ros_nodes.py uses it)


def launch_env(base: dict[str, str] | None = None, *, domain_id: int | None = None,
               network: bool = False) -> dict[str, str]:
    """The node processes' environment: ``base`` (default ``os.environ``) with
    ``ROS_DOMAIN_ID`` from ``domain_id`` and discovery on this host only unless ``network``
    (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``; with ``network`` the user's setting stays)."""
    e = dict(os.environ if base is None else base)
    if not network:
        e["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        e.pop("ROS_STATIC_PEERS", None)  # peers elsewhere would be contacted regardless
    e["PYTHONUNBUFFERED"] = "1"
    if domain_id is not None:
        if not 0 <= int(domain_id) <= 232:
            raise MirageInputError(f"a ROS domain id is 0..232, got {domain_id}")
        e["ROS_DOMAIN_ID"] = str(int(domain_id))
    return e


class Launch:
    """Running node processes of one launch (see the module docstring)."""

    def __init__(self, spec: LaunchSpec, values: dict[str, Any], *,
                 domain_id: int | None = None, network: bool = False,
                 out: TextIO | None = None, grace_s: float = 10.0,
                 env: dict[str, str] | None = None) -> None:
        import yaml

        from mirage_ros.node_base import require_ros

        require_ros()  # a missing rclpy/rmw or unbuilt interfaces: one clear error, no nodes
        self.spec = spec
        self.grace_s = grace_s
        self.out = out or sys.stdout
        self._tmp = tempfile.TemporaryDirectory(prefix=f"mirage-launch-{spec.name}-")
        overrides = Path(self._tmp.name) / "launch_arguments.yaml"
        model = model_params(spec, values)  # the weights directory is read once
        overrides.write_text(yaml.safe_dump(overrides_yaml(spec, values, model),
                                            sort_keys=False))
        given = values.get(PARAMS_KEY, {})
        derived = [f"{node}.{k}={v}" for node, ps in model.items()
                   for k, v in ps.items() if k not in given.get(node, {})]
        if derived:
            print(f"[launch] from the model's weights: {', '.join(derived)} (NODE.PARAM:=VALUE "
                  "overrides)", file=self.out, flush=True)
        e = launch_env(env, domain_id=domain_id, network=network)
        if user_profile(e) is None:  # large shared-memory segments for frames (fastdds.py)
            profile = Path(self._tmp.name) / "fastdds_profile.xml"
            profile.write_text(profile_xml(loopback=not network))
            e.update({v: str(profile) for v in PROFILE_VARS})
        self.procs: dict[str, subprocess.Popen] = {}
        self.ends: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        try:
            for name, argv, ends in node_commands(spec, values, overrides):
                p = subprocess.Popen(argv, env=e, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
                self.procs[name] = p
                if ends:
                    self.ends.add(name)
                t = threading.Thread(target=self._pump, args=(name, p), daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:  # interrupted (or a failed start) half way: stop what started
            self.shutdown()
            raise

    def _pump(self, name: str, p: subprocess.Popen) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            with self._lock:
                self.out.write(f"[{name}] {line}")
                self.out.flush()

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait until a launch-ending node exits (or any node fails, or ``timeout_s``), then
        stop everything. Returns the exit code (124 on timeout)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        code = None
        while code is None:
            for name, p in self.procs.items():
                rc = p.poll()
                if rc is None:
                    continue
                if rc != 0 or name in self.ends:
                    code = rc
                    with self._lock:
                        self.out.write(f"[launch] {name} exited with {rc}; shutting down\n")
                    break
            else:
                if all(p.poll() is not None for p in self.procs.values()):
                    code = 0
                elif deadline is not None and time.monotonic() > deadline:
                    code = 124
                    with self._lock:
                        self.out.write(f"[launch] timeout: {timeout_s:g} s passed; shutting "
                                       "down (exit 124)\n")
                else:
                    time.sleep(0.1)
        self.shutdown()
        return code

    def shutdown(self) -> dict[str, int | None]:
        """Stop the nodes: SIGINT to every node but the ``stop_last`` ones (memory, recorder),
        wait up to ``grace_s``, then SIGINT to those, so what the others send while they finish
        (a chunk's memory update, its frames) is still kept; nodes alive after that get
        SIGTERM, then SIGKILL (each named in the output)."""
        last = {n.name for n in self.spec.nodes if n.stop_last}
        waves = [(signal.SIGINT, [n for n in self.procs if n not in last], self.grace_s),
                 (signal.SIGINT, [n for n in self.procs if n in last], self.grace_s),
                 (signal.SIGTERM, list(self.procs), 3.0), (signal.SIGKILL, list(self.procs), 3.0)]
        for sig, names, wait in waves:
            alive = [n for n in names if self.procs[n].poll() is None]
            if not alive:
                continue
            if sig != signal.SIGINT:
                with self._lock:
                    self.out.write(f"[launch] {', '.join(alive)} still running: "
                                   f"{signal.Signals(sig).name}\n")
            for n in alive:
                try:
                    self.procs[n].send_signal(sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + wait
            while time.monotonic() < end and any(self.procs[n].poll() is None for n in alive):
                time.sleep(0.05)
        for t in self._threads:
            t.join(timeout=2.0)
        self._tmp.cleanup()
        return {n: p.returncode for n, p in self.procs.items()}


def run_launch(name: str, items: list[str], *, domain_id: int | None = None,
               network: bool = False, timeout_s: float | None = None) -> int:
    """``mirage launch``: start, wait, stop; Ctrl-C stops the nodes cleanly.

    Raises:
        MirageInputError: an unknown launch or argument, a bad value, or ROS 2 not installed
            (:class:`mirage_ros.node_base.RosSetupError`, which names the command to fix it).
    """
    if name not in LAUNCHES:
        raise MirageInputError(f"unknown launch {name!r}; known: {', '.join(LAUNCHES)}")
    spec = LAUNCHES[name]
    values = parse_launch_args(spec, items)

    def interrupt(*_):
        raise KeyboardInterrupt

    # SIGINT explicitly too: a launch started in the background (a script, nohup) inherits an
    # ignored SIGINT, and `kill -INT` must still stop it cleanly
    prev = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    launch = None
    try:
        launch = Launch(spec, values, domain_id=domain_id, network=network)
        return launch.wait(timeout_s)
    except KeyboardInterrupt:
        for s in prev:  # a second Ctrl-C must not cut the nodes' clean shutdown short
            signal.signal(s, signal.SIG_IGN)
        if launch is not None:
            launch.shutdown()
        return 130
    finally:
        for s, h in prev.items():
            signal.signal(s, h)
