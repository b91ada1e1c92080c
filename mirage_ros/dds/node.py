"""A small rclpy-shaped ROS 2 client over Cyclone DDS (no rclpy needed).

Shape (mirrors rclpy so nodes can be written once against a thin abstraction)::

    ctx = DdsContext(domain_id=None, loopback=True)          # one DDS participant
    node = ctx.create_node("camera", namespace="/mirage")
    pub = node.create_publisher("sensor_msgs/msg/Image", "image", QOS_SENSOR_DATA)
    sub = node.create_subscription("sensor_msgs/msg/Image", "image", callback, QOS_SENSOR_DATA)
    srv = node.create_service("mirage/srv/ReadMemory", "read", handler)  # handler(req, resp)
    cli = node.create_client("mirage/srv/ReadMemory", "read")
    cli.wait_for_service(5.0); response = cli.call(request, timeout_sec=5.0)
    ctx.spin_once(0.1) / ctx.spin() / ctx.spin_in_thread(); ctx.shutdown()

Messages are rosbags message instances (``ctx.msg_class(type)(...)``, or ``ctx.default(type)``
for all-default values); received arrays are read-only numpy views of the sample. Callbacks
and service handlers run in the thread that spins. ``Client.call`` blocks on its own reply
reader and does not need spinning.

Wire conventions (see :mod:`.names` and :mod:`.typesupport`): topics ``rt/...``; services
``rq/<name>Request`` / ``rr/<name>Reply`` with the 16-byte ``{guid, seq}`` header, where guid
is the instance handle of the client's request writer; types ``pkg::msg::dds_::T_``. Service
endpoints carry the user data ``clientid=<id>;`` / ``serviceid=<id>;`` as rmw_cyclonedds does,
and the participant ``enclave=/;``. The graph (``ros_discovery_info``) is published so
``ros2 node list`` on a ROS 2 machine would list the nodes (see :mod:`.discovery`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

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
from .typesupport import REQUEST_HEADER, TypeSupport, typestore_with

__all__ = [
    "Client",
    "DdsContext",
    "DdsNode",
    "Publisher",
    "Service",
    "Subscription",
]

_ANY_STATE = SampleState.Any | ViewState.Any | InstanceState.Any
_TAKE_BATCH = 32


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
        self._spin_lock = threading.RLock()  # held while spinning; shutdown waits for it
        self._topics: dict[str, Topic] = {}
        self._handlers: list[_Handler] = []
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
        """Wait up to ``timeout_sec`` (``None``: forever) for data, then run the callbacks of
        everything that arrived. Returns the number of callbacks run (0 on timeout/shutdown).
        An exception raised by a callback propagates (the rest of that batch is dropped)."""
        with self._spin_lock:
            if self._shutdown:
                return 0
            self._waitset.wait(_ns(timeout_sec) if timeout_sec is not None else 2**63 - 1)
            if self._shutdown:
                return 0
            with self._lock:
                handlers = list(self._handlers)
            n = 0
            for h in handlers:
                if self._shutdown:
                    break
                n += h.dispatch()
            return n

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
        """Stop spinning and delete the participant and all its entities (idempotent).

        Raises the exception that ended a :meth:`spin_in_thread` thread, if any."""
        if self._shutdown:
            return
        self._shutdown = True
        self._guard.set(True)
        if self._spin_thread is not None and self._spin_thread is not threading.current_thread():
            self._spin_thread.join(timeout=5.0)
        with self._spin_lock:
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
        with self._lock:
            if handler in self._handlers:
                self._handlers.remove(handler)
        self._waitset.detach(handler.condition)

    def _graph_changed(self) -> None:
        if self._graph is not None and not self._shutdown:
            self._graph.publish()


class _Handler:
    """A reader attached to the context's waitset and what to do with its samples."""

    def __init__(self, reader: DataReader, on_sample: Callable[[bytes, Any], None]):
        self.reader = reader
        self.condition = ReadCondition(reader, _ANY_STATE)
        self.on_sample = on_sample

    def dispatch(self) -> int:
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
    """A ROS 2 node: a name, a namespace and the endpoints it created."""

    def __init__(self, context: DdsContext, name: str, namespace: str = "/"):
        self.context = context
        self.name = validate_node_name(name)
        self.namespace = validate_namespace(namespace)
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []
        self.services: list[Service] = []
        self.clients: list[Client] = []

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def get_name(self) -> str:
        return self.name

    def get_namespace(self) -> str:
        return self.namespace

    def destroy_node(self) -> None:
        """Delete this node's endpoints and drop it from the graph (the context lives on)."""
        ctx = self.context
        with ctx._spin_lock:  # not while a callback of ours may run
            for ent in self.subscriptions + self.services:
                ctx._remove_handler(ent._handler)
            for ent in [*self.subscriptions, *self.publishers, *self.services, *self.clients]:
                ent._destroy()
            self.publishers, self.subscriptions, self.services, self.clients = [], [], [], []
            with ctx._lock:
                if self in ctx._nodes:
                    ctx._nodes.remove(self)
        ctx._graph_changed()

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
        handler: Callable[[Any, Any], Any],
        qos: QosProfile = QOS_SERVICES,
    ) -> Service:
        """Serve ``srv_type`` (``pkg/srv/X``): ``handler(request, default_response) -> response``
        runs while the context spins."""
        self.context._check_ok()
        srv = Service(self, srv_type, self.resolve(name), handler, qos)
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
    if srv_type.count("/") != 2 or srv_type.split("/")[1] != "srv":
        raise TypeError(f"expected a service type 'pkg/srv/X', got {srv_type!r}")
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


class Service:
    """Answers requests on ``rq/<name>Request`` with replies on ``rr/<name>Reply``."""

    def __init__(
        self,
        node: DdsNode,
        srv_type: str,
        service_name: str,
        handler: Callable[[Any, Any], Any],
        qos: QosProfile,
        reply_match_timeout_s: float = 1.0,
    ):
        ctx = node.context
        self.srv_type = srv_type
        self.service_name = service_name
        self.handler = handler
        self.reply_match_timeout_s = reply_match_timeout_s
        self._types = ctx.types
        self._req_type, self._rep_type, rq, rr = _service_topics(ctx, srv_type, service_name)
        user_data = f"serviceid={_endpoint_id()};".encode()
        self.request_reader = DataReader(ctx.participant, rq, qos.to_dds(user_data))
        self.reply_writer = DataWriter(ctx.participant, rr, qos.to_dds(user_data))
        self._handler = _Handler(self.request_reader, self._on_request)
        ctx._add_handler(self._handler)

    def _destroy(self) -> None:
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
        response = self.handler(request, self._types.default(self._rep_type))
        if response is None:
            raise ValueError(f"service {self.service_name} handler returned None")
        # Reply only once the client's reply reader is matched (else a volatile reply is lost):
        # the client is identified by the clientid= user data of the request's writer.
        try:
            ep = self.request_reader.get_matched_publication_data(info.publication_handle)
            client_id = _user_data_value(ep, "clientid")
        except DDSException:
            client_id = None
        _wait_until(lambda: self._client_reader_matched(client_id), self.reply_match_timeout_s)
        _write(self.reply_writer, self._types.encode(response, self._rep_type, (guid, seq)))


class Client:
    """Calls a service: writes ``{guid, seq} + request``, keeps the reply with its guid and seq.

    ``guid`` is the instance handle of the request writer (as rmw_cyclonedds_cpp does)."""

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
        self._lock = threading.Lock()
        self._waitset = WaitSet(ctx.participant)
        self._waitset.attach(ReadCondition(self.reply_reader, _ANY_STATE))

    def _destroy(self) -> None:
        with self._lock:
            _delete(self._waitset)
            _delete(self.request_writer)
            _delete(self.reply_reader)

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

    def call(self, request: Any, timeout_sec: float = 5.0) -> Any:
        """Send ``request`` and block until its response; ``TimeoutError`` after ``timeout_sec``.

        Call :meth:`wait_for_service` first: a request written before a server matched is lost
        (volatile QoS, as in ROS 2)."""
        self._ctx._check_ok()
        with self._lock:
            self._seq += 1
            seq = self._seq
            _write(
                self.request_writer, self._types.encode(request, self._req_type, (self.guid, seq))
            )
            deadline = time.monotonic() + timeout_sec
            while True:
                for data, _info in _take(self.reply_reader):
                    guid, rseq = REQUEST_HEADER.unpack_from(data, 4)
                    if guid == self.guid and rseq == seq:
                        return self._types.decode_with_header(data, self._rep_type)[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no reply from service {self.service_name} ({self.srv_type}) within "
                        f"{timeout_sec} s"
                    )
                self._waitset.wait(_ns(left))
