"""``memory_node``: the latent spatial memory as a ROS 2 node.

Services (relative names):
    ``update_memory`` (mirage/srv/UpdateMemory)  write a frame; ``reset`` initializes
    ``read_memory`` (mirage/srv/ReadMemory)      readout at one or more poses
    ``memory_file`` (mirage/srv/MemoryFile)      save / load a safetensors file
    ``clear_memory`` (std_srvs/srv/Trigger)      drop every point
    ``save_memory`` (std_srvs/srv/Trigger)       save to ``autosave_path`` now
Topics:
    ``memory_stats`` (mirage/msg/MemoryStats, latched)  after every change and periodically
    ``memory_cloud`` (sensor_msgs/msg/PointCloud2, latched)  the cache for rviz, PCA colours

The cache survives a killed node when ``autosave_path`` is set: saved atomically every
``autosave_every`` updates, on ``save_memory`` and on shutdown; reloaded on start.
Handlers are :class:`mirage_ros.memory_service.MemoryService`'s (never raising).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

from mirage_ros.memory_service import MemoryService, MemoryServiceConfig
from mirage_ros.messages import RclpyMessages
from mirage_ros.node_base import QOS_LATCHED, MirageNode, run_node

__all__ = ["MemoryNode", "MemoryNodeConfig", "main"]


@dataclass
class MemoryNodeConfig(MemoryServiceConfig):
    """Parameters of ``memory_node``.

    Attributes:
        merge_policy: how new cells merge with stored ones: fill_empty (default), union or voxel.
        feature_dtype: storage dtype of the latent features (bfloat16 or float32).
        device: where the memory lives (cpu, cuda).
        max_points: memory budget in points (0 = unbounded).
        autosave_path: safetensors file the memory is saved to and reloaded from ("" = off).
        autosave_every: updates between automatic saves (>= 1).
        frame_id: the memory's world frame (headers of statistics and point cloud).
        cloud_max_points: at most this many points in the published point cloud.
        stride: spatial stride of the model's codec (16: Wan2.2-TI2V-5B; 8: the small model).
        hole_fill: readout hole-fill passes, the model's (0 = off, the paper's
            readout; mirage launch sets the model's value).
        stats_period_s: seconds between periodic statistics messages (0 = only on change).
        cloud_period_s: seconds between point cloud messages, sent only if the memory
            changed (0 = never).
    """

    stats_period_s: float = 1.0
    cloud_period_s: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stats_period_s < 0 or self.cloud_period_s < 0:
            raise ValueError("stats_period_s and cloud_period_s must be >= 0")


class MemoryNode(MirageNode):
    """Serves :class:`MemoryService` (see the module docstring)."""

    def __init__(self, node_name: str = "memory", **kwargs) -> None:
        from mirage.msg import MemoryStats
        from mirage.srv import MemoryFile, ReadMemory, UpdateMemory
        from sensor_msgs.msg import PointCloud2
        from std_srvs.srv import Trigger

        super().__init__(node_name, **kwargs)
        self.config = cfg = self.declare_config(MemoryNodeConfig)
        base = {f.name: getattr(cfg, f.name) for f in fields(MemoryServiceConfig)}
        self.msgs = RclpyMessages()
        self.service = MemoryService(self.msgs, MemoryServiceConfig(**base),
                                     logger=self.get_logger())
        self._stats_pub = self.create_publisher(MemoryStats, "memory_stats", QOS_LATCHED)
        self._cloud_pub = self.create_publisher(PointCloud2, "memory_cloud", QOS_LATCHED)
        self._cloud_version = -1
        self._version = 0
        self.serve(UpdateMemory, "update_memory", self._changed(self.service.update))
        self.serve(ReadMemory, "read_memory", self.service.read)
        self.serve(MemoryFile, "memory_file", self._changed(self.service.file))
        self.serve(Trigger, "clear_memory", self._changed(self.service.clear))
        self.serve(Trigger, "save_memory", self._save)
        if cfg.stats_period_s > 0:
            self.create_timer(cfg.stats_period_s, self.publish_stats)
        if cfg.cloud_period_s > 0:
            self.create_timer(cfg.cloud_period_s, self._publish_cloud)
        self.publish_stats()
        if self.service.initialized:
            self.get_logger().info(f"memory reloaded: {self.service.memory.num_points} points")

    def _changed(self, handler):
        def run(req):
            resp = handler(req)
            if getattr(resp, "success", False):
                self._version += 1
                self.publish_stats()
            return resp

        return run

    def _save(self, _req):
        from mirage.srv import MemoryFile
        from std_srvs.srv import Trigger

        path = self.config.autosave_path
        if not path:
            return Trigger.Response(success=False, message="autosave_path is not set")
        r = self.service.file(MemoryFile.Request(operation="save", path=path))
        return Trigger.Response(success=r.success, message=r.message)

    def publish_stats(self) -> None:
        self._stats_pub.publish(self.service.stats_msg())

    def _publish_cloud(self) -> None:
        if self._version == self._cloud_version or not self.service.initialized:
            return
        self._cloud_pub.publish(self.service.point_cloud())
        self._cloud_version = self._version

    def release(self) -> None:
        """Save on the way out (SIGINT/SIGTERM), so nothing written is lost."""
        if self.config.autosave_path and self.service.initialized:
            try:
                self.service.memory.save(self.config.autosave_path)
                self.get_logger().info(f"saved the memory to {self.config.autosave_path}")
            except OSError as e:
                self.get_logger().error(f"could not save the memory: {e}")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(MemoryNode, argv))


if __name__ == "__main__":
    main()
