"""``sim_camera_node``: a simulated RGB-D camera in the PyBullet room (CPU rendering).

Publishes at ``rate_hz``, all with one stamp (sensor-data QoS, like a camera driver):
    ``camera/image`` (rgb8), ``camera/depth`` (32FC1 metres, 0 = no hit), ``camera/mask``
    (mono8, 255 on dynamic objects and sky), ``camera/camera_info``, ``camera/pose``
    (PoseStamped ``T_world_cam``, OpenCV optical frame, in ``frame_id``), and ``/tf``
    (``frame_id -> camera_frame``, reliable).
The camera stands at the scene's start pose, at scene time 0 (the view a rollout starts from).

Ground truth for evaluation (``ground_truth``): for every ``target_path`` (latched) it renders
the path (pose ``i`` at scene time ``t_i - t_0`` from the path's stamps) and publishes
``gt/image``, ``gt/depth`` and ``gt/pose`` with the path's stamps, latched with a history that
holds whole paths (:data:`QOS_GROUND_TRUTH`): a recorder or scorer that subscribes transient
local after the frames were rendered still receives every one of them.

The PyBullet client is used under one lock (it is not thread-safe) and closed in
:meth:`SimCameraNode.release`, after the timer is cancelled and the ground-truth rendering has
stopped, so no render ever runs on a closed scene.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import numpy as np
import torch

from mirage_core.geometry import intrinsics_from_fov
from mirage_ros.messages import RclpyMessages, camera_info_msg, path_to_T, pose_from_T
from mirage_ros.node_base import QOS_LATCHED, QOS_RELIABLE, QOS_SENSOR, MirageNode, run_node

__all__ = ["GT_HISTORY_DEPTH", "QOS_GROUND_TRUTH", "SimCameraNode", "SimCameraNodeConfig",
           "main"]

#: poses of ground truth kept for late joiners: a path has 1 + 32 * chunks poses, so 1000
#: holds a path of 31 chunks (or several shorter paths)
GT_HISTORY_DEPTH = 1000

try:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    #: ``gt/*``: reliable + transient local (latched) with a history deep enough for a whole
    #: path, because the ground truth of a path is rendered and published once; a subscriber
    #: that joins later (recorder, test, scorer) asks transient local and gets every frame.
    #: (``QOS_LATCHED`` keeps only the last sample; ``QOS_FRAMES`` is volatile.)
    QOS_GROUND_TRUTH = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=GT_HISTORY_DEPTH,
                                  reliability=ReliabilityPolicy.RELIABLE,
                                  durability=DurabilityPolicy.TRANSIENT_LOCAL)
except ImportError:  # rclpy missing: MirageNode's require_ros() says how to install it
    QOS_GROUND_TRUTH = None


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


class SimCameraNode(MirageNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "sim_camera", **kwargs) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Path
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from mirage_core.sim.pybullet_scene import PyBulletScene

        super().__init__(node_name, **kwargs)
        self.config = cfg = self.declare_config(SimCameraNodeConfig)
        self.msgs = RclpyMessages()
        self.scene = PyBulletScene(cfg.scene, seed=cfg.seed, dynamic=cfg.dynamic)
        # the PyBullet client is not thread-safe: rendering and publishing what was rendered
        # hold this lock, so release() (which takes it) waits for a frame in flight
        self._render_lock = threading.RLock()
        self._scene_closed = False  # set under the render lock by release()
        self._stop_gt = threading.Event()
        self._gt_threads: list[threading.Thread] = []
        self.T_world_cam = np.asarray(self.scene.default_start_pose(), dtype=np.float64)
        self.K = intrinsics_from_fov(cfg.width, cfg.height, cfg.fov_deg)
        self._pubs = {
            "image": self.create_publisher(Image, "camera/image", QOS_SENSOR),
            "depth": self.create_publisher(Image, "camera/depth", QOS_SENSOR),
            "mask": self.create_publisher(Image, "camera/mask", QOS_SENSOR),
            "info": self.create_publisher(CameraInfo, "camera/camera_info", QOS_SENSOR),
            "pose": self.create_publisher(PoseStamped, "camera/pose", QOS_SENSOR),
            "tf": self.create_publisher(TFMessage, "/tf", QOS_RELIABLE),
        }
        if cfg.ground_truth:
            self._gt = {
                "image": self.create_publisher(Image, "gt/image", QOS_GROUND_TRUTH),
                "depth": self.create_publisher(Image, "gt/depth", QOS_GROUND_TRUTH),
                "pose": self.create_publisher(PoseStamped, "gt/pose", QOS_GROUND_TRUTH),
            }
            self.create_subscription(Path, "target_path", self._on_path, QOS_LATCHED)
        self.frames_published = 0
        self.gt_paths = 0
        self.create_timer(1.0 / cfg.rate_hz, self.publish_frame)

    def _render(self, T: np.ndarray, t: float):
        """The view from ``T`` at scene time ``t``, or None once the scene is closed."""
        c = self.config
        with self._render_lock:
            if self._scene_closed:
                return None
            return self.scene.render(T, self.K.numpy(), c.height, c.width, time=t)

    def _messages(self, frame, T: np.ndarray, hdr) -> dict:
        from geometry_msgs.msg import PoseStamped
        from std_msgs.msg import Header

        m = self.msgs
        depth = np.where(np.isfinite(frame.depth), frame.depth, 0.0).astype(np.float32)
        return {
            "image": m.image(np.ascontiguousarray(frame.rgb), "rgb8", hdr),
            "depth": m.image(depth, "32FC1", hdr),
            "pose": PoseStamped(header=Header(stamp=hdr.stamp, frame_id=self.config.frame_id),
                                pose=pose_from_T(m, torch.from_numpy(T))),
            "mask": m.image(((frame.dynamic_mask | frame.sky_mask) * 255).astype(np.uint8),
                            "mono8", hdr),
        }

    def publish_frame(self) -> None:
        """Render the current view and publish it (one stamp for everything)."""
        with self._render_lock:
            frame = self._render(self.T_world_cam, 0.0)
            if frame is not None:
                self._publish_frame(frame)

    def _publish_frame(self, frame) -> None:
        from geometry_msgs.msg import Transform, TransformStamped, Vector3
        from std_msgs.msg import Header
        from tf2_msgs.msg import TFMessage

        c = self.config
        hdr = self.header(c.camera_frame)
        msgs = self._messages(frame, self.T_world_cam, hdr)
        info = camera_info_msg(self.msgs, self.K, (c.height, c.width), hdr)
        p = msgs["pose"].pose
        tf = TransformStamped(
            header=Header(stamp=hdr.stamp, frame_id=c.frame_id), child_frame_id=c.camera_frame,
            transform=Transform(
                translation=Vector3(x=p.position.x, y=p.position.y, z=p.position.z),
                rotation=p.orientation))
        for k in ("image", "depth", "mask", "pose"):
            self._pubs[k].publish(msgs[k])
        self._pubs["info"].publish(info)
        self._pubs["tf"].publish(TFMessage(transforms=[tf]))
        self.frames_published += 1

    def _on_path(self, msg) -> None:
        try:
            T, stamps = path_to_T(msg, frame_id=self.config.frame_id)
        except ValueError as e:
            self.get_logger().error(f"target_path refused: {e}")
            return
        if len(T) > GT_HISTORY_DEPTH:
            self.get_logger().warning(
                f"target_path has {len(T)} poses; late subscribers of gt/* get only the last "
                f"{GT_HISTORY_DEPTH}")
        # rendered off the executor so the camera stream keeps running (render lock shared)
        self._gt_threads = [t for t in self._gt_threads if t.is_alive()]
        th = threading.Thread(target=self._render_path, args=(T, stamps), daemon=True,
                              name="gt-render")
        self._gt_threads.append(th)
        th.start()

    def _render_path(self, T: torch.Tensor, stamps: np.ndarray) -> None:
        c = self.config
        t0 = int(stamps[0])
        try:
            for i in range(len(T)):
                if self._stop_gt.is_set():
                    return
                with self._render_lock:
                    frame = self._render(T[i].numpy(), (int(stamps[i]) - t0) * 1e-9)
                    if frame is None:
                        return
                    hdr = self.header(c.camera_frame, int(stamps[i]))
                    msgs = self._messages(frame, T[i].numpy(), hdr)
                    for k in ("image", "depth", "pose"):
                        self._gt[k].publish(msgs[k])
        except Exception as e:
            self.get_logger().error(f"ground truth rendering failed: {type(e).__name__}: {e}")
            return
        self.gt_paths += 1
        self.get_logger().info(f"published ground truth for {len(T)} poses")

    def release(self) -> None:
        """Stop ground-truth rendering, then close the PyBullet scene.

        :meth:`MirageNode.close` calls this after cancelling the timer; a frame still in
        flight holds the render lock, so the scene closes after it, and any later render
        sees the closed flag and does nothing."""
        self._stop_gt.set()
        for th in self._gt_threads:
            th.join(timeout=10.0)
        with self._render_lock:
            self._scene_closed = True
            self.scene.close()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(SimCameraNode, argv))


if __name__ == "__main__":
    main()
