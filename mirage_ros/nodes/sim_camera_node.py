"""``sim_camera_node``: a simulated RGB-D camera in the PyBullet room (CPU rendering).

Publishes at ``rate_hz``, all with one stamp (sensor-data QoS, like a camera driver):
    ``camera/image`` (rgb8), ``camera/depth`` (32FC1 metres, 0 = no hit), ``camera/mask``
    (mono8, 255 on dynamic objects and sky), ``camera/camera_info``, ``camera/pose``
    (PoseStamped ``T_world_cam``, OpenCV optical frame, in ``frame_id``), and ``/tf``
    (``frame_id -> camera_frame``).
The camera stands at the scene's start pose, at scene time 0 (the view a rollout starts from).

Ground truth for evaluation (``ground_truth``): for every ``target_path`` it renders the path
(pose ``i`` at scene time ``t_i - t_0`` from the path's stamps) and publishes ``gt/image``,
``gt/depth`` and ``gt/pose`` with the path's stamps (reliable, for recording and scoring).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import numpy as np
import torch

from mirage_core.geometry import intrinsics_from_fov
from mirage_ros.messages import camera_info_msg, path_to_T, pose_from_T
from mirage_ros.node_api import NodeHandle, run_node

__all__ = ["SimCameraNode", "SimCameraNodeConfig", "main"]


@dataclass
class SimCameraNodeConfig:
    """Parameters of ``sim_camera_node``.

    Attributes:
        scene: PyBullet scene preset (room or outdoor).
        seed: scene layout seed (the generator's sim depth must use the same).
        dynamic: include the moving ball (a dynamic object the memory must not store).
        width: image width in pixels (a multiple of 32 for the generator).
        height: image height in pixels (a multiple of 32 for the generator).
        fov_deg: vertical field of view in degrees.
        rate_hz: frames per second of the camera stream (> 0).
        frame_id: world frame of the poses (the memory's world frame).
        camera_frame: the camera's optical frame name (tf child, image headers).
        ground_truth: render and publish gt/* along every target_path.
    """

    scene: str = "room"
    seed: int = 0
    dynamic: bool = True
    width: int = 224
    height: int = 128
    fov_deg: float = 60.0
    rate_hz: float = 2.0
    frame_id: str = "world"
    camera_frame: str = "camera_optical"
    ground_truth: bool = True

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size {self.height}x{self.width} is too small")
        if not 0 < self.fov_deg < 180:
            raise ValueError(f"fov_deg must be in (0, 180), got {self.fov_deg}")
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")


class SimCameraNode:
    """See the module docstring."""

    def __init__(self, node: NodeHandle) -> None:
        from mirage_core.sim.pybullet_scene import PyBulletScene

        self.node = node
        self.config = cfg = node.declare_config(SimCameraNodeConfig)
        self.scene = PyBulletScene(cfg.scene, seed=cfg.seed, dynamic=cfg.dynamic)
        self._render_lock = threading.Lock()  # the PyBullet client is not thread-safe
        self.T_world_cam = np.asarray(self.scene.default_start_pose(), dtype=np.float64)
        self.K = intrinsics_from_fov(cfg.width, cfg.height, cfg.fov_deg)
        self._pubs = {
            "image": node.publisher("sensor_msgs/msg/Image", "camera/image", "sensor"),
            "depth": node.publisher("sensor_msgs/msg/Image", "camera/depth", "sensor"),
            "mask": node.publisher("sensor_msgs/msg/Image", "camera/mask", "sensor"),
            "info": node.publisher("sensor_msgs/msg/CameraInfo", "camera/camera_info", "sensor"),
            "pose": node.publisher("geometry_msgs/msg/PoseStamped", "camera/pose", "sensor"),
            "tf": node.publisher("tf2_msgs/msg/TFMessage", "/tf", "reliable"),
        }
        if cfg.ground_truth:
            self._gt = {
                "image": node.publisher("sensor_msgs/msg/Image", "gt/image", "frames"),
                "depth": node.publisher("sensor_msgs/msg/Image", "gt/depth", "frames"),
                "pose": node.publisher("geometry_msgs/msg/PoseStamped", "gt/pose", "frames"),
            }
            node.subscription("nav_msgs/msg/Path", "target_path", self._on_path, "latched")
        self.frames_published = 0
        self.gt_paths = 0
        node.timer(1.0 / cfg.rate_hz, self.publish_frame)

    def _render(self, T: np.ndarray, t: float):
        c = self.config
        with self._render_lock:
            return self.scene.render(T, self.K.numpy(), c.height, c.width, time=t)

    def _messages(self, frame, T: np.ndarray, hdr) -> dict:
        m = self.node.msgs
        depth = np.where(np.isfinite(frame.depth), frame.depth, 0.0).astype(np.float32)
        return {
            "image": m.image(np.ascontiguousarray(frame.rgb), "rgb8", hdr),
            "depth": m.image(depth, "32FC1", hdr),
            "pose": m.new("geometry_msgs/msg/PoseStamped",
                          header=m.new("std_msgs/msg/Header", stamp=hdr.stamp,
                                       frame_id=self.config.frame_id),
                          pose=pose_from_T(m, torch.from_numpy(T))),
            "mask": m.image(((frame.dynamic_mask | frame.sky_mask) * 255).astype(np.uint8),
                            "mono8", hdr),
        }

    def publish_frame(self) -> None:
        """Render the current view and publish it (one stamp for everything)."""
        c, m = self.config, self.node.msgs
        frame = self._render(self.T_world_cam, 0.0)
        hdr = self.node.header(c.camera_frame)
        msgs = self._messages(frame, self.T_world_cam, hdr)
        info = camera_info_msg(m, self.K, (c.height, c.width), hdr)
        p = msgs["pose"].pose
        tf = m.new("geometry_msgs/msg/TransformStamped",
                   header=m.new("std_msgs/msg/Header", stamp=hdr.stamp, frame_id=c.frame_id),
                   child_frame_id=c.camera_frame,
                   transform=m.new("geometry_msgs/msg/Transform",
                                   translation=m.new("geometry_msgs/msg/Vector3",
                                                     x=p.position.x, y=p.position.y,
                                                     z=p.position.z),
                                   rotation=p.orientation))
        for k in ("image", "depth", "mask", "pose"):
            self._pubs[k].publish(msgs[k])
        self._pubs["info"].publish(info)
        self._pubs["tf"].publish(m.new("tf2_msgs/msg/TFMessage", transforms=[tf]))
        self.frames_published += 1

    def _on_path(self, msg) -> None:
        try:
            T, stamps = path_to_T(msg)
        except ValueError as e:
            self.node.logger.error("target_path refused: %s", e)
            return
        threading.Thread(target=self._render_path, args=(T, stamps), daemon=True,
                         name="gt-render").start()

    def _render_path(self, T: torch.Tensor, stamps: np.ndarray) -> None:
        c = self.config
        t0 = int(stamps[0])
        for i in range(len(T)):
            frame = self._render(T[i].numpy(), (int(stamps[i]) - t0) * 1e-9)
            hdr = self.node.header(c.camera_frame, int(stamps[i]))
            msgs = self._messages(frame, T[i].numpy(), hdr)
            for k in ("image", "depth", "pose"):
                self._gt[k].publish(msgs[k])
        self.gt_paths += 1
        self.node.logger.info("published ground truth for %d poses", len(T))

    def close(self) -> None:
        with self._render_lock:
            self.scene.close()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(SimCameraNode, "sim_camera", argv))


if __name__ == "__main__":
    main()
