"""One node API, two backends: real rclpy when it imports, else :mod:`mirage_ros.dds`.

Nodes (:mod:`mirage_ros.nodes`) are written once against :class:`NodeHandle`; :func:`run_node`
picks the backend, parses ``--ros-args``, builds the node and spins it until SIGINT/SIGTERM.

Backend choice: ``$MIRAGE_ROS_BACKEND`` = ``auto`` (default: rclpy if ``import rclpy`` works,
else dds), ``rclpy`` or ``dds``. The DDS backend uses the loopback-only Cyclone configuration
unless ``$MIRAGE_DDS_LOOPBACK=0``; its domain is ``$ROS_DOMAIN_ID``.

What a node sees (same on both backends):

* ``declare_config(cls)``: ROS parameters declared from a config dataclass, one per field,
  the description taken from the class docstring's ``Attributes:`` section; the filled,
  validated dataclass is returned. Parameter types follow the defaults (bool, int, float,
  str, lists of those).
* ``publisher / subscription / service / client / timer / action_server``: QoS given by
  purpose (:data:`QOS`); topic and service names relative (resolved against the node's
  namespace; ``-r from:=to`` remaps apply).
* Callbacks never crash the node: an exception in a subscription or timer callback is logged;
  in a service handler it is logged and answered with the response's defaults plus
  ``success=false`` and the error as ``message`` when the response has those fields.
* ``msgs``: a message factory (``msgs.new("pkg/msg/T", **fields)``) of the backend's classes.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from mirage_core.errors import MirageInputError
from mirage_ros.ros_args import node_params, parse_ros_args

__all__ = [
    "BACKENDS",
    "QOS",
    "NodeHandle",
    "field_descriptions",
    "make_node_handle",
    "rclpy_available",
    "run_node",
    "select_backend",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "rclpy", "dds")
#: QoS purposes: ``sensor`` (best effort, keep last 5: camera streams), ``frames`` (reliable,
#: keep last 100: generated frames nobody may lose), ``reliable`` (reliable, keep last 10:
#: poses, paths, chunk info), ``latched`` (reliable, transient local, keep last 1: camera
#: info, memory statistics, the target path).
QOS = ("sensor", "frames", "reliable", "latched")

T = TypeVar("T")


def rclpy_available() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def select_backend(requested: str | None = None) -> str:
    """``"rclpy"`` or ``"dds"`` from ``requested`` or ``$MIRAGE_ROS_BACKEND`` (default auto)."""
    b = (requested or os.environ.get("MIRAGE_ROS_BACKEND") or "auto").lower()
    if b not in BACKENDS:
        raise MirageInputError(f"MIRAGE_ROS_BACKEND must be one of {BACKENDS}, got {b!r}")
    if b == "auto":
        return "rclpy" if rclpy_available() else "dds"
    if b == "rclpy" and not rclpy_available():
        raise MirageInputError("MIRAGE_ROS_BACKEND=rclpy but rclpy does not import here")
    return b


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ATTR_LINE = re.compile(rf"^(\s*)({_NAME}(?:\s*,\s*{_NAME})*):\s*(.*)$")


def field_descriptions(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of ``cls``'s docstring
    (``name: text`` lines, continuation lines indented deeper, ``a, b: text`` for several)."""
    doc = cls.__doc__ or ""
    lines = doc.expandtabs().splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes:")
    except StopIteration:
        return out
    base = None
    names: list[str] = []
    for ln in lines[start + 1:]:
        if not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        m = _ATTR_LINE.match(ln)
        if base is None and m:
            base = indent
        if base is None or indent < base:
            break
        if indent == base and m:
            names = [n.strip() for n in m.group(2).split(",")]
            for n in names:
                out[n] = m.group(3).strip()
        elif indent > base and names:
            for n in names:
                out[n] = (out[n] + " " + ln.strip()).strip()
        else:
            break
    return out


def _qos_dds(purpose: str):
    from mirage_ros.dds import QOS_LATCHED, QOS_RELIABLE, QOS_SENSOR_DATA

    table = {
        "sensor": QOS_SENSOR_DATA,
        "frames": QOS_RELIABLE.with_depth(100),
        "reliable": QOS_RELIABLE,
        "latched": QOS_LATCHED,
    }
    if purpose not in table:
        raise ValueError(f"QoS purpose must be one of {QOS}, got {purpose!r}")
    return table[purpose]


def _qos_rclpy(purpose: str):
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )

    if purpose == "sensor":
        return qos_profile_sensor_data
    if purpose not in QOS:
        raise ValueError(f"QoS purpose must be one of {QOS}, got {purpose!r}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth={"frames": 100, "reliable": 10, "latched": 1}[purpose],
        reliability=ReliabilityPolicy.RELIABLE,
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if purpose == "latched"
                    else DurabilityPolicy.VOLATILE),
    )


def _failure_response(resp: Any, e: BaseException) -> Any:
    if hasattr(resp, "success"):
        resp.success = False
    if hasattr(resp, "message"):
        resp.message = f"{type(e).__name__}: {e}"
    return resp


class NodeHandle:
    """What a Mirage node uses of ROS 2 (see the module docstring). Built by
    :func:`make_node_handle`; subclasses adapt one backend."""

    backend: str = ""

    def __init__(self, name: str, namespace: str, params: dict[str, Any],
                 remaps: dict[str, str]) -> None:
        self.name = name
        self.namespace = namespace
        self._overrides = dict(params)
        self._remaps = dict(remaps)
        # rclpy's logger naming: namespace.name
        self.logger = logging.getLogger(
            f"{namespace.strip('/')}/{name}".strip("/").replace("/", "."))
        self.msgs: Any = None
        self.declared: dict[str, Any] = {}

    # -- names ---------------------------------------------------------------------------
    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def remap(self, name: str) -> str:
        """Apply ``-r from:=to`` to a topic/service name (matched as given or fully qualified)."""
        if name in self._remaps:
            return self._remaps[name]
        full = name if name.startswith("/") else f"{self.namespace.rstrip('/')}/{name}"
        return self._remaps.get(full, name)

    # -- parameters ----------------------------------------------------------------------
    def declare_parameter(self, name: str, default: Any, description: str) -> Any:
        raise NotImplementedError

    def declare_config(self, cls: type[T], skip: tuple[str, ...] = ()) -> T:
        """Declare one parameter per field of dataclass ``cls`` and return ``cls(**values)``.

        Raises:
            MirageInputError: a field without a description, or a value the dataclass refuses
                (its ``__post_init__`` message, naming the node).
        """
        docs = field_descriptions(cls)
        values = {}
        for f in fields(cls):
            if f.name in skip:
                continue
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                raise MirageInputError(f"{cls.__name__}.{f.name} needs a default to be a param")
            if f.name not in docs:
                raise MirageInputError(f"{cls.__name__}.{f.name} has no description")
            values[f.name] = self.declare_parameter(f.name, default, docs[f.name])
        unknown = sorted(set(self._overrides) - set(self.declared) - {"use_sim_time"})
        if unknown:
            self.logger.warning("ignoring undeclared parameters: %s", ", ".join(unknown))
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise MirageInputError(f"{self.fully_qualified_name}: bad parameters: {e}") from e

    def _typed_override(self, name: str, default: Any) -> Any:
        if name not in self._overrides:
            return default
        v = self._overrides[name]
        if isinstance(default, bool) or isinstance(v, bool):
            if not (isinstance(default, bool) and isinstance(v, bool)):
                raise MirageInputError(
                    f"{self.fully_qualified_name}: parameter {name} must be "
                    f"{type(default).__name__}, got {v!r}"
                )
            return v
        if isinstance(default, float) and isinstance(v, int):
            return float(v)
        if isinstance(default, list) and isinstance(v, list):
            return v
        if type(v) is not type(default):
            raise MirageInputError(
                f"{self.fully_qualified_name}: parameter {name} must be "
                f"{type(default).__name__}, got {type(v).__name__} {v!r}"
            )
        return v

    # -- endpoints (backends implement) ----------------------------------------------------
    def publisher(self, msg_type: str, topic: str, qos: str) -> Any:
        raise NotImplementedError

    def subscription(self, msg_type: str, topic: str, callback: Callable[[Any], None],
                     qos: str) -> Any:
        raise NotImplementedError

    def service(self, srv_type: str, name: str, handler: Callable[[Any], Any]) -> Any:
        """Serve ``srv_type``: ``handler(request) -> response`` (build it with ``msgs``)."""
        raise NotImplementedError

    def client(self, srv_type: str, name: str) -> Any:
        """A client with ``wait_for_service(timeout_sec) -> bool`` and
        ``call(request, timeout_sec) -> response`` (raises ``TimeoutError``); callable from any
        thread, including while a callback of this node runs in another."""
        raise NotImplementedError

    def timer(self, period_sec: float, callback: Callable[[], None]) -> Any:
        raise NotImplementedError

    def action_server(self, action_type: str, name: str, execute: Callable[[Any], Any],
                      goal_callback: Callable[[Any], bool] | None = None,
                      cancel_callback: Callable[[Any], bool] | None = None) -> Any:
        """Serve an action. ``execute(goal_handle) -> result`` runs in its own thread; the goal
        handle has ``request``, ``is_cancel_requested``, ``publish_feedback(msg)``,
        ``succeed()``, ``canceled()``, ``abort()`` (rclpy's). ``goal_callback(goal) -> bool``
        accepts or rejects."""
        raise NotImplementedError

    def stamp(self, t_ns: int | None = None) -> Any:
        """``builtin_interfaces/Time`` of ``t_ns`` (default now, wall clock)."""
        ns = time.time_ns() if t_ns is None else int(t_ns)
        return self.msgs.new("builtin_interfaces/msg/Time", sec=ns // 10**9, nanosec=ns % 10**9)

    def header(self, frame_id: str, t_ns: int | None = None) -> Any:
        return self.msgs.new("std_msgs/msg/Header", stamp=self.stamp(t_ns), frame_id=frame_id)

    def serialize(self, msg: Any, msg_type: str) -> bytes:
        """CDR bytes of ``msg`` (as on the wire and in rosbag2 files)."""
        raise NotImplementedError

    # -- lifetime --------------------------------------------------------------------------
    def spin_until(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    # -- wrappers ------------------------------------------------------------------------
    def _guard(self, what: str, fn: Callable) -> Callable:
        def run(*args):
            try:
                return fn(*args)
            except Exception:
                self.logger.exception("%s failed (the node keeps running)", what)
                return None

        return run

    def _guard_service(self, name: str, handler: Callable[[Any], Any],
                       default_response: Callable[[], Any]) -> Callable[[Any], Any]:
        def run(request):
            try:
                resp = handler(request)
                if resp is None:
                    raise RuntimeError("the handler returned no response")
                return resp
            except Exception as e:
                self.logger.exception("service %s failed", name)
                return _failure_response(default_response(), e)

        return run


# ------------------------------------------------------------------------------ DDS backend
class DdsNodeHandle(NodeHandle):
    """:class:`NodeHandle` on :mod:`mirage_ros.dds` (one participant per process)."""

    backend = "dds"

    def __init__(self, name: str, namespace: str, params: dict[str, Any],
                 remaps: dict[str, str], domain_id: int | None = None,
                 loopback: bool | None = None) -> None:
        super().__init__(name, namespace, params, remaps)
        from mirage_ros.dds import DdsContext
        from mirage_ros.interfaces import make_typestore
        from mirage_ros.messages import RosbagsMessages

        if loopback is None:
            loopback = os.environ.get("MIRAGE_DDS_LOOPBACK", "1") != "0"
        distro = os.environ.get("ROS_DISTRO", "humble")
        self.typestore = make_typestore(distro if distro in ("humble", "jazzy") else "humble")
        self.ctx = DdsContext(domain_id, loopback=loopback, typestore=self.typestore)
        self.node = self.ctx.create_node(name, namespace)
        self.msgs = RosbagsMessages(self.typestore)

    def declare_parameter(self, name: str, default: Any, description: str) -> Any:
        v = self._typed_override(name, default)
        self.declared[name] = v
        return v

    def publisher(self, msg_type: str, topic: str, qos: str) -> Any:
        return self.node.create_publisher(msg_type, self.remap(topic), _qos_dds(qos))

    def subscription(self, msg_type, topic, callback, qos):
        return self.node.create_subscription(
            msg_type, self.remap(topic), self._guard(f"callback on {topic}", callback),
            _qos_dds(qos),
        )

    def service(self, srv_type, name, handler):
        resp_type = f"{srv_type}_Response"
        run = self._guard_service(name, handler, lambda: self.msgs.new(resp_type))
        return self.node.create_service(srv_type, self.remap(name), lambda req, _d: run(req))

    def client(self, srv_type, name):
        return self.node.create_client(srv_type, self.remap(name))

    def timer(self, period_sec, callback):
        return self.node.create_timer(period_sec, self._guard("timer", callback))

    def action_server(self, action_type, name, execute, goal_callback=None,
                      cancel_callback=None):
        from mirage_ros.dds.action import ActionServer

        return ActionServer(
            self.node, action_type, self.remap(name), execute,
            goal_callback=goal_callback, cancel_callback=cancel_callback,
        )

    def serialize(self, msg, msg_type):
        return bytes(self.typestore.serialize_cdr(msg, msg_type))

    def spin_until(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.ctx.ok:
            self.ctx.spin_once(0.05)

    def shutdown(self) -> None:
        self.ctx.shutdown()


# ------------------------------------------------------------------------------ rclpy backend
class RclpyNodeHandle(NodeHandle):
    """:class:`NodeHandle` on rclpy (ROS 2 Humble/Jazzy). Callbacks run on a
    MultiThreadedExecutor: subscriptions, services and timers in one mutually exclusive group
    (a node's state is never touched by two of them at once), clients and actions reentrant.

    Not run on the project's CI machines (rclpy is not installable there); written to
    rclpy's documented API and checked on ROS 2 machines by the same tests."""

    backend = "rclpy"

    def __init__(self, name: str, namespace: str, argv: list[str]) -> None:
        import rclpy
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        from mirage_ros.messages import RclpyMessages

        rclpy.init(args=[sys.argv[0], *argv])  # rcl reads argv[0] as the program name
        self._rclpy = rclpy
        self.node = Node(name, namespace=namespace)
        super().__init__(self.node.get_name(), self.node.get_namespace(), {}, {})
        self.msgs = RclpyMessages()
        self._serial = MutuallyExclusiveCallbackGroup()
        self._reentrant = ReentrantCallbackGroup()
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)

    def declare_parameter(self, name, default, description):
        from rcl_interfaces.msg import ParameterDescriptor

        p = self.node.declare_parameter(name, default, ParameterDescriptor(
            description=description))
        self.declared[name] = p.value
        return p.value

    def publisher(self, msg_type, topic, qos):
        return self.node.create_publisher(self.msgs.cls(msg_type), topic, _qos_rclpy(qos))

    def subscription(self, msg_type, topic, callback, qos):
        return self.node.create_subscription(
            self.msgs.cls(msg_type), topic, self._guard(f"callback on {topic}", callback),
            _qos_rclpy(qos), callback_group=self._serial,
        )

    def service(self, srv_type, name, handler):
        srv = self.msgs.cls(srv_type)
        run = self._guard_service(name, handler, srv.Response)
        return self.node.create_service(srv, name, lambda req, _resp: run(req),
                                        callback_group=self._serial)

    def client(self, srv_type, name):
        return _RclpyClient(self.node.create_client(self.msgs.cls(srv_type), name,
                                                    callback_group=self._reentrant))

    def timer(self, period_sec, callback):
        return self.node.create_timer(period_sec, self._guard("timer", callback),
                                      callback_group=self._serial)

    def action_server(self, action_type, name, execute, goal_callback=None,
                      cancel_callback=None):
        from rclpy.action import ActionServer, CancelResponse, GoalResponse

        def goal_cb(goal):
            ok = goal_callback(goal) if goal_callback else True
            return GoalResponse.ACCEPT if ok else GoalResponse.REJECT

        def cancel_cb(handle):
            ok = cancel_callback(handle) if cancel_callback else True
            return CancelResponse.ACCEPT if ok else CancelResponse.REJECT

        return ActionServer(self.node, self.msgs.cls(action_type), name, execute,
                            goal_callback=goal_cb, cancel_callback=cancel_cb,
                            callback_group=self._reentrant)

    def serialize(self, msg, msg_type):
        from rclpy.serialization import serialize_message

        return serialize_message(msg)

    def spin_until(self, stop: threading.Event) -> None:
        while not stop.is_set() and self._rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def shutdown(self) -> None:
        try:
            self.executor.shutdown()
            self.node.destroy_node()
        finally:
            if self._rclpy.ok():
                self._rclpy.shutdown()


class _RclpyClient:
    def __init__(self, client) -> None:
        self._c = client

    def wait_for_service(self, timeout_sec: float = 5.0) -> bool:
        return self._c.wait_for_service(timeout_sec=timeout_sec)

    def call(self, request, timeout_sec: float = 5.0):
        done = threading.Event()
        fut = self._c.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_sec):
            fut.cancel()
            raise TimeoutError(f"no reply from {self._c.srv_name} within {timeout_sec} s")
        return fut.result()


# ------------------------------------------------------------------------------ entry point
def make_node_handle(default_name: str, argv: list[str] | None = None,
                     backend: str | None = None, default_namespace: str = "/"
                     ) -> tuple[NodeHandle, list[str]]:
    """A :class:`NodeHandle` named by ``-r __node:=`` (else ``default_name``) and the
    non-ROS arguments of ``argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    b = select_backend(backend)
    rest, ra = parse_ros_args(argv, default_name)
    name = ra.node_name or default_name
    ns = ra.namespace or default_namespace
    if not ns.startswith("/"):
        ns = "/" + ns
    if b == "rclpy":
        return RclpyNodeHandle(name, ns, argv), rest
    return DdsNodeHandle(name, ns, node_params(ra, name, ns), ra.remaps), rest


def _setup_logging(ra_level: str | None) -> None:
    level = getattr(logging, (ra_level or os.environ.get("MIRAGE_LOG_LEVEL") or "INFO").upper(),
                    logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="[%(levelname)s] [%(name)s]: %(message)s")


def run_node(factory: Callable[[NodeHandle], Any], default_name: str,
             argv: list[str] | None = None) -> int:
    """Build a node with ``factory(handle)`` and spin it until SIGINT/SIGTERM or until the
    node sets its ``done`` event (an attribute, optional). The node's ``start()`` (heavy
    loading, optional) is called after construction, its ``close()`` on the way out.

    Returns the process exit code: 0, or 2 for bad parameters/arguments (logged)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(parse_ros_args(argv, default_name)[1].log_level if "--ros-args" in argv
                   else None)
    try:
        handle, _rest = make_node_handle(default_name, argv)
    except (MirageInputError, ValueError) as e:
        logging.getLogger("mirage").error("%s: %s", default_name, e)
        return 2
    stop = threading.Event()

    def on_signal(_sig, _frm):
        stop.set()

    prev = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    code = 0
    try:
        try:
            node = factory(handle)
        except (MirageInputError, ValueError) as e:
            handle.logger.error("cannot start: %s", e)
            return 2
        done = getattr(node, "done", None)
        if callable(getattr(node, "start", None)):
            node.start()
        if isinstance(done, threading.Event):
            threading.Thread(target=lambda: (done.wait(), stop.set()), daemon=True).start()
        handle.logger.info("%s up (%s backend)", handle.fully_qualified_name, handle.backend)
        handle.spin_until(stop)
        code = int(getattr(node, "exit_code", 0) or 0)
    finally:
        try:
            if node is not None and callable(getattr(node, "close", None)):
                node.close()
        finally:
            handle.shutdown()
            for s, h in prev.items():
                signal.signal(s, h)
    return code

