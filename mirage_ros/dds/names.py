"""ROS 2 names and their DDS spellings, as rmw_cyclonedds_cpp writes them.

* Node names are ``[A-Za-z_][A-Za-z0-9_]*``; namespaces are absolute (``/`` or ``/a/b``).
* A topic or service name is resolved against the node: ``/x`` is absolute, ``~/x`` is
  ``<namespace>/<node>/x``, anything else is ``<namespace>/x``.
* Topic ``/foo/bar`` is DDS topic ``rt/foo/bar``; service ``/s`` uses the request topic
  ``rq/sRequest`` and the reply topic ``rr/sReply``.
* Type ``pkg/msg/T`` is DDS type ``pkg::msg::dds_::T_`` (``pkg/srv/X_Request`` likewise gives
  ``pkg::srv::dds_::X_Request_``).
"""

from __future__ import annotations

import re

__all__ = [
    "dds_type_name",
    "resolve_name",
    "service_reply_topic",
    "service_request_topic",
    "topic_dds_name",
    "validate_namespace",
    "validate_node_name",
]

_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_node_name(name: str) -> str:
    """Return ``name`` if it is a valid ROS 2 node name, else raise ``ValueError``."""
    if not _NODE_NAME.match(name):
        raise ValueError(f"invalid node name {name!r}: expected [A-Za-z_][A-Za-z0-9_]*")
    return name


def validate_namespace(namespace: str) -> str:
    """Normalise a namespace to absolute form without a trailing slash (``""`` -> ``"/"``)."""
    ns = "/" + namespace.strip("/")
    if ns != "/":
        for token in ns[1:].split("/"):
            if not _TOKEN.match(token):
                raise ValueError(f"invalid namespace {namespace!r}: bad token {token!r}")
    return ns


def resolve_name(name: str, namespace: str = "/", node_name: str | None = None) -> str:
    """Fully qualified ROS name of a topic or service ``name`` seen from a node.

    ``resolve_name("image", "/cam")`` is ``"/cam/image"``; ``resolve_name("/tf", "/cam")`` is
    ``"/tf"``; ``resolve_name("~/state", "/cam", "driver")`` is ``"/cam/driver/state"``.
    """
    if not name:
        raise ValueError("empty topic or service name")
    ns = validate_namespace(namespace)
    if name.startswith("/"):
        fq = name
    elif name == "~" or name.startswith("~/"):
        if node_name is None:
            raise ValueError(f"private name {name!r} needs a node name")
        base = f"{ns.rstrip('/')}/{node_name}"
        fq = base + name[1:]
    else:
        fq = f"{ns.rstrip('/')}/{name}"
    fq = fq.rstrip("/") or "/"
    for token in fq[1:].split("/"):
        if not _TOKEN.match(token):
            raise ValueError(f"invalid name {name!r} (resolved {fq!r}): bad token {token!r}")
    return fq


def topic_dds_name(fq_name: str) -> str:
    """DDS topic of a fully qualified ROS topic: ``/foo/bar`` -> ``rt/foo/bar``."""
    if not fq_name.startswith("/"):
        raise ValueError(f"expected a fully qualified name (leading '/'), got {fq_name!r}")
    return "rt" + fq_name


def service_request_topic(fq_name: str) -> str:
    """DDS request topic of a fully qualified service: ``/s`` -> ``rq/sRequest``."""
    return "rq" + topic_dds_name(fq_name)[2:] + "Request"


def service_reply_topic(fq_name: str) -> str:
    """DDS reply topic of a fully qualified service: ``/s`` -> ``rr/sReply``."""
    return "rr" + topic_dds_name(fq_name)[2:] + "Reply"


def dds_type_name(ros_type: str) -> str:
    """``pkg/msg/T`` -> ``pkg::msg::dds_::T_`` (also ``pkg/srv/...`` and ``pkg/action/...``)."""
    parts = ros_type.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"expected a ROS 2 type name 'pkg/msg/T', got {ros_type!r}")
    pkg, kind, name = parts
    return f"{pkg}::{kind}::dds_::{name}_"
