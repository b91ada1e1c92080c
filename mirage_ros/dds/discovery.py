"""``ros_discovery_info``: how ROS 2 tools learn which nodes own which DDS endpoints.

rmw_cyclonedds_cpp publishes one ``rmw_dds_common/msg/ParticipantEntitiesInfo`` per participant
on the DDS topic ``ros_discovery_info`` (no ``rt/`` prefix; reliable, transient local, keep
last 1) whenever its nodes or their endpoints change:

* ``gid``: the participant's 16-byte DDS GUID, zero-padded to the distribution's ``Gid`` size
  (24 bytes in Humble, 16 in Jazzy: use the type store of the peers' distribution);
* per node: namespace, name, and the GUIDs of its readers and writers (services and clients
  count one reader and one writer each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from cyclonedds.pub import DataWriter

from .qos import QOS_LATCHED

if TYPE_CHECKING:
    from .node import DdsContext

__all__ = ["DISCOVERY_TOPIC", "GraphPublisher"]

DISCOVERY_TOPIC = "ros_discovery_info"
_INFO = "rmw_dds_common/msg/ParticipantEntitiesInfo"
_NODE = "rmw_dds_common/msg/NodeEntitiesInfo"
_GID = "rmw_dds_common/msg/Gid"


class GraphPublisher:
    """Publishes the context's ``ParticipantEntitiesInfo`` (call :meth:`publish` on changes)."""

    def __init__(self, context: DdsContext):
        self.context = context
        types = context.types
        types.msg_class(_INFO)  # the store must have rmw_dds_common (all ROS 2 stores do)
        gid_desc = dict(types.fields(_GID))["data"]
        self.gid_size = int(gid_desc[1][1])  # ARRAY ((BASE char), N)
        topic = context._topic(DISCOVERY_TOPIC, types.idl_class(_INFO))
        self.writer = DataWriter(context.participant, topic, QOS_LATCHED.to_dds())

    def _gid(self, guid16: bytes):
        data = np.zeros(self.gid_size, dtype=np.uint8)
        data[: min(16, self.gid_size)] = np.frombuffer(guid16[: self.gid_size], dtype=np.uint8)
        return self.context.msg_class(_GID)(data=data)

    def message(self):
        """The current ``ParticipantEntitiesInfo`` of the context."""
        ctx = self.context
        node_cls = ctx.msg_class(_NODE)
        nodes = [
            node_cls(
                node_namespace=n.namespace,
                node_name=n.name,
                reader_gid_seq=[self._gid(g) for g in n.reader_guids()],
                writer_gid_seq=[self._gid(g) for g in n.writer_guids()],
            )
            for n in ctx.nodes
        ]
        return ctx.msg_class(_INFO)(
            gid=self._gid(ctx.participant.guid.bytes), node_entities_info_seq=nodes
        )

    def publish(self) -> None:
        from .node import _write  # local: node imports this module

        _write(self.writer, self.context.types.encode(self.message(), _INFO))
