"""ROS 2 over Cyclone DDS without rclpy.

A small, real DDS transport speaking rmw_cyclonedds_cpp's wire protocol, so the project's
nodes run on machines without ROS 2 and a ROS 2 Humble/Jazzy machine on the same network sees
their topics. Message types come from one source, a ``rosbags`` type store (standard ROS 2
messages plus project types registered from ``.msg``/``.srv`` text); sample bytes are rosbags'
CDR, identical to ROS 2's.

Modules: :mod:`.config` (loopback XML, domain id), :mod:`.qos` (profiles by purpose),
:mod:`.names` (ROS names <-> DDS names), :mod:`.typesupport` (DDS types from rosbags
definitions, CDR payloads), :mod:`.node` (context, nodes, pub/sub, services with immediate or
deferred replies), :mod:`.timer` (periodic timers run by the spin loop), :mod:`.action`
(action servers and clients, rcl_action's protocol), :mod:`.discovery` (``ros_discovery_info``),
:mod:`.bench_latency` (``python -m``).

Conventions in one place: names ``rt/`` (topics), ``rq/<name>Request`` / ``rr/<name>Reply``
(services), ``<action>/_action/{send_goal,cancel_goal,get_result,feedback,status}``
(actions); types ``pkg::msg::dds_::T_`` / ``pkg::srv::dds_::X_Request_`` /
``pkg::action::dds_::X_SendGoal_Request_``. Subscription callbacks, service handlers, timer
callbacks and action goal/cancel callbacks run in the thread that spins the context; action
execute callbacks in a worker thread per goal; ``Client.call`` and the blocking action client
calls need no spinning.
"""

from .action import (
    ActionClient,
    ActionServer,
    CancelResponse,
    CancelReturnCode,
    ClientGoalHandle,
    GoalResponse,
    GoalStatus,
    ServerGoalHandle,
)
from .config import loopback_config_xml, resolve_domain_id, write_loopback_config
from .node import (
    Client,
    DdsContext,
    DdsNode,
    Publisher,
    ReplyHandle,
    Service,
    Subscription,
)
from .qos import (
    QOS_LATCHED,
    QOS_RELIABLE,
    QOS_SENSOR_DATA,
    QOS_SERVICES,
    Durability,
    QosProfile,
    Reliability,
)
from .timer import Timer
from .typesupport import TypeSupport, register_msg, register_srv, typestore_with

__all__ = [
    "QOS_LATCHED",
    "QOS_RELIABLE",
    "QOS_SENSOR_DATA",
    "QOS_SERVICES",
    "ActionClient",
    "ActionServer",
    "CancelResponse",
    "CancelReturnCode",
    "Client",
    "ClientGoalHandle",
    "DdsContext",
    "DdsNode",
    "Durability",
    "GoalResponse",
    "GoalStatus",
    "Publisher",
    "QosProfile",
    "Reliability",
    "ReplyHandle",
    "ServerGoalHandle",
    "Service",
    "Subscription",
    "Timer",
    "TypeSupport",
    "loopback_config_xml",
    "register_msg",
    "register_srv",
    "resolve_domain_id",
    "typestore_with",
    "write_loopback_config",
]
