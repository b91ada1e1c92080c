"""A small rclpy-shaped ROS 2 client over Cyclone DDS (no rclpy needed).

Shape (mirrors rclpy so nodes can be written once against a thin abstraction)::

    ctx = DdsContext(domain_id=None, loopback=True)          # one DDS participant
    node = ctx.create_node("camera", namespace="/mirage")
    pub = node.create_publisher("sensor_msgs/msg/Image", "image", QOS_SENSOR_DATA)
    sub = node.create_subscription("sensor_msgs/msg/Image", "image", callback, QOS_SENSOR_DATA)
    srv = node.create_service("mirage/srv/ReadMemory", "read", handler)  # handler(req, resp)
    srv = node.create_service("mirage/srv/ReadMemory", "read2", h, deferred=True)
                                           # h(req, resp, reply); later, any thread: reply.send(r)
    cli = node.create_client("mirage/srv/ReadMemory", "read")
    cli.wait_for_service(5.0); response = cli.call(request, timeout_sec=5.0)
    timer = node.create_timer(0.5, callback)  # timer.cancel() / timer.reset()
    ctx.spin_once(0.1) / ctx.spin() / ctx.spin_in_thread(); ctx.shutdown()

Actions (``node.create_action_server`` / ``node.create_action_client``) are in :mod:`.action`.

Messages are rosbags message instances (``ctx.msg_class(type)(...)``, or ``ctx.default(type)``
for all-default values); received arrays are read-only numpy views of the sample.

Threads: subscription callbacks, service handlers and timer callbacks run in the thread that
spins the context (``spin_once`` waits until data arrives or the next timer is due). A
deferred service's :class:`ReplyHandle` may be answered from any thread. ``Client.call`` blocks
on its own reply reader and does not need spinning; several threads may call one client at
once. ``destroy_*`` and ``shutdown`` may be called from any thread; an endpoint is never deleted
while one of its callbacks runs.

Wire conventions (see :mod:`.names` and :mod:`.typesupport`): topics ``rt/...``; services
``rq/<name>Request`` / ``rr/<name>Reply`` with the 16-byte ``{guid, seq}`` header, where guid
is the instance handle of the client's request writer; types ``pkg::msg::dds_::T_``. Service
endpoints carry the user data ``clientid=<id>;`` / ``serviceid=<id>;`` as rmw_cyclonedds does,
and the participant ``enclave=/;``. The graph (``ros_discovery_info``) is published so
``ros2 node list`` on a ROS 2 machine would list the nodes (see :mod:`.discovery`).
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from cyclonedds._clayer import ddspy_take, ddspy_write
from cyclonedds.core import (
    DDSException,
    Entity,
    GuardCondition,
    InstanceState,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from rosbags.typesys.store import Typestore

from .config import loopback_config_xml, resolve_domain_id
from .discovery import GraphPublisher
from .names import (
    resolve_name,
    service_reply_topic,
    service_request_topic,
    topic_dds_name,
    validate_namespace,
    validate_node_name,
)
from .qos import QOS_SERVICES, QosProfile
from .timer import Timer
from .typesupport import TypeSupport, typestore_with

if TYPE_CHECKING:
    from .action import ActionClient, ActionServer

__all__ = [
    "Client",
    "DdsContext",
    "DdsNode",
    "Publisher",
    "ReplyHandle",
    "Service",
    "Subscription",
    "Timer",
]

_log = logging.getLogger(__name__)

_ANY_STATE = SampleState.Any | ViewState.Any | InstanceState.Any
_TAKE_BATCH = 32
_FOREVER_NS = 2**63 - 1


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def _delete(entity: Entity | None) -> None:
    """Delete a DDS entity now (and its children) and stop cyclonedds deleting it again."""
    if entity is None:
        return
    Entity._entities.pop(entity._ref, None)
    entity._delete(entity._ref)


def _take(reader: DataReader) -> list[tuple[bytes, Any]]:
    """All samples waiting in ``reader``: ``[(cdr_bytes, sample_info), ...]``, valid data only."""
    out = []
    while True:
        ret = ddspy_take(reader._ref, _ANY_STATE, _TAKE_BATCH)
        if isinstance(ret, int):
            raise DDSException(ret, f"take failed on {reader!r}")
        out.extend((data, info) for data, info in ret if info.valid_data)
        if len(ret) < _TAKE_BATCH:
            return out


def _write(writer: DataWriter, payload: Any) -> None:
    ret = ddspy_write(writer._ref, payload)
    if ret < 0:
        raise DDSException(ret, f"write failed on {writer!r} (payload does not fit the type?)")


def _user_data_value(ep: Any, key: str) -> str | None:
    """``value`` of ``key=value;`` in a discovered endpoint's user data, if present."""
    ud = ep.qos[Policy.Userdata] if ep is not None and ep.qos is not None else None
    if ud is None:
        return None
    for item in ud.data.decode("utf-8", "replace").split(";"):
        k, _, v = item.partition("=")
        if k == key:
            return v
    return None


def _wait_until(predicate: Callable[[], bool], timeout_sec: float, poll_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_sec
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


class _DomainRegistry:
    """One Cyclone ``Domain`` per domain id and process, created with the loopback XML and
    deleted (with all its participants) when the last context using it shuts down."""

    _lock = threading.Lock()
    _domains: ClassVar[dict[int, list[Any]]] = {}  # domain id -> [Domain, refcount]

    @classmethod
    def acquire(cls, domain_id: int, config_xml: str) -> None:
        with cls._lock:
            entry = cls._domains.get(domain_id)
            if entry is None:
                cls._domains[domain_id] = [Domain(domain_id, config_xml), 1]
            else:
                entry[1] += 1

    @classmethod
    def release(cls, domain_id: int) -> None:
        with cls._lock:
            entry = cls._domains.get(domain_id)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del cls._domains[domain_id]
                _delete(entry[0])


class DdsContext:
    """One DDS domain participant: the ROS 2 "context" that nodes share (as in ROS 2 >= Humble).

    ``domain_id``: DDS domain (default ``$ROS_DOMAIN_ID`` or 0). ``loopback``: use the
    loopback-only configuration for this domain in this process (otherwise ``$CYCLONEDDS_URI``
    or Cyclone's defaults). ``typestore``: rosbags type store holding every type used (default:
    :func:`.typesupport.typestore_with`, the distribution of ``$ROS_DISTRO`` or Humble).
    ``publish_graph``: publish ``ros_discovery_info`` so ROS 2 tools list the nodes.
    """

    def __init__(
        self,
        domain_id: int | None = None,
        *,
        loopback: bool = True,
        typestore: Typestore | None = None,
        publish_graph: bool = True,
    ):
        self.domain_id = resolve_domain_id(domain_id)
        self.loopback = loopback
        self.types = TypeSupport(typestore if typestore is not None else typestore_with())
        if loopback:
            _DomainRegistry.acquire(self.domain_id, loopback_config_xml())
        try:
            self.participant = DomainParticipant(
                self.domain_id, qos=Qos(Policy.Userdata(data=b"enclave=/;"))
            )
        except Exception:
            if loopback:
                _DomainRegistry.release(self.domain_id)
            raise
        self._lock = threading.RLock()  # entity tables
        self._spin_lock = threading.RLock()  # one spinner at a time; shutdown waits for it
        self._dispatch_lock = threading.RLock()  # held while callbacks run; destroy_* wait for it
        self._topics: dict[str, Topic] = {}
        self._handlers: list[_Handler] = []
        self._timers: list[Timer] = []
        self._nodes: list[DdsNode] = []
        self._waitset = WaitSet(self.participant)
        self._guard = GuardCondition(self.participant)
        self._waitset.attach(self._guard)
        self._shutdown = False
        self._spin_thread: threading.Thread | None = None
        self._spin_error: BaseException | None = None
        self._graph = GraphPublisher(self) if publish_graph else None

    # -- types -------------------------------------------------------------------------------
    def msg_class(self, ros_type: str) -> type:
        """The rosbags class of ``ros_type`` (e.g. ``"sensor_msgs/msg/Image"``)."""
        return self.types.msg_class(ros_type)

    def default(self, ros_type: str) -> Any:
        """A ``ros_type`` message with ROS 2 default field values."""
        return self.types.default(ros_type)

    # -- nodes -------------------------------------------------------------------------------
    def create_node(self, name: str, namespace: str = "/") -> DdsNode:
        """A node ``namespace/name`` on this participant."""
        self._check_ok()
        node = DdsNode(self, name, namespace)
        with self._lock:
            self._nodes.append(node)
        self._graph_changed()
        return node

    @property
    def nodes(self) -> list[DdsNode]:
        with self._lock:
            return list(self._nodes)

    @property
    def ok(self) -> bool:
        """False once :meth:`shutdown` was called."""
        return not self._shutdown

    # -- spinning ----------------------------------------------------------------------------
    def spin_once(self, timeout_sec: float | None = None) -> int:
        """Wait up to ``timeout_sec`` (``None``: forever) for data or a due timer, then run the
        callbacks of everything that arrived and of the timers that are due. Returns the number
        of callbacks run (0 on timeout or shutdown). A timer created or reset meanwhile (any
        thread) is taken into account at once. An exception raised by a callback propagates
        (the rest of that batch is dropped)."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        with self._spin_lock:
            while True:
                if self._shutdown:
                    return 0
                now = time.monotonic()
                wait_s = None if deadline is None else max(0.0, deadline - now)
                due = self._next_timer_due()
                if due is not None:
                    until = max(0.0, due - now)
                    wait_s = until if wait_s is None else min(wait_s, until)
                # Not holding the dispatch lock: destroy_* need not wait for this wait.
                self._waitset.wait(_FOREVER_NS if wait_s is None else _ns(wait_s))
                if self._shutdown:
                    return 0
                woken = self._guard.take()  # before reading timer state: no wake is lost
                n = self._dispatch()
                if n or not woken:
                    return n
                if deadline is not None and time.monotonic() >= deadline:
                    return 0
                # only a timer change woke us: wait again with the new schedule

    def _dispatch(self) -> int:
        with self._dispatch_lock:
            with self._lock:
                handlers = list(self._handlers)
            n = 0
            for h in handlers:
                if self._shutdown:
                    return n
                n += h.dispatch()
            return n + self._run_timers()

    def spin(self, timeout_sec: float | None = None) -> None:
        """Spin until :meth:`shutdown` (or for ``timeout_sec`` seconds if given)."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        while self.ok:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return
            self.spin_once(left)

    def spin_until(self, predicate: Callable[[], bool], timeout_sec: float) -> bool:
        """Spin until ``predicate()`` holds; False if ``timeout_sec`` passed first."""
        deadline = time.monotonic() + timeout_sec
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or not self.ok:
                return False
            self.spin_once(min(left, 0.05))
        return True

    def spin_in_thread(self) -> threading.Thread:
        """Spin in a daemon thread until :meth:`shutdown` (which joins it)."""
        if self._spin_thread is not None:
            raise RuntimeError("this context already spins in a thread")

        def run():
            try:
                self.spin()
            except BaseException as e:  # surfaced by shutdown()
                self._spin_error = e

        self._spin_thread = threading.Thread(target=run, name="dds-spin", daemon=True)
        self._spin_thread.start()
        return self._spin_thread

    def shutdown(self) -> None:
        """Stop spinning, destroy every node (action servers and clients first; blocked
        ``Client.call`` s raise ``RuntimeError``), delete the participant (idempotent).

        Raises the exception that ended a :meth:`spin_in_thread` thread, if any."""
        if self._shutdown:
            return
        self._shutdown = True
        self._guard.set(True)
        if self._spin_thread is not None and self._spin_thread is not threading.current_thread():
            self._spin_thread.join(timeout=5.0)
        with self._spin_lock, self._dispatch_lock:
            for node in self.nodes:
                try:
                    node.destroy_node()
                except Exception:  # the participant goes anyway
                    _log.exception("destroying node %s at shutdown", node.fully_qualified_name)
            _delete(self.participant)
            if self.loopback:
                _DomainRegistry.release(self.domain_id)
        if self._spin_error is not None:
            raise self._spin_error

    def __enter__(self) -> DdsContext:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- internals ---------------------------------------------------------------------------
    def _check_ok(self) -> None:
        if self._shutdown:
            raise RuntimeError("DdsContext was shut down")

    def _topic(self, dds_name: str, idl_cls: type) -> Topic:
        with self._lock:
            topic = self._topics.get(dds_name)
            if topic is None:
                topic = Topic(self.participant, dds_name, idl_cls)
                self._topics[dds_name] = topic
            elif topic.data_type is not idl_cls:
                raise ValueError(
                    f"DDS topic {dds_name!r} already exists with type "
                    f"{topic.data_type.__idl_typename__}, not {idl_cls.__idl_typename__}"
                )
            return topic

    def _add_handler(self, handler: _Handler) -> None:
        with self._lock:
            self._handlers.append(handler)
        self._waitset.attach(handler.condition)

    def _remove_handler(self, handler: _Handler) -> None:
        handler.active = False  # a batch being dispatched (by this thread) skips it
        with self._lock:
            if handler in self._handlers:
                self._handlers.remove(handler)
        self._waitset.detach(handler.condition)

    def _graph_changed(self) -> None:
        if self._graph is not None and not self._shutdown:
            self._graph.publish()

    def _wake(self) -> None:
        """Make a waiting ``spin_once`` recompute its timeout (a timer was created or reset)."""
        if not self._shutdown:
            try:
                self._guard.set(True)
            except DDSException:  # deleted by a concurrent shutdown
                pass

    def _add_timer(self, timer: Timer) -> None:
        with self._lock:
            self._timers.append(timer)
        self._wake()

    def _remove_timer(self, timer: Timer) -> None:
        with self._lock:
            if timer in self._timers:
                self._timers.remove(timer)

    def _next_timer_due(self) -> float | None:
        with self._lock:
            timers = list(self._timers)
        dues = [d for d in (t._due() for t in timers) if d is not None]
        return min(dues) if dues else None

    def _run_timers(self) -> int:
        with self._lock:
            timers = list(self._timers)
        now = time.monotonic()
        n = 0
        for t in timers:
            if self._shutdown:
                break
            if t._claim(now):
                t.callback()
                n += 1
        return n


class _Handler:
    """A reader attached to the context's waitset and what to do with its samples."""

    def __init__(self, reader: DataReader, on_sample: Callable[[bytes, Any], None]):
        self.reader = reader
        self.condition = ReadCondition(reader, _ANY_STATE)
        self.on_sample = on_sample
        self.active = True

    def dispatch(self) -> int:
        if not self.active:
            return 0
        samples = _take(self.reader)
        for data, info in samples:
            self.on_sample(data, info)
        return len(samples)


def _type_name(msg_type: str | type) -> str:
    """``"pkg/msg/T"`` from a type name or a rosbags class (``__msgtype__``)."""
    name = msg_type if isinstance(msg_type, str) else getattr(msg_type, "__msgtype__", None)
    if not isinstance(name, str) or name.count("/") != 2:
        raise TypeError(
            f"expected a ROS type name 'pkg/msg/T' or a rosbags class, got {msg_type!r}"
        )
    return name


class DdsNode:
    """A ROS 2 node: a name, a namespace and the endpoints it created.

    Everything a node creates (endpoints, timers, action servers and clients) is destroyed with
    it (:meth:`destroy_node`), or one by one with the ``destroy_*`` methods.
    """

    def __init__(self, context: DdsContext, name: str, namespace: str = "/"):
        self.context = context
        self.name = validate_node_name(name)
        self.namespace = validate_namespace(namespace)
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []
        self.services: list[Service] = []
        self.clients: list[Client] = []
        self.timers: list[Timer] = []
        self.action_servers: list[ActionServer] = []
        self.action_clients: list[ActionClient] = []

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def get_name(self) -> str:
        return self.name

    def get_namespace(self) -> str:
        return self.namespace

    def destroy_node(self) -> None:
        """Delete this node's action servers and clients, timers and endpoints, and drop it
        from the graph (the context lives on)."""
        ctx = self.context
        for action in [*self.action_servers, *self.action_clients]:
            action.destroy()
        for timer in list(self.timers):
            self.destroy_timer(timer)
        with ctx._dispatch_lock:  # not while a callback of ours may run
            for ent in self.subscriptions + self.services:
                ctx._remove_handler(ent._handler)
            for ent in [*self.subscriptions, *self.publishers, *self.services, *self.clients]:
                ent._destroy()
            self.publishers, self.subscriptions, self.services, self.clients = [], [], [], []
            with ctx._lock:
                if self in ctx._nodes:
                    ctx._nodes.remove(self)
        ctx._graph_changed()

    # -- destroying single entities (rclpy-shaped; False if it is not this node's) -----------
    def _destroy_plain(self, entity, entities: list) -> bool:
        """Delete an endpoint that has no callback (publisher, client)."""
        if entity not in entities:
            return False
        entities.remove(entity)
        entity._destroy()
        self.context._graph_changed()
        return True

    def destroy_publisher(self, publisher: Publisher) -> bool:
        """Delete ``publisher``."""
        return self._destroy_plain(publisher, self.publishers)

    def destroy_subscription(self, subscription: Subscription) -> bool:
        """Delete ``subscription`` (waits for a running callback of it to return)."""
        return self._destroy_handled(subscription, self.subscriptions)

    def destroy_service(self, service: Service) -> bool:
        """Delete ``service`` (waits for a running handler; later deferred replies are
        dropped)."""
        return self._destroy_handled(service, self.services)

    def destroy_client(self, client: Client) -> bool:
        """Delete ``client`` (calls blocked in it raise ``RuntimeError``)."""
        return self._destroy_plain(client, self.clients)

    def destroy_timer(self, timer: Timer) -> bool:
        """Stop and remove ``timer`` (a call already running finishes)."""
        if timer not in self.timers:
            return False
        self.timers.remove(timer)
        self.context._remove_timer(timer)
        timer._destroy()
        return True

    def _destroy_handled(self, ent: Subscription | Service, table: list) -> bool:
        if ent not in table:
            return False
        ctx = self.context
        with ctx._dispatch_lock:  # not while its callback runs
            if ent not in table:
                return False
            table.remove(ent)
            ctx._remove_handler(ent._handler)
            ent._destroy()
        ctx._graph_changed()
        return True

    def resolve(self, name: str) -> str:
        """Fully qualified topic/service name (relative names are under the namespace)."""
        return resolve_name(name, self.namespace, self.name)

    def create_publisher(self, msg_type: str | type, topic: str, qos: QosProfile) -> Publisher:
        """A publisher of ``msg_type`` on ``topic`` (resolved against this node)."""
        self.context._check_ok()
        pub = Publisher(self, _type_name(msg_type), self.resolve(topic), qos)
        self.publishers.append(pub)
        self.context._graph_changed()
        return pub

    def create_subscription(
        self,
        msg_type: str | type,
        topic: str,
        callback: Callable[[Any], None],
        qos: QosProfile,
    ) -> Subscription:
        """Call ``callback(msg)`` (while the context spins) for each message on ``topic``."""
        self.context._check_ok()
        sub = Subscription(self, _type_name(msg_type), self.resolve(topic), callback, qos)
        self.subscriptions.append(sub)
        self.context._graph_changed()
        return sub

    def create_service(
        self,
        srv_type: str,
        name: str,
        handler: Callable[..., Any],
        qos: QosProfile = QOS_SERVICES,
        *,
        deferred: bool = False,
    ) -> Service:
        """Serve ``srv_type`` (``pkg/srv/X``; also an action's ``pkg/action/X_SendGoal`` etc.).

        The handler runs while the context spins:

        * default: ``handler(request, default_response) -> response``, answered at once;
        * ``deferred=True``: ``handler(request, default_response, reply)`` where ``reply`` is a
          :class:`ReplyHandle`; call ``reply.send(response)`` once, at any later time, from any
          thread. The handler may also return a response to answer at once; it returns ``None``
          otherwise. A request never answered is never replied to (the client times out).
        """
        self.context._check_ok()
        srv = Service(self, srv_type, self.resolve(name), handler, qos, deferred=deferred)
        self.services.append(srv)
        self.context._graph_changed()
        return srv

    def create_client(self, srv_type: str, name: str, qos: QosProfile = QOS_SERVICES) -> Client:
        """A client of service ``name`` of type ``srv_type`` (``pkg/srv/X``)."""
        self.context._check_ok()
        cli = Client(self, srv_type, self.resolve(name), qos)
        self.clients.append(cli)
        self.context._graph_changed()
        return cli

    def create_timer(self, period_sec: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback()`` every ``period_sec`` seconds (monotonic clock) in the thread
        that spins the context; the first call is one period from now. Missed periods are
        skipped, never caught up in a burst (see :mod:`.timer`)."""
        self.context._check_ok()
        timer = Timer(period_sec, callback, wake=self.context._wake)
        self.timers.append(timer)
        self.context._add_timer(timer)
        return timer

    def create_action_server(
        self,
        action_type: str,
        name: str,
        execute_callback: Callable[[Any], Any],
        goal_callback: Callable[[Any], Any] | None = None,
        cancel_callback: Callable[[Any], Any] | None = None,
        result_timeout_s: float | None = 900.0,
        **qos: QosProfile,
    ) -> ActionServer:
        """An :class:`~mirage_ros.dds.action.ActionServer` of ``action_type``
        (``pkg/action/X``) named ``name`` on this node (same arguments)."""
        from .action import ActionServer

        return ActionServer(
            self,
            action_type,
            name,
            execute_callback,
            goal_callback,
            cancel_callback,
            result_timeout_s,
            **qos,
        )

    def create_action_client(self, action_type: str, name: str, **qos: QosProfile) -> ActionClient:
        """An :class:`~mirage_ros.dds.action.ActionClient` of action ``name`` on this node."""
        from .action import ActionClient

        return ActionClient(self, action_type, name, **qos)

    def reader_guids(self) -> list[bytes]:
        """16-byte DDS GUIDs of this node's readers (subscriptions, services' requests,
        clients' replies)."""
        readers = [s.reader for s in self.subscriptions]
        readers += [s.request_reader for s in self.services]
        readers += [c.reply_reader for c in self.clients]
        return [r.guid.bytes for r in readers]

    def writer_guids(self) -> list[bytes]:
        """16-byte DDS GUIDs of this node's writers."""
        writers = [p.writer for p in self.publishers]
        writers += [s.reply_writer for s in self.services]
        writers += [c.request_writer for c in self.clients]
        return [w.guid.bytes for w in writers]


class Publisher:
    """Publishes rosbags messages of one type on one topic."""

    def __init__(self, node: DdsNode, msg_type: str, topic_name: str, qos: QosProfile):
        ctx = node.context
        self.msg_type = msg_type
        self.topic_name = topic_name
        self._types = ctx.types
        topic = ctx._topic(topic_dds_name(topic_name), ctx.types.idl_class(msg_type))
        self.writer = DataWriter(ctx.participant, topic, qos.to_dds())

    def publish(self, msg: Any) -> None:
        """Serialise ``msg`` (a rosbags ``msg_type`` instance) and write it."""
        if getattr(msg, "__msgtype__", self.msg_type) != self.msg_type:
            raise TypeError(f"publisher of {self.msg_type} got a {msg.__msgtype__}")
        _write(self.writer, self._types.encode(msg, self.msg_type))

    def _destroy(self) -> None:
        _delete(self.writer)

    def get_subscription_count(self) -> int:
        """Number of matched readers."""
        return self.writer.get_publication_matched_status().current_count

    def wait_for_subscribers(self, count: int = 1, timeout_sec: float = 5.0) -> bool:
        """Block until at least ``count`` readers matched; False on timeout."""
        return _wait_until(lambda: self.get_subscription_count() >= count, timeout_sec)


class Subscription:
    """Calls ``callback(msg)`` for each message on one topic while the context spins."""

    def __init__(
        self,
        node: DdsNode,
        msg_type: str,
        topic_name: str,
        callback: Callable[[Any], None],
        qos: QosProfile,
    ):
        ctx = node.context
        self.msg_type = msg_type
        self.topic_name = topic_name
        self.callback = callback
        self._types = ctx.types
        topic = ctx._topic(topic_dds_name(topic_name), ctx.types.idl_class(msg_type))
        self.reader = DataReader(ctx.participant, topic, qos.to_dds())
        self._handler = _Handler(self.reader, self._on_sample)
        ctx._add_handler(self._handler)

    def _destroy(self) -> None:
        _delete(self._handler.condition)
        _delete(self.reader)

    def _on_sample(self, data: bytes, info: Any) -> None:
        self.callback(self._types.decode(data, self.msg_type))

    def get_publisher_count(self) -> int:
        """Number of matched writers."""
        return self.reader.get_subscription_matched_status().current_count

    def wait_for_publishers(self, count: int = 1, timeout_sec: float = 5.0) -> bool:
        """Block until at least ``count`` writers matched; False on timeout."""
        return _wait_until(lambda: self.get_publisher_count() >= count, timeout_sec)


_ids = itertools.count(1)


def _endpoint_id() -> str:
    """A process-unique id for ``clientid=``/``serviceid=`` user data (16 bytes, dotted hex as
    rmw_cyclonedds prints them; only equality between a pair of endpoints matters)."""
    raw = os.urandom(8) + os.getpid().to_bytes(4, "little") + next(_ids).to_bytes(4, "little")
    return ".".join(f"{b:x}" for b in raw)


def _check_srv_type(ctx: DdsContext, srv_type: str) -> tuple[str, str]:
    """``(X_Request, X_Response)`` type names of a service type ``pkg/srv/X``, or of an action's
    service ``pkg/action/X_SendGoal`` / ``X_GetResult`` (rosidl names these ``pkg/action/...``,
    DDS types ``pkg::action::dds_::X_SendGoal_Request_``)."""
    if srv_type.count("/") != 2 or srv_type.split("/")[1] not in ("srv", "action"):
        raise TypeError(
            f"expected a service type 'pkg/srv/X' (or an action's 'pkg/action/X_SendGoal'), "
            f"got {srv_type!r}"
        )
    req, rep = f"{srv_type}_Request", f"{srv_type}_Response"
    ctx.types.msg_class(req)
    ctx.types.msg_class(rep)
    return req, rep


def _service_topics(ctx, srv_type: str, service_name: str):
    """(request type, reply type, request topic, reply topic) of a service (rq/, rr/)."""
    req_type, rep_type = _check_srv_type(ctx, srv_type)
    rq = ctx._topic(service_request_topic(service_name), ctx.types.idl_class(req_type, True))
    rr = ctx._topic(service_reply_topic(service_name), ctx.types.idl_class(rep_type, True))
    return req_type, rep_type, rq, rr


class ReplyHandle:
    """The pending reply to one request of a deferred service (``deferred=True``).

    :meth:`send` answers it exactly once, from any thread, at any time while the service
    exists. ``request_id`` is the request's ``(guid, seq)`` header, echoed in the reply.
    """

    def __init__(self, service: Service, guid: int, seq: int, client_id: str | None):
        self._service = service
        self.request_id = (guid, seq)
        self._client_id = client_id
        self._lock = threading.Lock()
        self._sent = False

    @property
    def sent(self) -> bool:
        """True once :meth:`send` was called successfully."""
        return self._sent

    def send(self, response: Any) -> bool:
        """Send ``response`` (a ``X_Response`` message). Returns False if the service was
        destroyed meanwhile (the reply is dropped). Raises ``RuntimeError`` on a second send,
        ``TypeError`` for a message of another type (the handle stays unsent then).

        Blocks up to the service's ``reply_match_timeout_s`` until the client's reply reader
        is matched (a reply written before that would be lost)."""
        with self._lock:
            if self._sent:
                raise RuntimeError(
                    f"reply to request {self.request_id} of {self._service.service_name} "
                    "already sent"
                )
            payload = self._service._encode_reply(response, *self.request_id)
            self._sent = True
            return self._service._write_reply(payload, self._client_id)


class Service:
    """Answers requests on ``rq/<name>Request`` with replies on ``rr/<name>Reply``.

    ``deferred``: the handler is ``handler(request, default_response, reply)`` and answers
    through the :class:`ReplyHandle` (see :meth:`DdsNode.create_service`).
    """

    def __init__(
        self,
        node: DdsNode,
        srv_type: str,
        service_name: str,
        handler: Callable[..., Any],
        qos: QosProfile,
        reply_match_timeout_s: float = 1.0,
        *,
        deferred: bool = False,
    ):
        ctx = node.context
        self.srv_type = srv_type
        self.service_name = service_name
        self.handler = handler
        self.deferred = deferred
        self.reply_match_timeout_s = reply_match_timeout_s
        self._types = ctx.types
        self._req_type, self._rep_type, rq, rr = _service_topics(ctx, srv_type, service_name)
        user_data = f"serviceid={_endpoint_id()};".encode()
        self.request_reader = DataReader(ctx.participant, rq, qos.to_dds(user_data))
        self.reply_writer = DataWriter(ctx.participant, rr, qos.to_dds(user_data))
        self._lock = threading.Lock()  # reply writes vs. _destroy
        self._destroyed = False
        self._handler = _Handler(self.request_reader, self._on_request)
        ctx._add_handler(self._handler)

    def _destroy(self) -> None:
        with self._lock:
            self._destroyed = True
            _delete(self._handler.condition)
            _delete(self.request_reader)
            _delete(self.reply_writer)

    def _client_reader_matched(self, client_id: str | None) -> bool:
        for handle in self.reply_writer.get_matched_subscriptions():
            ep = self.reply_writer.get_matched_subscription_data(handle)
            if client_id is None or _user_data_value(ep, "clientid") == client_id:
                return True
        return False

    def _on_request(self, data: bytes, info: Any) -> None:
        request, guid, seq = self._types.decode_with_header(data, self._req_type)
        # The client is identified by the clientid= user data of the request's writer.
        try:
            ep = self.request_reader.get_matched_publication_data(info.publication_handle)
            client_id = _user_data_value(ep, "clientid")
        except DDSException:
            client_id = None
        default = self._types.default(self._rep_type)
        if self.deferred:
            reply = ReplyHandle(self, guid, seq, client_id)
            response = self.handler(request, default, reply)
            if response is not None:
                reply.send(response)
            return
        response = self.handler(request, default)
        if response is None:
            raise ValueError(f"service {self.service_name} handler returned None")
        self._write_reply(self._encode_reply(response, guid, seq), client_id)

    def _encode_reply(self, response: Any, guid: int, seq: int) -> Any:
        if getattr(response, "__msgtype__", None) != self._rep_type:
            raise TypeError(
                f"service {self.service_name} must reply with a {self._rep_type}, got "
                f"{getattr(response, '__msgtype__', type(response).__name__)}"
            )
        return self._types.encode(response, self._rep_type, (guid, seq))

    def _write_reply(self, payload: Any, client_id: str | None) -> bool:
        """Write a reply once the client's reply reader is matched (else a volatile reply is
        lost), or after ``reply_match_timeout_s``. False if the service is destroyed."""

        def ready() -> bool:
            with self._lock:
                return self._destroyed or self._client_reader_matched(client_id)

        _wait_until(ready, self.reply_match_timeout_s)
        with self._lock:
            if self._destroyed:
                return False
            _write(self.reply_writer, payload)
            return True


class Client:
    """Calls a service: writes ``{guid, seq} + request``, keeps the reply with its guid and seq.

    ``guid`` is the instance handle of the request writer (as rmw_cyclonedds_cpp does).
    :meth:`call` is thread-safe and re-entrant across threads: concurrent calls each get their
    own reply (one waiting thread reads the reply topic and hands replies to the others)."""

    def __init__(self, node: DdsNode, srv_type: str, service_name: str, qos: QosProfile):
        ctx = node.context
        self.srv_type = srv_type
        self.service_name = service_name
        self._ctx = ctx
        self._types = ctx.types
        self._req_type, self._rep_type, rq, rr = _service_topics(ctx, srv_type, service_name)
        user_data = f"clientid={_endpoint_id()};".encode()
        self.request_writer = DataWriter(ctx.participant, rq, qos.to_dds(user_data))
        self.reply_reader = DataReader(ctx.participant, rr, qos.to_dds(user_data))
        self.guid = self.request_writer.get_instance_handle() & 0xFFFF_FFFF_FFFF_FFFF
        self._seq = 0
        self._write_lock = threading.Lock()  # writes vs. _destroy
        self._cond = threading.Condition()  # _seq, _pending, _replies, _reading, _destroyed
        self._pending: set[int] = set()
        self._replies: dict[int, bytes] = {}
        self._reading = False  # one caller at a time waits on the reply reader
        self._destroyed = False
        self._reply_condition = ReadCondition(self.reply_reader, _ANY_STATE)
        self._interrupt = GuardCondition(ctx.participant)  # wakes the reading caller
        self._waitset = WaitSet(ctx.participant)
        self._waitset.attach(self._reply_condition)
        self._waitset.attach(self._interrupt)

    def _destroy(self) -> None:
        with self._cond:
            if self._destroyed:
                return
            self._destroyed = True
            self._interrupt.set(True)
            while self._reading:
                self._cond.wait()
            with self._write_lock:
                _delete(self._waitset)
                _delete(self._interrupt)
                _delete(self.request_writer)
                _delete(self.reply_reader)
            self._cond.notify_all()

    def request_class(self) -> type:
        """The rosbags class of the request (``pkg/srv/X_Request``)."""
        return self._types.msg_class(self._req_type)

    def default_request(self) -> Any:
        """A request with ROS 2 default values."""
        return self._types.default(self._req_type)

    def service_is_ready(self) -> bool:
        """True when a server's request reader and reply writer are both matched."""
        return (
            self.request_writer.get_publication_matched_status().current_count > 0
            and self.reply_reader.get_subscription_matched_status().current_count > 0
        )

    def wait_for_service(self, timeout_sec: float = 5.0) -> bool:
        """Block until :meth:`service_is_ready`; False on timeout."""
        return _wait_until(self.service_is_ready, timeout_sec)

    def call(self, request: Any, timeout_sec: float | None = 5.0) -> Any:
        """Send ``request`` and block until its response; ``TimeoutError`` after ``timeout_sec``
        (``None``: wait forever), ``RuntimeError`` if the client is destroyed meanwhile.

        Call :meth:`wait_for_service` first: a request written before a server matched is lost
        (volatile QoS, as in ROS 2). Does not need the context to spin; any thread may call."""
        self._ctx._check_ok()
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        with self._cond:
            self._check_not_destroyed()
            self._seq += 1
            seq = self._seq
            self._pending.add(seq)
        try:
            payload = self._types.encode(request, self._req_type, (self.guid, seq))
            with self._write_lock:
                self._check_not_destroyed()
                _write(self.request_writer, payload)
            data = self._await_reply(seq, deadline, timeout_sec)
        finally:
            with self._cond:
                self._pending.discard(seq)
                self._replies.pop(seq, None)
        return self._types.decode_with_header(data, self._rep_type)[0]

    def _check_not_destroyed(self) -> None:
        if self._destroyed:
            raise RuntimeError(f"client of {self.service_name} was destroyed")

    def _await_reply(self, seq: int, deadline: float | None, timeout_sec: float | None) -> bytes:
        """The reply sample with sequence number ``seq`` (leader/follower: whoever finds nobody
        reading becomes the reader and files every reply by sequence number)."""
        with self._cond:
            while True:
                if seq in self._replies:
                    return self._replies.pop(seq)
                self._check_not_destroyed()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"no reply from service {self.service_name} ({self.srv_type}) within "
                        f"{timeout_sec} s"
                    )
                if self._reading:
                    self._cond.wait(left)
                    continue
                self._reading = True
                self._cond.release()
                try:
                    self._waitset.wait(_FOREVER_NS if left is None else _ns(left))
                    samples = [] if self._destroyed else _take(self.reply_reader)
                finally:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                for data, _info in samples:
                    guid, rseq = _reply_header(data)
                    if guid == self.guid and rseq in self._pending:
                        self._replies[rseq] = data


def _reply_header(data: bytes) -> tuple[int, int]:
    """``(guid, seq)`` of a service sample (either endianness)."""
    endian = "<" if data[1] & 1 else ">"
    return struct.unpack_from(endian + "Qq", data, 4)
