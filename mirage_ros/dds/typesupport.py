"""ROS 2 message types on DDS, from one source: a ``rosbags`` type store.

Wire conventions (rmw_cyclonedds_cpp, ROS 2 Humble/Jazzy):

* A sample is the 4-byte encapsulation header ``00 01 00 00`` (plain CDR = XCDR1, little
  endian) followed by the CDR body exactly as ROS 2 serialises it, which is what
  ``Typestore.serialize_cdr`` produces. Cyclone writers zero-pad the sample to a multiple of 4
  bytes; so do we (readers ignore up to 3 trailing bytes).
* Service samples put a 16-byte request header ``{uint64 guid; int64 seq}`` between the
  encapsulation and the body. The header is 8-aligned and 16 bytes long, so the body's CDR
  alignment is the same as without it.
* The DDS type of ``pkg/msg/T`` is a *final* struct named ``pkg::msg::dds_::T_`` with ROS 2's
  field order; ``char`` is ``uint8``, ``byte`` is ``octet``, ``T[N]`` an array, ``T[]`` and
  ``T[<=N]`` sequences, ``string<=N`` a bounded string. A struct without fields gets ROS 2's
  ``uint8 structure_needs_at_least_one_member``.

Design: payload bytes come from rosbags (fast, numpy-backed, byte-identical to ROS 2). The
cyclonedds ``IdlStruct`` built here from the same definition is still needed: its name is what
ROS 2 peers match on, Python cyclonedds requires XTypes type information for every topic (and
libddsc validates, "normalises", every written and received sample against that type, so a
payload that does not fit the declared type is refused at ``write``). :func:`to_idl` converts a
rosbags message into an instance of that struct, whose ``serialize()`` must equal rosbags'
bytes; the tests pin this for several types. Sequences of ``uint8``/``byte``/``char`` use the
library's raw-bytes machine (``BytesMachine``) instead of one Python int per byte: same wire
bytes, ~100x faster.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from cyclonedds.idl import IdlStruct, make_idl_struct
from cyclonedds.idl import types as idl_types
from cyclonedds.idl._machinery import BytesMachine, PlainCdrV2SequenceOfPrimitiveMachine
from rosbags.interfaces import Nodetype
from rosbags.typesys.base import normalize_fieldname
from rosbags.typesys.store import Typestore

from mirage_ros.rosbags_types import (
    default_message,
    default_store,
    register_msg,
    register_srv,
    typestore_with,
)

from .names import dds_type_name

__all__ = [
    "CDR_LE_HEADER",
    "REQUEST_HEADER",
    "TypeSupport",
    "default_store",
    "register_msg",
    "register_srv",
    "typestore_with",
]

CDR_LE_HEADER = b"\x00\x01\x00\x00"
"""Encapsulation of every sample we write: plain CDR (XCDR1), little endian, no options."""

REQUEST_HEADER = struct.Struct("<Qq")
"""rmw_cyclonedds' service request header ``{uint64 guid; int64 seq}`` (little endian)."""

_BASE_TYPES: dict[str, Any] = {
    "bool": bool,
    "byte": idl_types.byte,
    "char": idl_types.uint8,
    "int8": idl_types.int8,
    "uint8": idl_types.uint8,
    "int16": idl_types.int16,
    "uint16": idl_types.uint16,
    "int32": idl_types.int32,
    "uint32": idl_types.uint32,
    "int64": idl_types.int64,
    "uint64": idl_types.uint64,
    "float32": idl_types.float32,
    "float64": idl_types.float64,
}
_BYTE_LIKE = {"uint8", "byte", "char"}


def _use_bytes_machine(cls: type[IdlStruct]) -> None:
    """Swap the plain-CDR serialiser of every byte sequence member for ``BytesMachine``.

    The declared type (and its XTypes information) still says ``sequence<uint8>``; only how
    Python produces the bytes changes: ``uint32 length`` + raw bytes, identical on the wire.
    """
    idl = cls.__idl__
    idl.populate()
    machines = idl.v1_machine.members_machines
    for member, machine in list(machines.items()):
        # code "B": uint8 and byte (octet); int8 ("b") stays a list of ints.
        if isinstance(machine, PlainCdrV2SequenceOfPrimitiveMachine) and machine.code == "B":
            machines[member] = BytesMachine(bound=machine.max_length)


class TypeSupport:
    """Per-type-store cache of DDS types and the CDR encode/decode of rosbags messages.

    Messages are rosbags dataclass instances (rclpy field names; arrays are numpy).
    """

    def __init__(self, typestore: Typestore):
        self.typestore = typestore
        self._idl: dict[tuple[str, bool], type[IdlStruct]] = {}

    # -- message classes ---------------------------------------------------------------------
    def msg_class(self, ros_type: str) -> type:
        """The rosbags class of ``ros_type`` (raises ``KeyError`` listing what is known)."""
        try:
            return self.typestore.types[ros_type]
        except KeyError:
            raise KeyError(
                f"unknown ROS type {ros_type!r}: register it (register_msg/register_srv) first"
            ) from None

    def fields(self, ros_type: str) -> list[tuple[str, Any]]:
        """``[(ros_field_name, rosbags_field_desc), ...]`` in wire order."""
        self.msg_class(ros_type)
        return list(self.typestore.fielddefs[ros_type][1])

    def default(self, ros_type: str) -> Any:
        """A rosbags message with ROS 2 default values (zeros, ``""``, empty sequences)."""
        self.msg_class(ros_type)
        return default_message(self.typestore, ros_type)

    # -- DDS types ---------------------------------------------------------------------------
    def idl_class(self, ros_type: str, request_header: bool = False) -> type[IdlStruct]:
        """The cyclonedds struct declaring ``ros_type`` on DDS (``pkg::msg::dds_::T_``).

        With ``request_header`` the struct starts with the service header fields
        ``_rmw_guid: uint64, _rmw_seq: int64`` (for ``rq/``/``rr/`` topics); same type name.
        """
        key = (ros_type, request_header)
        if key not in self._idl:
            annotations: dict[str, Any] = {}
            if request_header:
                annotations["_rmw_guid"] = idl_types.uint64
                annotations["_rmw_seq"] = idl_types.int64
            for name, desc in self.fields(ros_type):
                annotations[normalize_fieldname(name)] = self._idl_type(desc)
            suffix = "__with_request_header" if request_header else ""
            cls = make_idl_struct(
                ros_type.replace("/", "__") + "_" + suffix,
                dds_type_name(ros_type),
                annotations,
            )
            _use_bytes_machine(cls)
            self._idl[key] = cls
        return self._idl[key]

    def _idl_type(self, desc: Any) -> Any:
        kind, arg = desc
        if kind == Nodetype.BASE:
            base, bound = arg
            if base == "string":
                return idl_types.bounded_str[bound] if bound else str
            if base not in _BASE_TYPES:
                raise ValueError(f"ROS base type {base!r} has no mapping to Python cyclonedds")
            return _BASE_TYPES[base]
        if kind == Nodetype.NAME:
            return self.idl_class(arg)
        sub, n = arg
        if kind == Nodetype.ARRAY:
            return idl_types.array[self._idl_type(sub), n]
        if n:
            return idl_types.sequence[self._idl_type(sub), n]
        return idl_types.sequence[self._idl_type(sub)]

    def to_idl(self, msg: Any, ros_type: str | None = None) -> IdlStruct:
        """Convert a rosbags message into the :meth:`idl_class` instance with the same values."""
        ros_type = ros_type or msg.__msgtype__
        cls = self.idl_class(ros_type)
        kwargs = {}
        for name, desc in self.fields(ros_type):
            attr = normalize_fieldname(name)
            kwargs[attr] = self._to_idl_value(getattr(msg, attr), desc)
        return cls(**kwargs)

    def _to_idl_value(self, value: Any, desc: Any) -> Any:
        kind, arg = desc
        if kind == Nodetype.BASE:
            return value.item() if isinstance(value, np.generic) else value
        if kind == Nodetype.NAME:
            return self.to_idl(value, arg)
        sub = arg[0]
        if sub[0] == Nodetype.BASE and sub[1][0] in _BYTE_LIKE:
            arr = np.ascontiguousarray(value)
            arr = arr.view(np.uint8) if arr.dtype.itemsize == 1 else arr.astype(np.uint8)
            return arr.tobytes()
        if sub[0] == Nodetype.BASE and sub[1][0] != "string":
            return np.asarray(value).tolist()
        return [self._to_idl_value(v, sub) for v in value]

    # -- payloads ----------------------------------------------------------------------------
    def encode(self, msg: Any, ros_type: str, header: tuple[int, int] | None = None) -> Any:
        """The DDS sample of ``msg``: bytes-like, little-endian plain CDR, 4-byte padded.

        ``header=(guid, seq)`` inserts the 16-byte service request header.
        """
        body = self.typestore.serialize_cdr(msg, ros_type, little_endian=True)
        if header is not None:
            body = b"".join((CDR_LE_HEADER, REQUEST_HEADER.pack(*header), body[4:]))
        pad = -len(body) % 4
        if pad:
            return b"".join((body, b"\0" * pad))
        return body

    def decode(self, data: bytes, ros_type: str) -> Any:
        """A rosbags message from a DDS sample (plain CDR, either endianness)."""
        return self.typestore.deserialize_cdr(data, ros_type)

    def decode_with_header(self, data: bytes, ros_type: str) -> tuple[Any, int, int]:
        """``(msg, guid, seq)`` from a service sample (header after the encapsulation)."""
        if len(data) < 20:
            raise ValueError(f"service sample too short ({len(data)} bytes) for its header")
        endian = "<" if data[1] & 1 else ">"
        guid, seq = struct.unpack_from(endian + "Qq", data, 4)
        return self.decode(data[:4] + data[20:], ros_type), guid, seq
