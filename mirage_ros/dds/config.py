"""Cyclone DDS configuration: loopback-only XML and the domain id.

The loopback configuration (measured on this project's machines, see
``docs/ros2-without-rclpy.md`` in the shared docs) keeps all traffic on ``lo``: no multicast,
unicast discovery to ``127.0.0.1`` for participant indices ``0..max_participants``, 4 MB socket
receive buffers and an 8 MB writer history cache high-water mark, so a 4 MB image goes through
in a few ms. Tests and CI must use it, each with its own domain id.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = [
    "MAX_DOMAIN_ID",
    "loopback_config_xml",
    "resolve_domain_id",
    "write_loopback_config",
]

MAX_DOMAIN_ID = 232
"""Highest domain id whose ports fit the default RTPS port mapping (ROS 2 allows 0..232)."""


def loopback_config_xml(
    max_participants: int = 50,
    receive_buffer: str = "4MB",
    whc_high: str = "8MB",
    max_message_size: str = "65500B",
) -> str:
    """Cyclone DDS XML for loopback-only operation (applies to any domain id).

    ``max_participants``: participants per domain and host that unicast discovery reaches
    (Cyclone probes ports of participant indices ``0..max_participants``).
    """
    if max_participants < 1:
        raise ValueError(f"max_participants must be >= 1, got {max_participants}")
    return (
        '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">'
        '<General><Interfaces><NetworkInterface name="lo"/></Interfaces>'
        "<AllowMulticast>false</AllowMulticast>"
        f"<MaxMessageSize>{max_message_size}</MaxMessageSize></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{max_participants}</MaxAutoParticipantIndex>"
        '<Peers><Peer Address="127.0.0.1"/></Peers></Discovery>'
        f'<Internal><SocketReceiveBufferSize min="default" max="{receive_buffer}"/>'
        f"<Watermarks><WhcHigh>{whc_high}</WhcHigh></Watermarks></Internal>"
        "</Domain></CycloneDDS>"
    )


def write_loopback_config(path: str | os.PathLike | None = None, **kwargs) -> str:
    """Write :func:`loopback_config_xml` to ``path`` (default: a new temp file) and return the
    ``file://`` URI to put in ``CYCLONEDDS_URI`` (e.g. for a real ROS 2 node on this host)."""
    if path is None:
        fd, path = tempfile.mkstemp(prefix="cyclonedds_loopback_", suffix=".xml")
        os.close(fd)
    p = Path(path)
    p.write_text(loopback_config_xml(**kwargs))
    return p.resolve().as_uri()


def resolve_domain_id(domain_id: int | None = None) -> int:
    """``domain_id`` if given, else ``$ROS_DOMAIN_ID``, else 0; must be in ``0..232``."""
    if domain_id is None:
        env = os.environ.get("ROS_DOMAIN_ID", "").strip()
        try:
            domain_id = int(env) if env else 0
        except ValueError:
            raise ValueError(f"ROS_DOMAIN_ID must be an integer, got {env!r}") from None
    if not 0 <= int(domain_id) <= MAX_DOMAIN_ID:
        raise ValueError(f"domain id must be in 0..{MAX_DOMAIN_ID}, got {domain_id}")
    return int(domain_id)
