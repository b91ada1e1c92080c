"""What every Mirage node shares, on real rclpy: :class:`MirageNode` and :func:`run_node`.

Mirage nodes are plain ``rclpy.node.Node`` subclasses (ros2/demos style) with typed messages
(``from mirage.srv import UpdateMemory``). :class:`MirageNode` adds only what the project
wants the same in every node:

* ``declare_config(cls)``: one ROS parameter per field of a config dataclass, with the
  description from the class docstring's ``Attributes:`` section (``ros2 param describe``);
  the filled, validated dataclass is returned, or :class:`MirageInputError` names the node and
  the bad parameter.
* QoS profiles named by purpose (:data:`QOS_SENSOR`, :data:`QOS_FRAMES`, :data:`QOS_RELIABLE`,
  :data:`QOS_LATCHED`; :func:`qos`).
* Graph health: every publisher and subscription gets rclpy's incompatible-QoS event callback;
  an incompatible peer (e.g. a planner publishing ``target_path`` volatile to a latched
  subscription) is logged with both profiles named, never silently ignored.
* Callbacks never crash the node: an exception in a subscription or timer callback is logged;
  a service handler's exception is answered with ``success=false`` and the reason
  (:meth:`MirageNode.serve`).
* Callback groups the way rclpy intends (docs/ros.md): subscriptions, services and timers in
  the node's default mutually exclusive group (a node's state is never touched by two of them
  at once); service clients and action servers in :attr:`MirageNode.reentrant`, so a service
  call made from inside a callback or an action never deadlocks on the
  ``MultiThreadedExecutor`` of :func:`run_node`.
* Delivery and shutdown (:meth:`MirageNode.close`): timers are cancelled first, then the
  subclass releases its resources (``release()``), then reliable publishers wait for every
  subscriber's acknowledgement (``wait_for_all_acked``) so a node that exits right after
  publishing loses nothing.

:func:`require_ros` turns a missing rclpy, rmw or interface build into an error that names the
command to fix it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from mirage_core.errors import MirageInputError

__all__ = [
    "QOS_FRAMES",
    "QOS_LATCHED",
    "QOS_PURPOSES",
    "QOS_RELIABLE",
    "QOS_SENSOR",
    "MirageNode",
    "RosSetupError",
    "field_descriptions",
    "format_qos",
    "qos",
    "require_ros",
    "run_node",
]

T = TypeVar("T")

INSTALL_HINT = ("`make install` (ROS 2 Jazzy wheels into .venv + the interfaces; docs/ros.md), "
                "or on a ROS 2 machine `source /opt/ros/$ROS_DISTRO/setup.bash` and "
                "`colcon build`")


class RosSetupError(MirageInputError):
    """rclpy, its rmw, or the project's interface package is missing."""


def _rmw_problem() -> str | None:
    """Why ``$RMW_IMPLEMENTATION`` cannot load, or None. Checked before rclpy is imported:
    rcl ends the process (exit 102) on an rmw it does not find, without naming the fix."""
    import os

    rmw = os.environ.get("RMW_IMPLEMENTATION", "")
    if not rmw or rmw == "rmw_fastrtps_cpp":
        return None
    try:
        from ament_index_python.packages import get_package_prefix
    except ImportError:
        return None  # rclpy is missing too: require_ros() says so
    try:
        get_package_prefix(rmw)
    except Exception:
        return (f"RMW_IMPLEMENTATION={rmw} is not installed here (ROS 2 from the wheels has "
                "rmw_fastrtps_cpp only): unset RMW_IMPLEMENTATION, or install that rmw")
    return None


def require_ros() -> None:
    """Check that rclpy, an rmw and the ``mirage`` / ``tf2_msgs`` interfaces import.

    Raises:
        RosSetupError: what is missing and the command that installs or builds it.
    """
    problem = _rmw_problem()
    if problem:
        raise RosSetupError(problem)
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        hint = ("the rmw library is missing (pip install 'ros-jazzy-rclpy[fastrtps]')"
                if "rmw" in str(e) else "rclpy is not installed")
        raise RosSetupError(f"{hint}: {e}. Install ROS 2 with {INSTALL_HINT}") from None
    try:
        import mirage.action
        import mirage.msg
        import mirage.srv  # noqa: F401
        import tf2_msgs.msg  # noqa: F401
    except ImportError as e:
        raise RosSetupError(
            f"the ROS 2 interfaces are not built ({e}): run `python "
            "scripts/build_ros_interfaces.py --venv .venv` (part of `make install`), or "
            "`colcon build` on a ROS 2 machine") from None


# ------------------------------------------------------------------------------ QoS
def _profiles():
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )

    def reliable(depth: int, latched: bool = False) -> QoSProfile:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                      else DurabilityPolicy.VOLATILE))

    return {
        # camera streams: best effort, keep last 5 (rclpy's qos_profile_sensor_data)
        "sensor": qos_profile_sensor_data,
        # generated frames nobody may lose: reliable, keep last 100
        "frames": reliable(100),
        # poses, paths, chunk info: reliable, keep last 10
        "reliable": reliable(10),
        # state late joiners need (camera info, memory statistics, target path, ground
        # truth of a path): reliable, transient local, keep last 1
        "latched": reliable(1, latched=True),
    }


try:
    _PROFILES = {} if _rmw_problem() else _profiles()
except ImportError:  # rclpy missing: require_ros() says how to install it
    _PROFILES = {}

QOS_PURPOSES = ("sensor", "frames", "reliable", "latched")
QOS_SENSOR = _PROFILES.get("sensor")
QOS_FRAMES = _PROFILES.get("frames")
QOS_RELIABLE = _PROFILES.get("reliable")
QOS_LATCHED = _PROFILES.get("latched")


def qos(purpose: str):
    """The ``rclpy.qos.QoSProfile`` of a purpose (:data:`QOS_PURPOSES`)."""
    if purpose not in QOS_PURPOSES:
        raise ValueError(f"QoS purpose must be one of {QOS_PURPOSES}, got {purpose!r}")
    require_ros()
    return _PROFILES[purpose]


def format_qos(profile) -> str:
    """``reliability/durability/history(depth)`` of a QoS profile, e.g.
    ``reliable/transient_local/keep_last(1)``."""
    def name(p) -> str:
        return getattr(p, "name", str(p)).lower()

    out = f"{name(profile.reliability)}/{name(profile.durability)}"
    if name(profile.history) != "unknown":  # the graph API does not report a peer's history
        out += f"/{name(profile.history)}({profile.depth})"
    return out


# ------------------------------------------------------------------------------ parameters
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


def _policy(info) -> str:
    """``DURABILITY`` from an incompatible-QoS event's ``RMW_QOS_POLICY_DURABILITY``."""
    return info.last_policy_kind.name.removeprefix("RMW_QOS_POLICY_")


def _failure_response(resp: Any, e: BaseException) -> Any:
    if hasattr(resp, "success"):
        resp.success = False
    if hasattr(resp, "message"):
        resp.message = f"{type(e).__name__}: {e}"
    return resp


# ------------------------------------------------------------------------------ the node
try:
    if _rmw_problem():
        raise ImportError("the rmw is missing")
    from rclpy.node import Node as _Node
except ImportError:  # require_ros() explains
    _Node = object  # type: ignore[assignment,misc]


class MirageNode(_Node):
    """An ``rclpy.node.Node`` with Mirage's shared behaviour (see the module docstring).

    Subclasses build their endpoints in ``__init__`` with rclpy's own calls
    (``self.create_publisher(Image, "image", QOS_FRAMES)``) and may define ``start()``
    (heavy loading, called by :func:`run_node` in a worker thread while the executor spins),
    ``release()`` (resources to free once timers and callbacks stopped) and set
    :attr:`done` to end the process with :attr:`exit_code`.
    """

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        require_ros()
        from rclpy.callback_groups import ReentrantCallbackGroup

        self._closing = False
        self._inflight = 0  # guarded callbacks running now (see stop_callbacks)
        self._inflight_cv = threading.Condition()
        self._publishers_to_ack: list | None = None  # rclpy's own (parameter events): no
        super().__init__(node_name, **kwargs)
        self._publishers_to_ack = []
        self.reentrant = ReentrantCallbackGroup()
        self.done = threading.Event()
        self.exit_code = 0

    # -- parameters ----------------------------------------------------------------------
    def declare_config(self, cls: type[T], skip: tuple[str, ...] = ()) -> T:
        """Declare one parameter per field of dataclass ``cls`` and return ``cls(**values)``.

        Parameter types follow the field defaults (bool, int, float, str, list of str); an
        int given for a float parameter is accepted.

        Raises:
            MirageInputError: a field without a default or description, a value of the wrong
                type, or one the dataclass refuses (its ``__post_init__`` message); the node's
                name and the parameter are named.
        """
        from rcl_interfaces.msg import ParameterDescriptor
        from rclpy.exceptions import InvalidParameterTypeException
        from rclpy.parameter import Parameter

        docs = field_descriptions(cls)
        overrides = dict(getattr(self, "_parameter_overrides", {}) or {})
        values: dict[str, Any] = {}
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
            desc = ParameterDescriptor(description=docs[f.name])
            given = overrides.get(f.name)
            if (isinstance(default, float) and given is not None
                    and given.type_ == Parameter.Type.INTEGER):
                # YAML `2` for a float parameter: rcl would refuse the type
                self._parameter_overrides[f.name] = Parameter(
                    f.name, Parameter.Type.DOUBLE, float(given.value))
            try:
                if isinstance(default, list) and not default:
                    p = self.declare_parameter(f.name, Parameter.Type.STRING_ARRAY, desc)
                else:
                    p = self.declare_parameter(f.name, default, desc)
            except InvalidParameterTypeException as e:
                raise MirageInputError(
                    f"{self.get_fully_qualified_name()}: parameter {f.name} must be "
                    f"{type(default).__name__}: {e}") from None
            v = p.value
            values[f.name] = list(v) if isinstance(default, list) and v is not None else v
        unknown = sorted(set(overrides) - set(values) - {"use_sim_time"})
        if unknown:
            self.get_logger().warning(f"ignoring undeclared parameters: {', '.join(unknown)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise MirageInputError(
                f"{self.get_fully_qualified_name()}: bad parameters: {e}") from e

    # -- endpoints -----------------------------------------------------------------------
    def create_publisher(self, msg_type, topic, qos_profile, **kwargs):
        """rclpy's, plus the incompatible-QoS event logged with both profiles; reliable
        publishers are acknowledged before the node exits (:meth:`close`)."""
        kwargs.setdefault("event_callbacks", self._pub_events(topic, qos_profile))
        pub = super().create_publisher(msg_type, topic, qos_profile, **kwargs)
        from rclpy.qos import ReliabilityPolicy

        if (self._publishers_to_ack is not None
                and pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE):
            self._publishers_to_ack.append(pub)
        return pub

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        """rclpy's, with a callback that logs instead of raising and the incompatible-QoS
        event logged with both profiles."""
        kwargs.setdefault("event_callbacks", self._sub_events(topic, qos_profile))
        return super().create_subscription(
            msg_type, topic, self.guarded(f"callback on {topic}", callback), qos_profile,
            **kwargs)

    def create_timer(self, timer_period_sec, callback, callback_group=None, **kwargs):
        """rclpy's, with a callback that logs instead of raising."""
        return super().create_timer(timer_period_sec, self.guarded("timer", callback),
                                    callback_group, **kwargs)

    def serve(self, srv_type, name: str, handler: Callable[[Any], Any], **kwargs):
        """A service whose ``handler(request) -> response`` may raise: the error is logged
        and answered with ``success=false`` and the reason (when the response has them)."""
        def run(request, response):
            with self._running() as ok:
                if not ok:
                    return _failure_response(response, RuntimeError("the node is shutting down"))
                try:
                    out = handler(request)
                    if out is None:
                        raise RuntimeError("the handler returned no response")
                    return out
                except Exception as e:
                    self.get_logger().error(f"service {name} failed: {type(e).__name__}: {e}")
                    return _failure_response(response, e)

        return self.create_service(srv_type, name, run, **kwargs)

    def sync_client(self, srv_type, name: str,
                    stopping: threading.Event | None = None) -> _SyncClient:
        """A client with ``wait_for_service(timeout_sec)`` and blocking
        ``call(request, timeout_sec)`` (raises ``TimeoutError``), callable from any thread,
        including a callback or action of this node (reentrant group). Once ``stopping`` is
        set, waits and calls give up at once (``False`` / ``TimeoutError``)."""
        return _SyncClient(self.create_client(srv_type, name, callback_group=self.reentrant),
                           stopping)

    def guarded(self, what: str, fn: Callable) -> Callable:
        """``fn`` that logs its exceptions instead of raising them into the executor."""
        def run(*args):
            with self._running() as ok:
                if not ok:
                    return None
                try:
                    return fn(*args)
                except Exception as e:
                    self.get_logger().error(
                        f"{what} failed (the node keeps running): {type(e).__name__}: {e}")
                    log.debug("traceback", exc_info=True)
                    return None

        return run

    @contextlib.contextmanager
    def _running(self):
        """Count a callback in flight; yields False (run nothing) once the node closes."""
        with self._inflight_cv:
            if self._closing:
                ok = False
            else:
                ok = True
                self._inflight += 1
        try:
            yield ok
        finally:
            if ok:
                with self._inflight_cv:
                    self._inflight -= 1
                    self._inflight_cv.notify_all()

    # -- QoS events ----------------------------------------------------------------------
    def _peer_profiles(self, topic: str, publishers: bool) -> str:
        try:
            name = self.resolve_topic_name(topic)
            infos = (self.get_publishers_info_by_topic(name) if publishers
                     else self.get_subscriptions_info_by_topic(name))
            return "; ".join(f"{i.node_namespace.rstrip('/')}/{i.node_name}: "
                             f"{format_qos(i.qos_profile)}" for i in infos) or "unknown"
        except Exception:  # the graph API may race node exits
            return "unknown"

    def _pub_events(self, topic: str, profile):
        from rclpy.event_handler import PublisherEventCallbacks

        def on_incompatible(info) -> None:
            self.get_logger().error(
                f"incompatible QoS on {topic}: this publisher offers {format_qos(profile)}, "
                f"subscriptions request [{self._peer_profiles(topic, publishers=False)}]; "
                f"policy {_policy(info)} (total {info.total_count}): they will "
                "receive nothing from it")

        return PublisherEventCallbacks(incompatible_qos=on_incompatible)

    def _sub_events(self, topic: str, profile):
        from rclpy.event_handler import SubscriptionEventCallbacks

        def on_incompatible(info) -> None:
            self.get_logger().error(
                f"incompatible QoS on {topic}: this subscription requests "
                f"{format_qos(profile)}, publishers offer "
                f"[{self._peer_profiles(topic, publishers=True)}]; policy "
                f"{_policy(info)} (total {info.total_count}): nothing from them "
                "arrives")

        return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)

    # -- messages ------------------------------------------------------------------------
    def stamp(self, t_ns: int | None = None):
        """``builtin_interfaces/Time`` of ``t_ns`` (default: this node's clock now)."""
        from builtin_interfaces.msg import Time

        if t_ns is None:
            return self.get_clock().now().to_msg()
        return Time(sec=int(t_ns) // 10**9, nanosec=int(t_ns) % 10**9)

    def header(self, frame_id: str, t_ns: int | None = None):
        from std_msgs.msg import Header

        return Header(stamp=self.stamp(t_ns), frame_id=frame_id)

    # -- lifetime ------------------------------------------------------------------------
    def start(self) -> None:
        """Heavy start-up work (model loading); runs in a worker thread of :func:`run_node`
        while the executor spins. Default: nothing."""

    def release(self) -> None:
        """Free resources (simulators, files) once no timer or callback runs. Default:
        nothing."""

    def stop_callbacks(self, timeout_s: float = 30.0) -> bool:
        """Make every later callback (timers included) a no-op, and wait until the callbacks
        already running (subscriptions, timers, services of this class) have returned.

        This is what lets :meth:`release` close simulators and files safely: rclpy 7.1's
        ``Executor.shutdown()`` does not wait for callbacks in flight, so the node counts them
        itself. Returns False if some were still running after ``timeout_s`` (logged)."""
        with self._inflight_cv:
            self._closing = True
        # timers are not cancelled: once closing they run nothing, and run_node stops spinning
        # first (cancelling a timer the executor already picked up logs "timer is canceled")
        with self._inflight_cv:
            done = self._inflight_cv.wait_for(lambda: self._inflight == 0, timeout_s)
        if not done:
            self.get_logger().warning(
                f"{self._inflight} callback(s) still running after {timeout_s} s at shutdown")
        return done

    def close(self, ack_timeout_s: float = 5.0) -> None:
        """:meth:`stop_callbacks`, :meth:`release`, then wait until every subscriber
        acknowledged what reliable publishers sent (at most ``ack_timeout_s`` each)."""
        from rclpy.duration import Duration

        self.stop_callbacks()
        try:
            self.release()
        finally:
            for pub in self._publishers_to_ack:
                try:
                    if pub.get_subscription_count() and not pub.wait_for_all_acked(
                            Duration(seconds=ack_timeout_s)):
                        self.get_logger().warning(
                            f"{pub.topic_name}: not every subscriber acknowledged within "
                            f"{ack_timeout_s} s")
                except Exception as e:  # a destroyed publisher
                    log.debug("wait_for_all_acked(%s): %s", pub.topic_name, e)


log = logging.getLogger(__name__)


class _SyncClient:
    def __init__(self, client, stopping: threading.Event | None = None) -> None:
        self.client = client
        self.stopping = stopping or threading.Event()

    def wait_for_service(self, timeout_sec: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_sec
        while not self.stopping.is_set():
            if self.client.wait_for_service(timeout_sec=min(0.2, timeout_sec)):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def call(self, request, timeout_sec: float = 5.0):
        if self.stopping.is_set():
            raise TimeoutError("the node is shutting down")
        done = threading.Event()
        fut = self.client.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        deadline = time.monotonic() + timeout_sec
        while not done.wait(0.1):
            if self.stopping.is_set() or time.monotonic() >= deadline:
                self.client.remove_pending_request(fut)
                raise TimeoutError("the node is shutting down" if self.stopping.is_set()
                                   else f"no reply from {self.client.srv_name} within "
                                   f"{timeout_sec} s")
        return fut.result()


# ------------------------------------------------------------------------------ entry point
def _drain(executor) -> None:
    """Wait for the callbacks a ``MultiThreadedExecutor`` already handed to its threads, and
    collect what they raised, before the node is destroyed.

    rclpy 7.1's ``Executor.shutdown()`` returns without waiting for them (its wait is behind
    a check that its own first lines make false), so a timer callback taken on the last
    ``spin_once`` could run after ``destroy_node`` and fail with "cannot use Destroyable
    because destruction was requested", printed at exit as an exception "never retrieved".
    ``_executor`` (the thread pool) and ``_futures`` (the submitted tasks) are rclpy's
    internals, read only if present."""
    pool = getattr(executor, "_executor", None)
    if pool is not None:
        pool.shutdown(wait=True)
    for task in list(getattr(executor, "_futures", ())):
        if task.done() and task.exception() is not None:
            log.debug("a callback in flight at shutdown raised: %r", task.exception())


def run_node(node_cls: Callable[[], MirageNode], argv: list[str] | None = None,
             num_threads: int = 4) -> int:
    """Run one node process: ``rclpy.init(argv)`` (so ``--ros-args`` are rcl's), build the
    node, run its ``start()`` in a worker thread, spin a ``MultiThreadedExecutor`` until
    SIGINT/SIGTERM or the node sets ``done``, then :meth:`MirageNode.close` and shut down.

    Returns the process exit code: the node's ``exit_code``, 2 for bad parameters, ROS setup
    errors or a failed ``start()`` (logged).
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        require_ros()
    except RosSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    stop = threading.Event()
    prev = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    executor = MultiThreadedExecutor(num_threads=num_threads)
    try:
        try:
            node = node_cls()
        except Exception as e:  # bad parameters (also those checked past declare_config)
            what = "" if isinstance(e, MirageInputError) else f"{type(e).__name__}: "
            rclpy.logging.get_logger("mirage").error(f"cannot start: {what}{e}")
            log.debug("cannot start", exc_info=True)
            return 2
        executor.add_node(node)

        def start() -> None:
            try:
                node.start()
            except Exception as e:
                node.get_logger().error(f"start failed: {type(e).__name__}: {e}")
                node.exit_code = 2
                node.done.set()

        threading.Thread(target=start, name="start", daemon=True).start()
        node.get_logger().info(f"{node.get_fully_qualified_name()} up "
                               f"({rclpy.get_rmw_implementation_identifier()})")
        while not stop.is_set() and not node.done.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
        code = int(node.exit_code or 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            if node is not None:
                node.stop_callbacks()  # waits for callbacks in flight (the executor does not)
            executor.shutdown(timeout_sec=10.0)
            _drain(executor)
            if node is not None:
                node.close()
        finally:
            if node is not None:
                node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
            for s, h in prev.items():
                signal.signal(s, h)
    return code
