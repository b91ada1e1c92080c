"""ROS 2 type definitions in a ``rosbags`` type store: parsing, registration, default values.

The one place that turns ``.msg`` / ``.srv`` text into registered types, and gives messages
their ROS 2 default values. rosbags classes have no zero-argument constructor; rclpy's do.
Used by :mod:`mirage_ros.interfaces` (the project's interfaces) and :mod:`mirage_ros.messages`
(the bag message factory) to write and read rosbag2 files. Needs only ``rosbags``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.serde.utils import ndtype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import normalize_fieldname
from rosbags.typesys.store import Typestore

__all__ = [
    "EMPTY_FIELD",
    "default_message",
    "default_store",
    "default_value",
    "parse_definition",
    "register_msg",
    "register_srv",
    "split_sections",
    "typestore_with",
]

#: rosidl's placeholder member of a struct without fields.
EMPTY_FIELD = ("structure_needs_at_least_one_member", (Nodetype.BASE, ("uint8", 0)))


def default_store() -> Stores:
    """The rosbags store matching ``$ROS_DISTRO`` (e.g. ``jazzy``), else ROS 2 Humble.

    Only ``rmw_dds_common/msg/Gid`` (24 bytes in Humble, 16 in Jazzy) differs between the two for
    the types this project uses; pick the peers' distribution when it matters.
    """
    distro = os.environ.get("ROS_DISTRO", "").strip().lower()
    try:
        return Stores(f"ros2_{distro}") if distro else Stores.ROS2_HUMBLE
    except ValueError:
        return Stores.ROS2_HUMBLE


def parse_definition(text: str, name: str) -> dict[str, Any]:
    """Parse ``.msg`` text as type ``name`` (any ``pkg/<kind>/T``).

    Unqualified field types refer to ``pkg/msg/<T>`` as in rosidl; a definition without fields
    gets rosidl's placeholder member (:data:`EMPTY_FIELD`).
    """
    if name.count("/") != 2:
        raise ValueError(f"expected a type name 'pkg/<kind>/T', got {name!r}")
    pkg, _kind, short = name.split("/")
    parsed = get_types_from_msg(text, f"{pkg}/msg/{short}")
    (consts, fields) = next(iter(parsed.values()))
    return {name: (consts, fields or [EMPTY_FIELD])}


def split_sections(text: str, n: int, what: str = "definition") -> list[str]:
    """Split ``.srv`` (n = 2) or ``.action`` (n = 3) text at its ``---`` lines."""
    parts: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip() == "---":
            parts.append([])
        else:
            parts[-1].append(line)
    if len(parts) != n:
        raise ValueError(f"{what}: expected {n - 1} '---' line(s), found {len(parts) - 1}")
    return ["\n".join(p) + "\n" for p in parts]


def register_msg(ts: Typestore, name: str, text: str) -> None:
    """Register ``.msg`` text as ``name`` (``pkg/msg/T``) in ``ts``."""
    ts.register(parse_definition(text, name))


def register_srv(ts: Typestore, name: str, text: str) -> None:
    """Register ``.srv`` text as ``pkg/srv/X_Request`` and ``pkg/srv/X_Response``."""
    if name.count("/") != 2 or name.split("/")[1] != "srv":
        raise ValueError(f"expected a service name 'pkg/srv/X', got {name!r}")
    req, rep = split_sections(text, 2, name)
    ts.register({**parse_definition(req, f"{name}_Request"),
                 **parse_definition(rep, f"{name}_Response")})


def typestore_with(
    store: Stores | None = None,
    msgs: dict[str, str] | None = None,
    srvs: dict[str, str] | None = None,
) -> Typestore:
    """A type store of a ROS distribution (default :func:`default_store`) plus custom types.

    ``msgs`` maps ``pkg/msg/T`` to ``.msg`` text; ``srvs`` maps ``pkg/srv/X`` to ``.srv`` text.
    """
    ts = get_typestore(store or default_store())
    for name, text in (msgs or {}).items():
        register_msg(ts, name, text)
    for name, text in (srvs or {}).items():
        register_srv(ts, name, text)
    return ts


def default_value(ts: Typestore, desc: Any) -> Any:
    """ROS 2 default of one field description: 0, ``""``, False, zero arrays, empty sequences,
    default nested messages (numpy dtypes as rosbags uses them: ``byte`` is int8)."""
    kind, arg = desc
    if kind == Nodetype.BASE:
        base = arg[0]
        return "" if base in ("string", "wstring") else (False if base == "bool" else 0)
    if kind == Nodetype.NAME:
        return default_message(ts, arg)
    sub, n = arg
    length = n if kind == Nodetype.ARRAY else 0
    if sub[0] == Nodetype.BASE and sub[1][0] not in ("string", "wstring"):
        return np.zeros(length, dtype=getattr(np, ndtype(sub[1][0])))
    return [default_value(ts, sub) for _ in range(length)]


def default_message(ts: Typestore, ros_type: str, **fields: Any) -> Any:
    """A message of ``ros_type`` with ``fields`` set and ROS 2 defaults for the rest.

    Raises:
        KeyError: unknown type.
        ValueError: a field the type does not have.
    """
    cls = ts.types[ros_type]
    defs = ts.fielddefs[ros_type][1]
    names = [normalize_fieldname(n) for n, _ in defs]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"{ros_type} has no field(s) {unknown}; it has {names}")
    return cls(**{
        n: fields[n] if n in fields else default_value(ts, d)
        for n, (_, d) in zip(names, defs, strict=True)
    })
