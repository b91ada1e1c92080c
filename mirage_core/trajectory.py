"""Camera trajectories: a validated container and generators for standard camera motions.

Conventions are those of :mod:`mirage_core.geometry`: OpenCV cameras (+X right, +Y down,
+Z forward), poses stored as ``T_world_cam`` (camera-to-world), float64. Generated
trajectories start at the identity pose, so the world frame is the first camera's frame:
world +Z is "ahead", world +X is "right" and world **-Y is up**.

The motions are those WorldScore evaluates (push in / pull out, move left / right, pan
left / right, orbit left / right) plus ``loop``, a closed "go out and come back" path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mirage_core.errors import MirageInputError, PoseError, ShapeError
from mirage_core.geometry import check_intrinsics, check_se3, pose_from_rt, se3_inverse

TRAJECTORY_NAMES: tuple[str, ...] = (
    "push_in",
    "pull_out",
    "move_left",
    "move_right",
    "orbit_left",
    "orbit_right",
    "pan_left",
    "pan_right",
    "loop",
)

DEFAULT_NUM_FRAMES = 25
DEFAULT_FPS = 10.0
DEFAULT_TRANSLATION_SPEED = 0.04  # metres per frame (push/pull/move)
DEFAULT_ROTATION_SPEED = 1.5  # degrees per frame (pan/orbit)
DEFAULT_ORBIT_DISTANCE = 2.0  # metres from the camera to the orbit centre


@dataclass
class Trajectory:
    """A sequence of OpenCV camera poses with timestamps and optional intrinsics.

    Attributes:
        T_world_cam: ``[N, 4, 4]`` float64 camera-to-world poses (N >= 1).
        timestamps: ``[N]`` float64 seconds, finite and strictly increasing.
        K: ``None``, ``[3, 3]`` (shared) or ``[N, 3, 3]`` (per frame) pixel intrinsics,
            float64, for images of size ``image_hw``.
        image_hw: ``(H, W)`` image size in pixels the intrinsics refer to, or ``None``.
        file_paths: optional per-frame image paths (e.g. nerfstudio ``file_path``),
            ``N`` strings.

    Inputs may be numpy arrays or tensors of any float dtype; they are stored as float64
    CPU tensors. Invalid input raises :class:`ShapeError` / :class:`PoseError` /
    :class:`MirageInputError` (all ``ValueError``) naming the offending frame index.
    """

    T_world_cam: torch.Tensor  # [N, 4, 4] float64
    timestamps: torch.Tensor  # [N] float64 seconds
    K: torch.Tensor | None = None  # [3, 3] or [N, 3, 3] pixel intrinsics, float64
    image_hw: tuple[int, int] | None = None
    file_paths: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        T = _as_f64(self.T_world_cam)
        if T.ndim != 3 or tuple(T.shape[1:]) != (4, 4) or T.shape[0] < 1:
            raise ShapeError(
                f"T_world_cam must have shape [N, 4, 4] with N >= 1, got {tuple(T.shape)}"
            )
        try:
            check_se3(T, "T_world_cam")
        except PoseError:
            for i in range(T.shape[0]):  # find and name the first bad pose
                check_se3(T[i], f"T_world_cam[{i}]")
            raise
        n = T.shape[0]
        ts = _as_f64(self.timestamps)
        if ts.shape != (n,):
            raise ShapeError(f"timestamps must have shape [N] = [{n}], got {tuple(ts.shape)}")
        bad = (~torch.isfinite(ts)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise MirageInputError(f"timestamps[{i}] = {ts[i].item()} is not finite")
        bad = (ts[1:] <= ts[:-1]).nonzero()
        if len(bad):
            i = int(bad[0]) + 1
            raise MirageInputError(
                f"timestamps must be strictly increasing: timestamps[{i}] = {ts[i].item()!r} "
                f"<= timestamps[{i - 1}] = {ts[i - 1].item()!r}"
            )
        K = self.K
        if K is not None:
            K = check_intrinsics(_as_f64(K))
            if K.ndim == 3 and K.shape[0] != n:
                raise ShapeError(
                    f"per-frame K must have shape [N, 3, 3] = [{n}, 3, 3], got {tuple(K.shape)}"
                )
            if K.ndim not in (2, 3):
                raise ShapeError(f"K must have shape [3, 3] or [N, 3, 3], got {tuple(K.shape)}")
        hw = self.image_hw
        if hw is not None:
            hw = tuple(int(v) for v in hw)
            if len(hw) != 2 or min(hw) <= 0:
                raise ShapeError(
                    f"image_hw must be (H, W) with positive sizes, got {self.image_hw}"
                )
        fp = self.file_paths
        if fp is not None:
            fp = tuple(str(p) for p in fp)
            if len(fp) != n:
                raise ShapeError(f"file_paths must have N = {n} entries, got {len(fp)}")
        self.T_world_cam, self.timestamps, self.K, self.image_hw, self.file_paths = T, ts, K, hw, fp

    def __len__(self) -> int:
        return int(self.T_world_cam.shape[0])

    @property
    def T_cam_world(self) -> torch.Tensor:
        """``[N, 4, 4]`` world-to-camera poses (inverse of ``T_world_cam``), float64."""
        return se3_inverse(self.T_world_cam)

    @property
    def centers(self) -> torch.Tensor:
        """``[N, 3]`` camera centres in the world frame."""
        return self.T_world_cam[:, :3, 3]

    def intrinsics(self, i: int) -> torch.Tensor:
        """``[3, 3]`` pixel intrinsics of frame ``i``; raises ``ValueError`` if K is unset."""
        if self.K is None:
            raise MirageInputError("this trajectory has no intrinsics (K is None)")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for a trajectory of {n} frames")
        return self.K if self.K.ndim == 2 else self.K[i]

    def relative_to_first(self) -> Trajectory:
        """Re-express all poses in the first camera's frame (Mirage's world frame).

        ``T_world_cam'[i] = inv(T_world_cam[0]) @ T_world_cam[i]``, so pose 0 becomes the
        identity. Timestamps, intrinsics and file paths are kept.
        """
        T = se3_inverse(self.T_world_cam[0]) @ self.T_world_cam
        T[0] = torch.eye(4, dtype=torch.float64)
        return Trajectory(T, self.timestamps.clone(), self.K, self.image_hw, self.file_paths)

    def subsample(self, stride: int) -> Trajectory:
        """Every ``stride``-th frame, starting with frame 0 (``stride >= 1``)."""
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise MirageInputError(f"stride must be an integer >= 1, got {stride!r}")
        K = self.K[::stride] if self.K is not None and self.K.ndim == 3 else self.K
        fp = self.file_paths[::stride] if self.file_paths is not None else None
        T, ts = self.T_world_cam[::stride], self.timestamps[::stride]
        return Trajectory(T, ts, K, self.image_hw, fp)

    def path_length(self) -> float:
        """Total distance travelled by the camera centre (sum of segment lengths), metres."""
        return float(torch.linalg.norm(self.centers.diff(dim=0), dim=-1).sum())

    def resample(self, num_frames: int) -> Trajectory:
        """``num_frames`` poses at evenly spaced times from the first to the last timestamp:
        camera centres interpolated linearly, rotations by slerp (scipy), in time. A shared
        ``K`` is kept; per-frame intrinsics and file paths are dropped (they do not
        interpolate). Needs ``len(self) >= 2`` and ``num_frames >= 2``."""
        from scipy.spatial.transform import Rotation, Slerp

        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
            raise MirageInputError(f"num_frames must be an integer >= 2, got {num_frames!r}")
        if len(self) < 2:
            raise MirageInputError("resampling needs at least 2 poses")
        t = self.timestamps.numpy()
        tq = np.linspace(t[0], t[-1], num_frames)
        tq[-1] = t[-1]
        T = self.T_world_cam.numpy()
        rot = Slerp(t, Rotation.from_matrix(T[:, :3, :3]))(tq).as_matrix()
        centre = np.stack([np.interp(tq, t, T[:, i, 3]) for i in range(3)], axis=-1)
        out = np.tile(np.eye(4), (num_frames, 1, 1))
        out[:, :3, :3], out[:, :3, 3] = rot, centre
        K = self.K if self.K is not None and self.K.ndim == 2 else None
        return Trajectory(torch.from_numpy(out), torch.from_numpy(tq), K, self.image_hw)


# --------------------------------------------------------------------------- generators


def _is_real(x) -> bool:
    """A finite int/float (not bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _as_f64(x) -> torch.Tensor:
    """Tensor or array-like -> float64 CPU tensor (detached)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _rot_y(angle_rad: float) -> np.ndarray:
    """Rotation about the world Y axis (which points *down*): ``[3, 3]``.

    Applied to the forward axis ``+Z`` it gives ``(sin a, 0, cos a)``: positive ``a`` turns
    the view to the right, negative ``a`` to the left.
    """
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _poses(Rs: list[np.ndarray], ts: list[np.ndarray]) -> torch.Tensor:
    """Stack rotations ``[3, 3]`` and translations ``[3]`` into ``[N, 4, 4]`` poses."""
    return pose_from_rt(torch.from_numpy(np.stack(Rs)), torch.from_numpy(np.stack(ts)))


def make_trajectory(
    name: str,
    num_frames: int = DEFAULT_NUM_FRAMES,
    speed: float | None = None,
    *,
    fps: float = DEFAULT_FPS,
    K: torch.Tensor | None = None,
    image_hw: tuple[int, int] | None = None,
    **kw: float,
) -> Trajectory:
    """Generate a named camera motion starting at the identity pose.

    World = first camera (OpenCV): +X right, -Y up, +Z forward. Frame ``i`` has timestamp
    ``i / fps``. ``speed`` is metres per frame for translations (default 0.04) and degrees per
    frame for pans and orbits (default 1.5).

    Motions (``s = speed``, ``i`` = frame index):

    * ``push_in``: camera centre ``(0, 0, i*s)``, moving forward along +Z; no rotation.
    * ``pull_out``: centre ``(0, 0, -i*s)``, moving backward along -Z; no rotation.
    * ``move_left``: centre ``(-i*s, 0, 0)`` (truck left along -X); no rotation.
    * ``move_right``: centre ``(i*s, 0, 0)`` (truck right along +X); no rotation.
    * ``pan_left``: fixed centre, yaw about the vertical (world Y) axis by ``i*s`` degrees
      turning the view to the LEFT: the optical axis is ``(-sin a, 0, cos a)``. Image content
      moves right (a point straight ahead at frame 0 drifts to larger image x).
    * ``pan_right``: mirror of ``pan_left``: optical axis ``(sin a, 0, cos a)``, image
      content moves left.
    * ``orbit_left``: the camera circles the point ``c = (0, 0, orbit_distance)`` on its
      initial optical axis in the horizontal plane, always looking at ``c``, moving to its
      LEFT: after angle ``a = i*s`` degrees the centre is ``c - d (sin a, 0, cos a)`` (x < 0)
      and the view axis is ``(sin a, 0, cos a)`` (turning right, towards ``c``).
    * ``orbit_right``: mirror of ``orbit_left`` (moves to +X, view turns left).
    * ``loop``: a closed "go out and come back" path in the horizontal plane. With
      ``s = 2 pi i / (num_frames - 1)`` the centre is
      ``(-radius sin s, 0, length (1 - cos s) / 2)``: an ellipse that leaves forward-left,
      reaches depth ``length`` straight ahead at the half-way frame, returns on the right and
      ends at the start. Meanwhile the camera looks around: yaw ``-look_deg * sin s`` (first
      looks left, then right). The last pose equals the first (identity) exactly. Keywords:
      ``radius`` (m, default 0.5), ``length`` (m, default 1.5), ``look_deg`` (default 20).
      ``speed`` does not apply (the shape and ``num_frames`` set it).

    Args:
        name: one of :data:`TRAJECTORY_NAMES`.
        num_frames: number of poses, >= 2.
        speed: per-frame step, > 0 (see above); ``None`` for the default.
        fps: frame rate for the timestamps, > 0.
        K: optional ``[3, 3]`` or ``[N, 3, 3]`` pixel intrinsics to attach.
        image_hw: optional ``(H, W)`` the intrinsics refer to.
        **kw: ``orbit_distance`` (orbits, metres, > 0, default 2.0); ``radius``, ``length``,
            ``look_deg`` (loop).
    Returns:
        :class:`Trajectory` with ``T_world_cam[0]`` exactly the identity.
    Raises:
        ValueError: unknown name (lists the valid ones), bad parameter values, or keywords
            that do not apply to ``name`` (lists those that do).
    """
    if name not in TRAJECTORY_NAMES:
        raise MirageInputError(
            f"unknown trajectory {name!r}; valid names: {', '.join(TRAJECTORY_NAMES)}"
        )
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise MirageInputError(f"num_frames must be an integer >= 2, got {num_frames!r}")
    if not (_is_real(fps) and fps > 0):
        raise MirageInputError(f"fps must be a positive finite number, got {fps!r}")
    allowed = {"orbit_left": {"orbit_distance"}, "orbit_right": {"orbit_distance"},
               "loop": {"radius", "length", "look_deg"}}.get(name, set())
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise MirageInputError(
            f"{name!r} does not take {', '.join(unknown)}; valid extra keywords for {name!r}: "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    for key, val in kw.items():
        ok = _is_real(val) and (val >= 0 if key == "look_deg" else val > 0)
        if not ok:
            raise MirageInputError(f"{key} must be a positive finite number, got {val!r}")
    if name == "loop" and speed is not None:
        raise MirageInputError(
            "'loop' takes no speed; its shape is set by radius, length and look_deg"
        )
    if speed is not None and not (_is_real(speed) and speed > 0):
        raise MirageInputError(f"speed must be a positive finite number, got {speed!r}")

    idx = np.arange(num_frames, dtype=np.float64)
    eye3 = np.eye(3)
    zero = np.zeros(3)
    if name in ("push_in", "pull_out", "move_left", "move_right"):
        step = DEFAULT_TRANSLATION_SPEED if speed is None else float(speed)
        direction = {"push_in": (0, 0, 1), "pull_out": (0, 0, -1),
                     "move_left": (-1, 0, 0), "move_right": (1, 0, 0)}[name]
        Rs = [eye3] * num_frames
        ts = [i * step * np.asarray(direction, dtype=np.float64) for i in idx]
    elif name in ("pan_left", "pan_right"):
        step = math.radians(DEFAULT_ROTATION_SPEED if speed is None else float(speed))
        sign = -1.0 if name == "pan_left" else 1.0
        Rs = [_rot_y(sign * i * step) for i in idx]
        ts = [zero] * num_frames
    elif name in ("orbit_left", "orbit_right"):
        step = math.radians(DEFAULT_ROTATION_SPEED if speed is None else float(speed))
        d = float(kw.get("orbit_distance", DEFAULT_ORBIT_DISTANCE))
        centre = np.array([0.0, 0.0, d])
        sign = 1.0 if name == "orbit_left" else -1.0
        Rs = [_rot_y(sign * i * step) for i in idx]
        ts = [centre - d * R[:, 2] for R in Rs]
    else:  # loop
        radius = float(kw.get("radius", 0.5))
        length = float(kw.get("length", 1.5))
        look = math.radians(float(kw.get("look_deg", 20.0)))
        s = 2.0 * np.pi * idx / (num_frames - 1)
        Rs = [_rot_y(-look * math.sin(a)) for a in s]
        ts = [np.array([-radius * math.sin(a), 0.0, length * (1.0 - math.cos(a)) / 2.0]) for a in s]
    T = _poses(Rs, ts)
    T[0] = torch.eye(4, dtype=torch.float64)
    if name == "loop":
        T[-1] = torch.eye(4, dtype=torch.float64)  # close the loop exactly (sin(2 pi) != 0)
    return Trajectory(T, torch.from_numpy(idx / fps), K, image_hw)
