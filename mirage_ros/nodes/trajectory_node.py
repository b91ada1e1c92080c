"""``trajectory_node``: target cameras for the world model, published as ``target_path``.

Sources (parameter ``source``):
    ``motion``  a named motion (``orbit_left``, ``loop``, ...; mirage_core.trajectory)
    ``file``    a trajectory file (TUM, KITTI, RealEstate10K, nerfstudio; format detected
                from its data lines, or ``file_format``). Only its poses and timestamps
                are read: ``target_path`` carries no intrinsics (the generator takes them
                from its ``camera_info``), so files whose intrinsics need the image size
                (RealEstate10K's normalised ones, ``camera_angle_x``) are read without it
    ``path``    each ``nav_msgs/Path`` on ``path_in`` (e.g. from a planner)
    ``poses``   a stream of ``geometry_msgs/PoseStamped`` on ``pose_in``
    ``tf``      the transform ``tf_parent -> tf_child`` on ``/tf`` (tf2_msgs/TFMessage; a
                direct edge: the child must be the camera's optical frame, OpenCV axes)

Output: ``target_path`` (nav_msgs/Path, latched): poses ``T_world_cam`` (OpenCV camera frame)
in ``frame_id``, exactly ``1 + 32 * chunks`` of them (what a rollout of ``chunks`` chunks
uses; pose 0 is the current view). ``motion`` and ``file`` trajectories start at the identity
and are anchored at the first ``camera/pose`` when ``anchor_to_camera`` (else at the origin).
Paths with another number of poses are resampled in time (slerp) when ``resample``, else cut
to whole chunks. Pose streams are buffered until ``1 + 32 * chunks`` poses arrived.

Bad input never stops the node: an empty path, non-unit quaternions, or timestamps that go
backwards are logged and dropped (a pose stream keeps its buffer; a path is refused whole).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from mirage_core.errors import MirageInputError
from mirage_core.rollout.schedule import TEMPORAL_STRIDE
from mirage_core.trajectory import TRAJECTORY_NAMES, Trajectory, make_trajectory
from mirage_ros.messages import (
    RclpyMessages,
    path_from_T,
    path_to_T,
    pose_stamped_to_T,
    stamp_to_ns,
)
from mirage_ros.node_base import (
    QOS_FRAMES,
    QOS_LATCHED,
    QOS_RELIABLE,
    QOS_SENSOR,
    MirageNode,
    run_node,
)

__all__ = ["SOURCES", "TrajectoryNode", "TrajectoryNodeConfig", "main", "read_target_file"]

SOURCES = ("motion", "file", "path", "poses", "tf")
FRAMES_PER_CHUNK = TEMPORAL_STRIDE * 8  # RGB frames one chunk adds (32)


@dataclass
class TrajectoryNodeConfig:
    """Parameters of ``trajectory_node``.

    Attributes:
        source: where target cameras come from: motion, file, path, poses or tf.
        motion: the named motion for source=motion (orbit_left, loop, ...).
        file: trajectory file for source=file (TUM, KITTI, RealEstate10K, nerfstudio);
            its poses and timestamps are used, its intrinsics are not.
        file_format: force the file's format (tum, kitti, realestate10k, nerfstudio);
            empty = detect it from the file's data lines.
        chunks: rollout chunks per target path (each adds 32 frames; the path has 1 + 32 *
            chunks poses).
        speed: per-frame step of generated motions (metres or degrees; 0 = the default).
        fps: frame rate: timestamps of generated motions and of paths without stamps.
        resample: resample paths of another length in time (slerp) instead of cutting them.
        anchor_to_camera: start motion/file trajectories at the first camera/pose message.
        frame_id: the world frame of target_path (the memory's world frame).
        tf_parent: world frame of the tf edge for source=tf.
        tf_child: camera optical frame of the tf edge for source=tf.
    """

    source: str = "motion"
    motion: str = "loop"
    file: str = ""
    file_format: str = ""
    chunks: int = 3
    speed: float = 0.0
    fps: float = 24.0
    resample: bool = True
    anchor_to_camera: bool = True
    frame_id: str = "world"
    tf_parent: str = "world"
    tf_child: str = "camera_optical"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "motion" and self.motion not in TRAJECTORY_NAMES:
            raise ValueError(f"motion must be one of {TRAJECTORY_NAMES}, got {self.motion!r}")
        if self.source == "file" and not self.file:
            raise ValueError("source=file needs the file parameter")
        if self.file_format:
            from mirage_core.trajectory_io import format_name

            format_name(self.file_format)  # unknown -> MirageInputError listing the formats
        if self.chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {self.chunks}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    @property
    def num_poses(self) -> int:
        return 1 + FRAMES_PER_CHUNK * self.chunks


def fit_to_chunks(T: torch.Tensor, stamps_ns: np.ndarray, num_poses: int, resample: bool,
                  fps: float) -> tuple[torch.Tensor, np.ndarray]:
    """``[N, 4, 4]`` poses (+ ``[N]`` stamps, all 0 = none) -> exactly ``num_poses`` poses.

    Raises:
        MirageInputError: too few poses to cut, or fewer than 2 to resample.
    """
    n = len(T)
    if not stamps_ns.any():
        stamps_ns = np.round(np.arange(n) * 1e9 / fps).astype(np.int64)
    if n == num_poses:
        return T, stamps_ns
    if resample:
        if n < 2:
            raise MirageInputError("a path needs at least 2 poses to be resampled")
        traj = Trajectory(T, torch.from_numpy(stamps_ns.astype(np.float64) * 1e-9))
        r = traj.resample(num_poses)
        return r.T_world_cam, np.round(r.timestamps.numpy() * 1e9).astype(np.int64)
    if n < num_poses:
        raise MirageInputError(f"the path has {n} poses; {num_poses} are needed "
                               f"(or set resample:=true)")
    return T[:num_poses], stamps_ns[:num_poses]


def read_target_file(path: str, file_format: str | None = None) -> Trajectory:
    """Poses and timestamps of a trajectory file, relative to its first camera.

    Intrinsics are not read (``intrinsics=False``): ``target_path`` carries poses only, so a
    RealEstate10K file (normalised intrinsics) or a ``transforms.json`` with only
    ``camera_angle_x`` needs no image size here.

    Raises:
        TrajectoryFileError: the file does not parse (names the format and the line).
    """
    from mirage_core.trajectory_io import read_trajectory

    return read_trajectory(path, file_format, intrinsics=False).relative_to_first()


class TrajectoryNode(MirageNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "trajectory", **kwargs) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Path
        from tf2_msgs.msg import TFMessage

        super().__init__(node_name, **kwargs)
        self.config = cfg = self.declare_config(TrajectoryNodeConfig)
        self.msgs = RclpyMessages()
        self._pub = self.create_publisher(Path, "target_path", QOS_LATCHED)
        self._buffer: list[tuple[int, torch.Tensor]] = []
        self._anchor: torch.Tensor | None = None
        self._pending: Trajectory | None = None
        self.published = 0
        if cfg.source in ("motion", "file"):
            self._pending = self._make_trajectory()
            if cfg.anchor_to_camera:
                self.create_subscription(PoseStamped, "camera/pose", self._on_camera_pose,
                                         QOS_SENSOR)
            else:
                self._publish_trajectory(torch.eye(4, dtype=torch.float64))
        elif cfg.source == "path":
            self.create_subscription(Path, "path_in", self._on_path, QOS_RELIABLE)
        elif cfg.source == "poses":
            # keep last 100: a burst of poses must not overflow the history (each one is a
            # point of the path; a dropped pose would be a silent gap)
            self.create_subscription(PoseStamped, "pose_in", self._on_pose, QOS_FRAMES)
        else:
            self.create_subscription(TFMessage, "/tf", self._on_tf, QOS_RELIABLE)

    # -- motion / file ---------------------------------------------------------------------
    def _make_trajectory(self) -> Trajectory:
        cfg = self.config
        if cfg.source == "motion":
            return make_trajectory(cfg.motion, cfg.num_poses, cfg.speed or None, fps=cfg.fps)
        return read_target_file(cfg.file, cfg.file_format or None)

    def _on_camera_pose(self, msg) -> None:
        if self._pending is None:
            return
        try:
            T = pose_stamped_to_T(msg, self.config.frame_id)
        except ValueError as e:
            self.get_logger().warning(f"camera/pose dropped: {e}")
            return
        self._publish_trajectory(T)

    def _publish_trajectory(self, T_world_origin: torch.Tensor) -> None:
        traj, self._pending = self._pending, None
        T = T_world_origin @ traj.T_world_cam
        stamps = np.round(traj.timestamps.numpy() * 1e9).astype(np.int64)
        self._emit(T, stamps, f"{self.config.source} {self.config.motion or self.config.file}")

    # -- path / poses / tf -------------------------------------------------------------------
    def _emit(self, T: torch.Tensor, stamps: np.ndarray, what: str) -> None:
        cfg = self.config
        try:
            T, stamps = fit_to_chunks(T, stamps, cfg.num_poses, cfg.resample, cfg.fps)
        except MirageInputError as e:
            self.get_logger().error(f"{what} refused: {e}")
            return
        self._pub.publish(path_from_T(self.msgs, T, stamps, cfg.frame_id))
        self.published += 1
        self.get_logger().info(
            f"published target_path #{self.published} ({what}, {len(T)} poses)")

    def _on_path(self, msg) -> None:
        try:
            T, stamps = path_to_T(msg, frame_id=self.config.frame_id)
        except ValueError as e:
            self.get_logger().error(f"path_in refused: {e}")
            return
        self._emit(T, stamps, "path_in")

    def _add_pose(self, t_ns: int, T_fn, what: str) -> None:
        try:
            T = T_fn()
        except ValueError as e:
            self.get_logger().warning(f"{what} dropped: {e}")
            return
        if self._buffer and t_ns <= self._buffer[-1][0]:
            self.get_logger().warning(
                f"{what} dropped: its stamp {t_ns} ns is not after the previous pose's "
                f"{self._buffer[-1][0]} ns (out of order)")
            return
        self._buffer.append((t_ns, T))
        if len(self._buffer) >= self.config.num_poses:
            buf, self._buffer = self._buffer, []
            self._emit(torch.stack([b[1] for b in buf]),
                       np.array([b[0] for b in buf], dtype=np.int64), what)

    def _on_pose(self, msg) -> None:
        self._add_pose(stamp_to_ns(msg.header.stamp),
                       lambda: pose_stamped_to_T(msg, self.config.frame_id), "pose_in")

    def _on_tf(self, msg) -> None:
        cfg = self.config
        for tr in msg.transforms:
            if tr.header.frame_id.lstrip("/") != cfg.tf_parent.lstrip("/") or (
                    tr.child_frame_id.lstrip("/") != cfg.tf_child.lstrip("/")):
                continue
            tf = tr.transform

            def T_of(tf=tf):
                from mirage_core.geometry import pose_from_translation_quat

                t, q = tf.translation, tf.rotation
                return pose_from_translation_quat([t.x, t.y, t.z], [q.x, q.y, q.z, q.w],
                                                  order="xyzw")

            self._add_pose(stamp_to_ns(tr.header.stamp), T_of, "tf")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(TrajectoryNode, argv))


if __name__ == "__main__":
    main()
