"""ROS 2 over Cyclone DDS without rclpy.

A small, real DDS transport speaking rmw_cyclonedds_cpp's wire protocol, so the project's
nodes run on machines without ROS 2 and a ROS 2 Humble/Jazzy machine on the same network sees
their topics. Message types come from one source, a ``rosbags`` type store (standard ROS 2
messages plus project types registered from ``.msg``/``.srv`` text); sample bytes are rosbags'
CDR, identical to ROS 2's.

Modules: :mod:`.config` (loopback XML, domain id), :mod:`.qos` (profiles by purpose),
:mod:`.names` (ROS names <-> DDS names), :mod:`.typesupport` (DDS types from rosbags
definitions, CDR payloads), :mod:`.node` (context, nodes, pub/sub, services),
:mod:`.discovery` (``ros_discovery_info``), :mod:`.bench_latency` (``python -m``).
"""

from .config import loopback_config_xml, resolve_domain_id, write_loopback_config
from .node import Client, DdsContext, DdsNode, Publisher, Service, Subscription
from .qos import (
    QOS_LATCHED,
    QOS_RELIABLE,
    QOS_SENSOR_DATA,
    QOS_SERVICES,
    Durability,
    QosProfile,
    Reliability,
)
from .typesupport import TypeSupport, register_msg, register_srv, typestore_with

__all__ = [
    "QOS_LATCHED",
    "QOS_RELIABLE",
    "QOS_SENSOR_DATA",
    "QOS_SERVICES",
    "Client",
    "DdsContext",
    "DdsNode",
    "Durability",
    "Publisher",
    "QosProfile",
    "Reliability",
    "Service",
    "Subscription",
    "TypeSupport",
    "loopback_config_xml",
    "register_msg",
    "register_srv",
    "resolve_domain_id",
    "typestore_with",
    "write_loopback_config",
]
