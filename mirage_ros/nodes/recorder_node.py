"""``recorder_node``: record topics into a rosbag2 file (mcap), on either backend.

``ros2 bag record`` does the same on ROS 2 machines; this node exists so that the launch
graphs record identically everywhere (``sim_rollout record:=DIR``). Each entry of ``topics``
is ``"name type qos"`` (qos one of sensor, frames, reliable, latched; names relative to the
node's namespace unless absolute). The log time of a message is its receive time; the bag is
closed (``metadata.yaml`` written) when the node stops, and what was written before a crash
can be recovered with ``ros2 bag reindex``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from mirage_ros.node_api import QOS, NodeHandle, run_node

__all__ = ["DEFAULT_TOPICS", "RecorderNode", "RecorderNodeConfig", "main"]

DEFAULT_TOPICS = [
    "image sensor_msgs/msg/Image frames",
    "pose geometry_msgs/msg/PoseStamped frames",
    "camera_info sensor_msgs/msg/CameraInfo latched",
    "chunk_info mirage/msg/ChunkInfo reliable",
    "memory_stats mirage/msg/MemoryStats latched",
    "target_path nav_msgs/msg/Path latched",
    "gt/image sensor_msgs/msg/Image frames",
    "gt/depth sensor_msgs/msg/Image frames",
    "gt/pose geometry_msgs/msg/PoseStamped frames",
]


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
            if len(parts) != 3 or parts[2] not in QOS or parts[1].count("/") != 2:
                raise ValueError(f"topics entries are 'name pkg/msg/Type qos' with qos in "
                                 f"{QOS}, got {t!r}")


class RecorderNode:
    """See the module docstring."""

    def __init__(self, node: NodeHandle) -> None:
        from mirage_ros.bag import BagRecorder

        self.node = node
        self.config = cfg = node.declare_config(RecorderNodeConfig)
        latched = [n for n, _t, q in (str(x).split() for x in cfg.topics) if q == "latched"]
        self.recorder = BagRecorder(cfg.out, storage=cfg.storage,
                                    latched_topics=[self._full(n) for n in latched])
        for entry in cfg.topics:
            name, msg_type, qos = str(entry).split()
            node.subscription(msg_type, name, self._writer(self._full(name), msg_type), qos)
        node.logger.info("recording %d topics into %s", len(cfg.topics), cfg.out)

    def _full(self, name: str) -> str:
        name = self.node.remap(name)
        return name if name.startswith("/") else f"{self.node.namespace.rstrip('/')}/{name}"

    def _writer(self, topic: str, msg_type: str):
        def write(msg) -> None:
            t = time.time_ns()
            if self.node.backend == "dds":
                self.recorder.write(topic, msg, t)
            else:
                self.recorder.write_cdr(topic, msg_type, self.node.serialize(msg, msg_type), t)

        return write

    def close(self) -> None:
        self.recorder.close()
        self.node.logger.info("bag %s closed: %s", self.config.out, self.recorder.counts)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(RecorderNode, "recorder", argv))


if __name__ == "__main__":
    main()
