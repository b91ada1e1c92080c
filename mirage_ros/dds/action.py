"""ROS 2 actions over :mod:`mirage_ros.dds`, speaking rcl_action's protocol as rmw_cyclonedds does.

An action is three services and two topics, built from the node's own services, clients,
publishers and subscriptions (so ``ros_discovery_info`` lists them and ``destroy_node`` removes
them). For the action ``/ns/imagine`` of type ``mirage/action/Imagine``:

================  ================================  ============================================
endpoint          ROS name (DDS topic)              type (DDS type)
================  ================================  ============================================
goal service      ``/ns/imagine/_action/send_goal`` ``mirage/action/Imagine_SendGoal``
                  (``rq/ns/imagine/_action/         (``mirage::action::dds_::
                  send_goalRequest``, ``rr/...      Imagine_SendGoal_Request_`` / ``_Response_``)
                  send_goalReply``)
cancel service    ``.../_action/cancel_goal``       ``action_msgs/srv/CancelGoal``
result service    ``.../_action/get_result``        ``mirage/action/Imagine_GetResult``
feedback topic    ``.../_action/feedback``          ``mirage/action/Imagine_FeedbackMessage``;
                  (``rt/ns/imagine/_action/...``)   reliable, volatile, keep last 10
status topic      ``.../_action/status``            ``action_msgs/msg/GoalStatusArray``;
                                                    reliable, transient local, keep last 1
================  ================================  ============================================

Services use the services QoS (reliable, volatile, keep last 10) and the request header of
:mod:`.typesupport`. Goal ids are 16-byte UUIDs (``unique_identifier_msgs/UUID``) chosen by the
client (random, version 4).

Semantics (rcl_action's state machine, rclpy's server and client):

* Goal states (:class:`GoalStatus`): a goal is ``ACCEPTED``, then ``EXECUTING`` when its
  execute callback starts; ``CANCELING`` after an accepted cancel request; terminal states
  ``SUCCEEDED`` (from EXECUTING/CANCELING), ``ABORTED`` (from EXECUTING/CANCELING),
  ``CANCELED`` (from CANCELING only). Any other transition raises ``RuntimeError``.
* The status topic carries every goal the server still remembers (active, or terminal for less
  than ``result_timeout_s``), in acceptance order, and is republished on every change.
* Cancel requests (``action_msgs/srv/CancelGoal``), as ``rcl_action_process_cancel_request``:
  goal id all zeros and stamp 0 cancels all active goals; id zero and stamp ``t`` cancels the
  active goals accepted at or before ``t``; a non-zero id and stamp 0 cancels that goal only
  (``ERROR_UNKNOWN_GOAL_ID`` if unknown, ``ERROR_GOAL_TERMINATED`` if already terminal); both
  set cancels that goal and those accepted at or before ``t``. Each candidate is offered to
  the server's cancel callback; refused ones are left out of ``goals_canceling``, and if every
  candidate was refused the return code is ``ERROR_REJECTED`` (as rclcpp does).
* Get-result requests are answered when the goal's execute callback has returned (at once for
  a finished goal; ``STATUS_UNKNOWN`` and a default result for an unknown or expired goal).

Threads: the goal, cancel and result requests are handled while the server's context spins
(the goal and cancel callbacks run in the spinning thread); each accepted goal's execute
callback runs in a worker thread of its own, so cancels, feedback and other callbacks keep
being served during a long goal. On the client, :meth:`ActionClient.send_goal`,
:meth:`ClientGoalHandle.get_result` and :meth:`ClientGoalHandle.cancel_goal` block on their own
service replies and work whether or not a thread spins the client's context; feedback
callbacks and :attr:`ClientGoalHandle.status` updates from the status topic happen only while
the client's context spins. Do not block in a callback waiting for a server that is served by
the same context's spin thread.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .qos import QOS_LATCHED, QOS_RELIABLE, QOS_SERVICES, QosProfile

if TYPE_CHECKING:
    from .node import DdsNode, ReplyHandle

__all__ = [
    "ActionClient",
    "ActionServer",
    "CancelResponse",
    "CancelReturnCode",
    "ClientGoalHandle",
    "GoalResponse",
    "GoalStatus",
    "ServerGoalHandle",
    "action_endpoint_names",
]

_log = logging.getLogger(__name__)

_CANCEL_SRV = "action_msgs/srv/CancelGoal"
_STATUS_ARRAY = "action_msgs/msg/GoalStatusArray"
_GOAL_STATUS = "action_msgs/msg/GoalStatus"
_GOAL_INFO = "action_msgs/msg/GoalInfo"
_UUID = "unique_identifier_msgs/msg/UUID"
_TIME = "builtin_interfaces/msg/Time"

FEEDBACK_QOS = QOS_RELIABLE.with_depth(10)
"""Feedback topic QoS (rclpy's ``QoSProfile(depth=10)``: reliable, volatile)."""
STATUS_QOS = QOS_LATCHED
"""Status topic QoS (``rmw_qos_profile_status_default``: reliable, transient local, depth 1)."""


class GoalStatus(enum.IntEnum):
    """``action_msgs/msg/GoalStatus`` status codes."""

    STATUS_UNKNOWN = 0
    STATUS_ACCEPTED = 1
    STATUS_EXECUTING = 2
    STATUS_CANCELING = 3
    STATUS_SUCCEEDED = 4
    STATUS_CANCELED = 5
    STATUS_ABORTED = 6

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED}
)


class CancelReturnCode(enum.IntEnum):
    """``action_msgs/srv/CancelGoal`` response return codes."""

    ERROR_NONE = 0
    ERROR_REJECTED = 1
    ERROR_UNKNOWN_GOAL_ID = 2
    ERROR_GOAL_TERMINATED = 3


class GoalResponse(enum.Enum):
    """What a goal callback may return (as rclpy's); ``True``/``False`` work too."""

    REJECT = 1
    ACCEPT = 2


class CancelResponse(enum.Enum):
    """What a cancel callback may return (as rclpy's); ``True``/``False`` work too."""

    REJECT = 1
    ACCEPT = 2


def _decision(
    callback: Callable[[Any], Any], arg: Any, accept: enum.Enum, reject: enum.Enum, what: str
) -> bool:
    """Run a goal/cancel callback: True to accept. An exception or an odd answer rejects
    (logged), so that the request is still answered."""
    try:
        value = callback(arg)
    except Exception:
        _log.exception("%s raised: rejecting", what)
        return False
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if value is accept:
        return True
    if value is reject:
        return False
    _log.warning("%s returned %r (expected a bool or %s): rejecting", what, value, type(accept))
    return False


# event -> {state it may be applied in: next state} (rcl_action/goal_state_machine.c)
_EXECUTE, _CANCEL_GOAL, _SUCCEED, _ABORT, _CANCELED = (
    "execute",
    "cancel_goal",
    "succeed",
    "abort",
    "canceled",
)
_TRANSITIONS: dict[str, dict[GoalStatus, GoalStatus]] = {
    _EXECUTE: {GoalStatus.STATUS_ACCEPTED: GoalStatus.STATUS_EXECUTING},
    _CANCEL_GOAL: {
        GoalStatus.STATUS_ACCEPTED: GoalStatus.STATUS_CANCELING,
        GoalStatus.STATUS_EXECUTING: GoalStatus.STATUS_CANCELING,
    },
    _SUCCEED: {
        GoalStatus.STATUS_EXECUTING: GoalStatus.STATUS_SUCCEEDED,
        GoalStatus.STATUS_CANCELING: GoalStatus.STATUS_SUCCEEDED,
    },
    _ABORT: {
        GoalStatus.STATUS_EXECUTING: GoalStatus.STATUS_ABORTED,
        GoalStatus.STATUS_CANCELING: GoalStatus.STATUS_ABORTED,
    },
    _CANCELED: {GoalStatus.STATUS_CANCELING: GoalStatus.STATUS_CANCELED},
}


def action_endpoint_names(fq_action_name: str) -> dict[str, str]:
    """ROS names of an action's services and topics (rcl_action's ``_action/`` suffixes):
    keys ``send_goal``, ``cancel_goal``, ``get_result``, ``feedback``, ``status``."""
    base = f"{fq_action_name.rstrip('/')}/_action/"
    return {k: base + k for k in ("send_goal", "cancel_goal", "get_result", "feedback", "status")}


def _check_action_type(node: DdsNode, action_type: str) -> None:
    parts = action_type.split("/")
    if len(parts) != 3 or parts[1] != "action" or not all(parts):
        raise TypeError(f"expected an action type 'pkg/action/X', got {action_type!r}")
    for suffix in (
        "_Goal",
        "_Result",
        "_Feedback",
        "_SendGoal_Request",
        "_SendGoal_Response",
        "_GetResult_Request",
        "_GetResult_Response",
        "_FeedbackMessage",
    ):
        node.context.types.msg_class(action_type + suffix)  # KeyError naming what is missing
    node.context.types.msg_class(f"{_CANCEL_SRV}_Request")
    node.context.types.msg_class(_STATUS_ARRAY)


def _uuid_bytes(goal_id: Any) -> bytes:
    """16 bytes of a ``UUID`` message, ``bytes`` or :class:`uuid.UUID`."""
    if isinstance(goal_id, uuid_mod.UUID):
        return goal_id.bytes
    if isinstance(goal_id, bytes | bytearray):
        raw = bytes(goal_id)
    else:
        raw = np.asarray(goal_id.uuid, dtype=np.uint8).tobytes()
    if len(raw) != 16:
        raise ValueError(f"a goal id has 16 bytes, got {len(raw)}")
    return raw


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class _Types:
    """Message classes and constructors of one action type."""

    def __init__(self, node: DdsNode, action_type: str):
        _check_action_type(node, action_type)
        self.action_type = action_type
        self.types = node.context.types
        t = action_type
        self.goal = f"{t}_Goal"
        self.result = f"{t}_Result"
        self.feedback = f"{t}_Feedback"
        self.send_goal = f"{t}_SendGoal"
        self.get_result = f"{t}_GetResult"
        self.feedback_message = f"{t}_FeedbackMessage"

    def new(self, ros_type: str, **fields: Any) -> Any:
        msg = self.types.default(ros_type)
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    def uuid_msg(self, raw: bytes) -> Any:
        return self.new(_UUID, uuid=np.frombuffer(raw, dtype=np.uint8).copy())

    def time_msg(self, t_ns: int) -> Any:
        return self.new(_TIME, sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)

    def goal_info(self, raw: bytes, stamp_ns: int) -> Any:
        return self.new(_GOAL_INFO, goal_id=self.uuid_msg(raw), stamp=self.time_msg(stamp_ns))

    def check(self, msg: Any, ros_type: str, what: str) -> None:
        if getattr(msg, "__msgtype__", None) != ros_type:
            raise TypeError(
                f"{what} must be a {ros_type}, got "
                f"{getattr(msg, '__msgtype__', type(msg).__name__)}"
            )


# ------------------------------------------------------------------------------------ server
class ServerGoalHandle:
    """An accepted goal on the server (rclpy's ``ServerGoalHandle``), given to the execute
    callback. Thread-safe.

    ``goal_id`` is the ``unique_identifier_msgs/UUID`` message, ``goal_uuid`` its 16 bytes,
    ``request`` the ``X_Goal`` message, ``stamp`` the acceptance time (``builtin_interfaces/
    Time``, wall clock). Once the server is destroyed the handle is inert: ``status`` is
    ``STATUS_UNKNOWN``, ``is_active`` False, state changes and feedback are ignored, and
    ``is_cancel_requested`` is True (rclpy's would say False) so that execute loops polling it
    stop.
    """

    def __init__(self, server: ActionServer, goal_uuid: bytes, request: Any, stamp_ns: int):
        self._server = server
        self.goal_uuid = goal_uuid
        self.goal_id = server._t.uuid_msg(goal_uuid)
        self.request = request
        self._stamp_ns = stamp_ns
        self.stamp = server._t.time_msg(stamp_ns)
        self._status = GoalStatus.STATUS_ACCEPTED
        self._result_response: Any = None  # X_GetResult_Response once execute returned
        self._waiting: list[ReplyHandle] = []  # get_result requests to answer then
        self._terminal_at: float | None = None  # monotonic time of the terminal state

    def __repr__(self) -> str:
        return f"ServerGoalHandle({uuid_mod.UUID(bytes=self.goal_uuid)}, {self.status.name})"

    @property
    def status(self) -> GoalStatus:
        """Current :class:`GoalStatus`."""
        with self._server._lock:
            return GoalStatus.STATUS_UNKNOWN if self._server._destroyed else self._status

    @property
    def is_active(self) -> bool:
        """ACCEPTED, EXECUTING or CANCELING (and the server exists)."""
        with self._server._lock:
            return not self._server._destroyed and not self._status.is_terminal

    @property
    def is_cancel_requested(self) -> bool:
        """True while CANCELING (and once the server was destroyed)."""
        with self._server._lock:
            return self._server._destroyed or self._status == GoalStatus.STATUS_CANCELING

    def publish_feedback(self, feedback: Any) -> None:
        """Publish ``feedback`` (an ``X_Feedback`` message) for this goal on the feedback topic
        (wrapped in ``X_FeedbackMessage`` with this goal id)."""
        server = self._server
        server._t.check(feedback, server._t.feedback, "feedback")
        msg = server._t.new(server._t.feedback_message, goal_id=self.goal_id, feedback=feedback)
        with server._lock:
            if not server._destroyed:
                server._feedback_pub.publish(msg)

    def succeed(self) -> None:
        """EXECUTING/CANCELING -> SUCCEEDED."""
        self._update(_SUCCEED)

    def abort(self) -> None:
        """EXECUTING/CANCELING -> ABORTED."""
        self._update(_ABORT)

    def canceled(self) -> None:
        """CANCELING -> CANCELED."""
        self._update(_CANCELED)

    def _update(self, event: str) -> None:
        """Apply a state-machine event and publish the status (RuntimeError if invalid)."""
        server = self._server
        with server._lock:
            if server._destroyed:
                return
            new = _TRANSITIONS[event].get(self._status)
            if new is None:
                raise RuntimeError(
                    f"goal {uuid_mod.UUID(bytes=self.goal_uuid)}: invalid transition "
                    f"'{event}' from {self._status.name}"
                )
            self._status = new
            if new.is_terminal:
                self._terminal_at = time.monotonic()
            server._publish_status_locked()


class ActionServer:
    """Serves action ``name`` of type ``action_type`` (``pkg/action/X``) on ``node``.

    * ``execute_callback(goal_handle) -> X_Result`` runs in a worker thread per goal. It sets
      the terminal state with ``goal_handle.succeed()`` / ``.abort()`` / ``.canceled()``; if it
      returns with the goal still active, the goal is aborted (rclpy: "Goal state not set,
      assuming aborted"). If it raises, the error is logged, the goal aborted (if still active)
      and the result is a default ``X_Result``; the server keeps serving. A returned value that
      is not an ``X_Result`` is logged and replaced by a default one.
    * ``goal_callback(goal) -> bool`` (or :class:`GoalResponse`) accepts or rejects a new goal
      (default: accept). A goal id already known is rejected.
    * ``cancel_callback(goal_handle) -> bool`` (or :class:`CancelResponse`) accepts or refuses
      a cancel request for one active goal (default: accept; NOTE rclpy's default refuses, the
      node API of this project accepts on both backends). Accepting moves the goal to
      CANCELING; the execute callback sees ``is_cancel_requested`` and ends it (``canceled()``,
      or ``succeed()``/``abort()``).
    * ``result_timeout_s``: how long a terminal goal's result is kept for get-result requests
      (and listed on the status topic); ``None`` keeps results forever. Goals expire on a timer
      of the node (checked every ``min(1 s, result_timeout_s / 10)``).

    The goal and cancel callbacks run in the thread that spins the node's context.
    """

    def __init__(
        self,
        node: DdsNode,
        action_type: str,
        name: str,
        execute_callback: Callable[[ServerGoalHandle], Any],
        goal_callback: Callable[[Any], Any] | None = None,
        cancel_callback: Callable[[ServerGoalHandle], Any] | None = None,
        result_timeout_s: float | None = 900.0,
        *,
        service_qos: QosProfile = QOS_SERVICES,
        feedback_qos: QosProfile = FEEDBACK_QOS,
        status_qos: QosProfile = STATUS_QOS,
    ):
        if not callable(execute_callback):
            raise TypeError("execute_callback must be callable")
        if result_timeout_s is not None and not result_timeout_s > 0:
            raise ValueError(f"result_timeout_s must be > 0 or None, got {result_timeout_s}")
        node.context._check_ok()
        self.node = node
        self.action_type = action_type
        self.action_name = node.resolve(name)
        self.execute_callback = execute_callback
        self.goal_callback = goal_callback
        self.cancel_callback = cancel_callback
        self.result_timeout_s = result_timeout_s
        self._t = _Types(node, action_type)
        self._lock = threading.RLock()  # goal table, goal states, status/feedback publishing
        self._destroyed = False
        self._goals: dict[bytes, ServerGoalHandle] = {}  # acceptance order
        names = action_endpoint_names(self.action_name)
        self._status_pub = self._feedback_pub = None
        self._goal_srv = self._cancel_srv = self._result_srv = self._expire_timer = None
        node.action_servers.append(self)
        try:
            self._status_pub = node.create_publisher(_STATUS_ARRAY, names["status"], status_qos)
            self._feedback_pub = node.create_publisher(
                self._t.feedback_message, names["feedback"], feedback_qos
            )
            self._goal_srv = node.create_service(
                self._t.send_goal, names["send_goal"], self._on_goal, service_qos, deferred=True
            )
            self._cancel_srv = node.create_service(
                _CANCEL_SRV, names["cancel_goal"], self._on_cancel, service_qos
            )
            self._result_srv = node.create_service(
                self._t.get_result,
                names["get_result"],
                self._on_get_result,
                service_qos,
                deferred=True,
            )
            if result_timeout_s is not None:
                period = max(0.01, min(1.0, result_timeout_s / 10))
                self._expire_timer = node.create_timer(period, self._expire)
        except BaseException:
            self.destroy()
            raise

    # -- inspection ----------------------------------------------------------------------------
    @property
    def goal_handles(self) -> list[ServerGoalHandle]:
        """The goals the server remembers (active, or terminal and not expired)."""
        with self._lock:
            return list(self._goals.values())

    def status_message(self) -> Any:
        """The current ``action_msgs/msg/GoalStatusArray`` (what the status topic carries)."""
        with self._lock:
            return self._status_message_locked()

    # -- lifetime ------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Remove the action's endpoints from the node (idempotent). Running execute callbacks
        are not stopped; their goal handles become inert (``is_cancel_requested`` turns True)
        and their results are not delivered."""
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
            for gh in self._goals.values():
                gh._waiting.clear()
        node = self.node
        if self._expire_timer is not None:
            node.destroy_timer(self._expire_timer)
        for srv in (self._goal_srv, self._cancel_srv, self._result_srv):
            if srv is not None:
                node.destroy_service(srv)
        for pub in (self._feedback_pub, self._status_pub):
            if pub is not None:
                node.destroy_publisher(pub)
        if self in node.action_servers:
            node.action_servers.remove(self)

    # -- status --------------------------------------------------------------------------------
    def _status_message_locked(self) -> Any:
        t = self._t
        return t.new(
            _STATUS_ARRAY,
            status_list=[
                t.new(
                    _GOAL_STATUS,
                    goal_info=t.goal_info(gh.goal_uuid, gh._stamp_ns),
                    status=int(gh._status),
                )
                for gh in self._goals.values()
            ],
        )

    def _publish_status_locked(self) -> None:
        if not self._destroyed:
            self._status_pub.publish(self._status_message_locked())

    def _expire(self) -> None:
        """Forget goals whose result is known and that are terminal for > result_timeout_s."""
        if self.result_timeout_s is None:
            return
        now = time.monotonic()
        with self._lock:
            expired = [
                k
                for k, gh in self._goals.items()
                if gh._result_response is not None
                and gh._terminal_at is not None
                and now - gh._terminal_at > self.result_timeout_s
            ]
            for k in expired:
                del self._goals[k]
            if expired:
                self._publish_status_locked()

    # -- requests (spin thread) ----------------------------------------------------------------
    def _on_goal(self, request: Any, response: Any, reply: ReplyHandle) -> None:
        raw = _uuid_bytes(request.goal_id)
        self._expire()
        with self._lock:
            known = raw in self._goals
        accepted = False
        if known:
            _log.warning(
                "action %s: goal id %s already in use: rejected",
                self.action_name,
                uuid_mod.UUID(bytes=raw),
            )
        elif self.goal_callback is None:
            accepted = True
        else:
            accepted = _decision(
                self.goal_callback,
                request.goal,
                GoalResponse.ACCEPT,
                GoalResponse.REJECT,
                f"goal callback of {self.action_name}",
            )
        gh = None
        if accepted:
            stamp_ns = time.time_ns()
            gh = ServerGoalHandle(self, raw, request.goal, stamp_ns)
            with self._lock:
                if self._destroyed:
                    return
                self._goals[raw] = gh
                self._publish_status_locked()
            response.stamp = gh.stamp
        response.accepted = accepted
        reply.send(response)
        if gh is not None:
            threading.Thread(
                target=self._run_goal,
                args=(gh,),
                name=f"action{self.action_name}:{raw.hex()[:8]}",
                daemon=True,
            ).start()

    def _on_cancel(self, request: Any, response: Any) -> Any:
        info = request.goal_info
        raw = _uuid_bytes(info.goal_id)
        req_ns = _stamp_ns(info.stamp)
        zero_id = raw == bytes(16)
        self._expire()
        single = not zero_id and req_ns == 0
        with self._lock:
            goals = list(self._goals.values())
        if single:
            match = [gh for gh in goals if gh.goal_uuid == raw]
            if not match:
                response.return_code = int(CancelReturnCode.ERROR_UNKNOWN_GOAL_ID)
                return response
            candidates = [gh for gh in match if gh.is_active]
            if not candidates:
                response.return_code = int(CancelReturnCode.ERROR_GOAL_TERMINATED)
                return response
        else:
            limit = 2**63 - 1 if zero_id and req_ns == 0 else req_ns
            candidates = [
                gh
                for gh in goals
                if gh.is_active and (gh._stamp_ns <= limit or gh.goal_uuid == raw)
            ]
        canceling = []
        terminated_meanwhile = False
        for gh in candidates:
            ok = self.cancel_callback is None or _decision(
                self.cancel_callback,
                gh,
                CancelResponse.ACCEPT,
                CancelResponse.REJECT,
                f"cancel callback of {self.action_name}",
            )
            if not ok:
                continue
            with self._lock:
                if self._destroyed:
                    break
                if gh._status in _TRANSITIONS[_CANCEL_GOAL]:
                    gh._update(_CANCEL_GOAL)
                    canceling.append(gh)
                else:  # it reached a terminal state while we asked
                    terminated_meanwhile = True
        response.goals_canceling = [self._t.goal_info(g.goal_uuid, g._stamp_ns) for g in canceling]
        if candidates and not canceling:
            response.return_code = int(
                CancelReturnCode.ERROR_GOAL_TERMINATED
                if single and terminated_meanwhile
                else CancelReturnCode.ERROR_REJECTED
            )
        else:
            response.return_code = int(CancelReturnCode.ERROR_NONE)
        return response

    def _on_get_result(self, request: Any, response: Any, reply: ReplyHandle) -> Any:
        raw = _uuid_bytes(request.goal_id)
        self._expire()
        with self._lock:
            gh = self._goals.get(raw)
            if gh is not None and gh._result_response is None:
                gh._waiting.append(reply)  # answered by _run_goal
                return None
        if gh is None:
            response.status = int(GoalStatus.STATUS_UNKNOWN)
            return response
        return gh._result_response

    # -- execution (worker thread per goal) ----------------------------------------------------
    def _run_goal(self, gh: ServerGoalHandle) -> None:
        result = None
        try:
            with self._lock:
                # A cancel may have come before execution started: stay CANCELING (rclpy).
                if gh._status == GoalStatus.STATUS_ACCEPTED:
                    gh._update(_EXECUTE)
            result = self.execute_callback(gh)
        except Exception:
            _log.exception(
                "action %s: execute callback raised for goal %s (goal aborted)",
                self.action_name,
                uuid_mod.UUID(bytes=gh.goal_uuid),
            )
            result = None
        else:
            if getattr(result, "__msgtype__", None) != self._t.result:
                _log.error(
                    "action %s: execute callback returned %r, not a %s: sending a default result",
                    self.action_name,
                    result,
                    self._t.result,
                )
                result = None
        if result is None:
            result = self._t.types.default(self._t.result)
        with self._lock:
            if gh.is_active:
                _log.warning(
                    "action %s: goal %s state not set by the execute callback, assuming aborted",
                    self.action_name,
                    uuid_mod.UUID(bytes=gh.goal_uuid),
                )
                gh._update(_ABORT)
            status = gh._status
            response = self._t.new(
                self._t.get_result + "_Response", status=int(status), result=result
            )
            gh._result_response = response
            waiting, gh._waiting = gh._waiting, []
            if gh._terminal_at is None:  # destroyed server: never expires, never read
                gh._terminal_at = time.monotonic()
        for reply in waiting:
            try:
                reply.send(response)
            except Exception:
                _log.exception("action %s: sending a result failed", self.action_name)


# ------------------------------------------------------------------------------------ client
class ClientGoalHandle:
    """A goal sent by an :class:`ActionClient` (rclpy's ``ClientGoalHandle``, blocking calls).

    ``accepted``; ``goal_id`` (``unique_identifier_msgs/UUID`` message) and ``goal_uuid`` (its
    16 bytes); ``stamp`` (acceptance time from the server); ``status`` (:class:`GoalStatus`:
    ``ACCEPTED`` or ``UNKNOWN`` (rejected) at first, then updated from the status topic while
    the client's context spins, and by :meth:`get_result`).
    """

    def __init__(self, client: ActionClient, goal_uuid: bytes, accepted: bool, stamp: Any):
        self._client = client
        self.goal_uuid = goal_uuid
        self.goal_id = client._t.uuid_msg(goal_uuid)
        self.accepted = accepted
        self.stamp = stamp
        self._status = GoalStatus.STATUS_ACCEPTED if accepted else GoalStatus.STATUS_UNKNOWN
        self._result: tuple[GoalStatus, Any] | None = None

    def __repr__(self) -> str:
        return f"ClientGoalHandle({uuid_mod.UUID(bytes=self.goal_uuid)}, {self.status.name})"

    @property
    def status(self) -> GoalStatus:
        return self._status

    def _set_status(self, status: int) -> None:
        try:
            status = GoalStatus(status)
        except ValueError:
            return
        if not self._status.is_terminal:  # a late status message never un-terminates a goal
            self._status = status

    def get_result(self, timeout_sec: float | None = None) -> tuple[GoalStatus, Any]:
        """Block until the goal's result: ``(status, X_Result message)``. ``TimeoutError`` after
        ``timeout_sec`` (``None``: wait as long as the goal takes); ``RuntimeError`` for a
        rejected goal. Repeated calls return the first result. Needs no spinning."""
        if not self.accepted:
            raise RuntimeError("the goal was rejected: there is no result")
        if self._result is None:
            req = self._client._t.new(self._client._t.get_result + "_Request", goal_id=self.goal_id)
            resp = self._client._result_client.call(req, timeout_sec)
            try:
                status = GoalStatus(int(resp.status))
            except ValueError:
                _log.warning(
                    "action %s: result with unknown status %s",
                    self._client.action_name,
                    resp.status,
                )
                status = GoalStatus.STATUS_UNKNOWN
            self._result = (status, resp.result)
            if status != GoalStatus.STATUS_UNKNOWN:
                self._set_status(status)
        return self._result

    def cancel_goal(self, timeout_sec: float | None = 5.0) -> Any:
        """Ask the server to cancel this goal; returns the ``action_msgs/srv/CancelGoal_Response``
        (``return_code`` :class:`CancelReturnCode`, ``goals_canceling``). Needs no spinning."""
        return self._client._cancel(self.goal_uuid, 0, timeout_sec)


class ActionClient:
    """A client of action ``name`` of type ``action_type`` (``pkg/action/X``) on ``node``.

    ``wait_for_server`` first (requests sent before the server matched are lost, as in ROS 2),
    then :meth:`send_goal`. See the module docstring for which calls need spinning. The client
    remembers each accepted goal (its feedback callback, its handle for status updates) until
    the status topic reports it terminal, which is seen while the context spins.
    """

    def __init__(
        self,
        node: DdsNode,
        action_type: str,
        name: str,
        *,
        service_qos: QosProfile = QOS_SERVICES,
        feedback_qos: QosProfile = FEEDBACK_QOS,
        status_qos: QosProfile = STATUS_QOS,
    ):
        node.context._check_ok()
        self.node = node
        self.action_type = action_type
        self.action_name = node.resolve(name)
        self._t = _Types(node, action_type)
        self._lock = threading.Lock()
        self._feedback_callbacks: dict[bytes, Callable[[Any], None]] = {}
        self._handles: dict[bytes, ClientGoalHandle] = {}
        self._destroyed = False
        names = action_endpoint_names(self.action_name)
        self._goal_client = node.create_client(self._t.send_goal, names["send_goal"], service_qos)
        self._cancel_client = node.create_client(_CANCEL_SRV, names["cancel_goal"], service_qos)
        self._result_client = node.create_client(
            self._t.get_result, names["get_result"], service_qos
        )
        # feedback before status: a spin dispatches a goal's last feedback before its end
        self._feedback_sub = node.create_subscription(
            self._t.feedback_message, names["feedback"], self._on_feedback, feedback_qos
        )
        self._status_sub = node.create_subscription(
            _STATUS_ARRAY, names["status"], self._on_status, status_qos
        )
        node.action_clients.append(self)

    def goal_class(self) -> type:
        """The rosbags class of ``X_Goal``."""
        return self._t.types.msg_class(self._t.goal)

    def default_goal(self) -> Any:
        """An ``X_Goal`` with ROS 2 default values."""
        return self._t.types.default(self._t.goal)

    def server_is_ready(self) -> bool:
        """True when the three services are ready and the feedback and status topics have a
        publisher (as ``rcl_action_server_is_available``)."""
        return (
            self._goal_client.service_is_ready()
            and self._cancel_client.service_is_ready()
            and self._result_client.service_is_ready()
            and self._feedback_sub.get_publisher_count() > 0
            and self._status_sub.get_publisher_count() > 0
        )

    def wait_for_server(self, timeout_sec: float = 5.0) -> bool:
        """Block until :meth:`server_is_ready`; False on timeout."""
        deadline = time.monotonic() + timeout_sec
        while not self.server_is_ready():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def send_goal(
        self,
        goal: Any,
        feedback_callback: Callable[[Any], None] | None = None,
        timeout_sec: float | None = 5.0,
        goal_uuid: bytes | None = None,
    ) -> ClientGoalHandle:
        """Send ``goal`` (an ``X_Goal``) and block until the server accepts or rejects it.

        ``feedback_callback(feedback_message)`` gets each ``X_FeedbackMessage`` of this goal
        (fields ``goal_id`` and ``feedback``, as in rclpy) while the client's context spins.
        ``goal_uuid``: 16 bytes to use as goal id (default: a random UUID). ``TimeoutError``
        if no answer within ``timeout_sec``."""
        self._t.check(goal, self._t.goal, "goal")
        raw = uuid_mod.uuid4().bytes if goal_uuid is None else _uuid_bytes(goal_uuid)
        if feedback_callback is not None:
            with self._lock:
                self._feedback_callbacks[raw] = feedback_callback
        req = self._t.new(self._t.send_goal + "_Request", goal_id=self._t.uuid_msg(raw), goal=goal)
        try:
            resp = self._goal_client.call(req, timeout_sec)
        except BaseException:
            with self._lock:
                self._feedback_callbacks.pop(raw, None)
            raise
        handle = ClientGoalHandle(self, raw, bool(resp.accepted), resp.stamp)
        with self._lock:
            if handle.accepted:
                self._handles[raw] = handle
            else:
                self._feedback_callbacks.pop(raw, None)
        return handle

    def cancel_all_goals(self, timeout_sec: float | None = 5.0) -> Any:
        """Cancel every active goal of the server (goal id zeros, stamp 0); returns the
        ``CancelGoal_Response``."""
        return self._cancel(bytes(16), 0, timeout_sec)

    def cancel_goals_before(self, stamp: Any, timeout_sec: float | None = 5.0) -> Any:
        """Cancel the server's active goals accepted at or before ``stamp``
        (``builtin_interfaces/Time``); returns the ``CancelGoal_Response``."""
        return self._cancel(bytes(16), _stamp_ns(stamp), timeout_sec)

    def _cancel(self, raw: bytes, stamp_ns: int, timeout_sec: float | None) -> Any:
        req = self._t.new(f"{_CANCEL_SRV}_Request", goal_info=self._t.goal_info(raw, stamp_ns))
        return self._cancel_client.call(req, timeout_sec)

    def destroy(self) -> None:
        """Remove the action client's endpoints from the node (idempotent; blocked calls raise
        ``RuntimeError``)."""
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
            self._feedback_callbacks.clear()
            self._handles.clear()
        node = self.node
        for cli in (self._goal_client, self._cancel_client, self._result_client):
            node.destroy_client(cli)
        node.destroy_subscription(self._feedback_sub)
        node.destroy_subscription(self._status_sub)
        if self in node.action_clients:
            node.action_clients.remove(self)

    # -- spin-thread callbacks -----------------------------------------------------------------
    def _on_feedback(self, msg: Any) -> None:
        with self._lock:
            cb = self._feedback_callbacks.get(_uuid_bytes(msg.goal_id))
        if cb is not None:
            cb(msg)

    def _on_status(self, msg: Any) -> None:
        for st in msg.status_list:
            raw = _uuid_bytes(st.goal_info.goal_id)
            with self._lock:
                handle = self._handles.get(raw)
            if handle is None:
                continue
            handle._set_status(int(st.status))
            if handle.status.is_terminal:
                # The server published the goal's feedback before its terminal status, and the
                # feedback subscription is dispatched first in a spin: forget the goal.
                with self._lock:
                    self._handles.pop(raw, None)
                    self._feedback_callbacks.pop(raw, None)
