"""``recorder_node``: record topics into a rosbag2 file (mcap).

``ros2 bag record`` does the same on ROS 2 machines; this node exists so that the launch
graphs record identically everywhere (``sim_rollout record:=DIR``). Each entry of ``topics``
is ``"name type qos"`` (qos one of sensor, frames, reliable, latched; names relative to the
node's namespace unless absolute, remappings applied).

Messages are taken serialized (``create_subscription(..., raw=True)``: the CDR bytes as they
came off the wire) and written unchanged with :class:`mirage_ros.bag.BagRecorder` (rosbags),
which stores each type's full definition, so ``ros2 bag`` and :mod:`mirage_ros.bag` read the
bag. Subscriptions keep a deep history (:data:`RECORD_DEPTH`) with the purpose's reliability
and durability; ``latched`` topics are subscribed transient local, so a recorder that starts
late still gets what their publishers retain (the target path, camera info, every ground-truth
frame of a path). The log time of a message is its receive time. The bag is closed
(``metadata.yaml`` written) in :meth:`RecorderNode.release`, after the last callback ran;
what was written before a crash can be recovered with ``ros2 bag reindex``.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

from mirage_core.errors import MirageInputError
from mirage_ros.messages import RclpyMessages
from mirage_ros.node_base import QOS_PURPOSES, MirageNode, qos, run_node

__all__ = ["DEFAULT_TOPICS", "RECORD_DEPTH", "RecorderNode", "RecorderNodeConfig", "main"]

#: ground truth (``gt/*``) is published latched with a whole path of history (sim_camera_node),
#: so it is recorded with the ``latched`` purpose (transient local)
DEFAULT_TOPICS = [
    "image sensor_msgs/msg/Image frames",
    "pose geometry_msgs/msg/PoseStamped frames",
    "camera_info sensor_msgs/msg/CameraInfo latched",
    "chunk_info mirage/msg/ChunkInfo reliable",
    "memory_stats mirage/msg/MemoryStats latched",
    "target_path nav_msgs/msg/Path latched",
    "gt/image sensor_msgs/msg/Image latched",
    "gt/depth sensor_msgs/msg/Image latched",
    "gt/pose geometry_msgs/msg/PoseStamped latched",
]

#: history depth of every recording subscription: a burst (a latched path's ground truth
#: delivered at once to a late recorder, frames faster than the disk) is queued, not dropped
RECORD_DEPTH = 1000


@dataclass
class RecorderNodeConfig:
    """Parameters of ``recorder_node``.

    Attributes:
        out: the bag directory to create (must not exist).
        topics: what to record, each "name type qos" (qos: sensor, frames, reliable, latched).
        storage: mcap (default) or sqlite3.
    """

    out: str = ""
    topics: list = field(default_factory=lambda: list(DEFAULT_TOPICS))
    storage: str = "mcap"

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("set out:=DIR (the bag directory to create)")
        for t in self.topics:
            parts = str(t).split()
            if len(parts) != 3 or parts[2] not in QOS_PURPOSES or parts[1].count("/") != 2:
                raise ValueError(f"topics entries are 'name pkg/msg/Type qos' with qos in "
                                 f"{QOS_PURPOSES}, got {t!r}")


def record_qos(purpose: str):
    """The subscription profile for recording a ``purpose`` topic: its reliability and
    durability (so it matches the publishers), history ``KEEP_LAST(RECORD_DEPTH)``."""
    from rclpy.qos import HistoryPolicy, QoSProfile

    p = qos(purpose)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(p.depth, RECORD_DEPTH),
                      reliability=p.reliability, durability=p.durability)


class RecorderNode(MirageNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "recorder", **kwargs) -> None:
        from mirage_ros.bag import BagRecorder
        from mirage_ros.interfaces import make_typestore

        super().__init__(node_name, **kwargs)
        self.config = cfg = self.declare_config(RecorderNodeConfig)
        entries = [str(x).split() for x in cfg.topics]
        msgs = RclpyMessages()
        classes = {}
        for _name, msg_type, _q in entries:
            try:
                classes[msg_type] = msgs.cls(msg_type)
            except (ImportError, AttributeError, ValueError) as e:
                raise MirageInputError(
                    f"{self.get_fully_qualified_name()}: cannot record {msg_type}: no rclpy "
                    f"message class ({e})") from None
        topics = [(self.resolve_topic_name(n), n, t, q) for n, t, q in entries]
        typestore = make_typestore()
        for full, _name, msg_type, _q in topics:
            if msg_type not in typestore.types:
                raise MirageInputError(
                    f"{self.get_fully_qualified_name()}: cannot record {msg_type} on {full}: "
                    "the bag's type store (mirage_ros.interfaces.make_typestore) lacks it")
        try:
            self.recorder = BagRecorder(cfg.out, typestore=typestore, storage=cfg.storage,
                                        latched_topics=[f for f, _n, _t, q in topics
                                                        if q == "latched"])
        except FileExistsError as e:
            raise MirageInputError(f"{self.get_fully_qualified_name()}: {e}") from None
        self._lock = threading.Lock()  # write vs close (release)
        self._closed = False
        for full, name, msg_type, q in topics:
            self.create_subscription(classes[msg_type], name, self._writer(full, msg_type),
                                     record_qos(q), raw=True)
        self.get_logger().info(f"recording {len(topics)} topics into {cfg.out}")

    def _writer(self, topic: str, msg_type: str):
        def write(data: bytes) -> None:
            t = time.time_ns()
            with self._lock:
                if not self._closed:
                    self.recorder.write_cdr(topic, msg_type, data, t)

        return write

    def release(self) -> None:
        """Close the bag once no callback runs (a write still in flight finishes first: the
        lock), so nothing received is lost and the bag is never closed mid-write."""
        with self._lock:
            self._closed = True
            self.recorder.close()
        self.get_logger().info(f"bag {self.config.out} closed: {self.recorder.counts}")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(RecorderNode, argv))


if __name__ == "__main__":
    main()
