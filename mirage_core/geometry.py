"""Camera geometry: the one module where Mirage's conventions live.

Conventions (``docs/conventions.md`` restates them; tests in ``test/test_geometry.py`` pin them):

* Camera frame: OpenCV. +X right, +Y down, +Z forward (optical axis).
* Poses are named by direction. ``T_cam_world`` (the paper's extrinsic ``E_t``) maps a world
  point into camera coordinates: ``x_cam = T_cam_world @ x_world``. ``T_world_cam`` is its
  inverse (camera-to-world; its translation is the camera centre in the world).
  All poses are 4x4 homogeneous matrices ``[..., 4, 4]``.
* The first frame of a rollout is the world frame: ``T_world_cam[0] = I``.
* Pixel centres: pixel or latent cell ``(u, v)`` (u = column, v = row) is the homogeneous point
  ``[u + 1/2, v + 1/2, 1]``. A continuous image coordinate ``x`` lies in cell ``floor(x)``.
  The same convention holds for OpenCV's ``projectPoints`` (pixel ``(0, 0)`` covers
  ``[0, 1) x [0, 1)`` in continuous coordinates when ``cx = W / 2`` is the image centre).
* Intrinsics ``K`` (3x3) act on pixel coordinates of an ``H x W`` image. A VAE with spatial
  stride ``s`` maps it to an ``h x w = (H/s) x (W/s)`` latent grid; the latent-resolution
  intrinsics are ``K_l = diag(w/W, h/H, 1) @ K``.
* Quaternion order is always explicit: ROS messages and scipy use ``xyzw``; transforms3d uses
  ``wxyz``. Functions here take ``order="xyzw"`` or ``order="wxyz"``; there is no default
  guess from values.
* Depth is the z coordinate in the camera frame (not the ray length), in metres (or the
  scene's units).

Tensors: geometry runs in torch. Poses are handled in float64 (compose/inverse in double,
then cast); points and depth are usually float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import transforms3d.quaternions as t3q

from mirage_core.errors import PoseError, ShapeError

# Tolerances for validating rotations/quaternions read from files or messages. Printed
# poses (6 decimals) are orthonormal to ~1e-6; 1e-4 leaves headroom while rejecting
# matrices that are not rotations at all.
ROTATION_TOL = 1e-4
QUATERNION_NORM_TOL = 1e-3

# OpenGL/nerfstudio/Blender camera: +X right, +Y up, +Z backward. Right-multiplying a
# camera-to-world pose by this flips the camera's Y and Z axes: GL <-> OpenCV (self-inverse).
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- validation


def _as_tensor(x, dtype=torch.float64) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def check_se3(T: torch.Tensor, name: str = "pose", tol: float = ROTATION_TOL) -> torch.Tensor:
    """Validate homogeneous rigid transforms and return them as float64.

    Args:
        T: ``[..., 4, 4]`` pose(s). Accepts numpy arrays too.
        name: used in error messages (e.g. ``"T_cam_world"``).
    Raises:
        PoseError: wrong shape, non-finite entries, bottom row not ``[0, 0, 0, 1]``, rotation
            not orthonormal within ``tol`` or with determinant -1 (a reflection).
    """
    T = _as_tensor(T)
    if T.ndim < 2 or tuple(T.shape[-2:]) != (4, 4):
        raise PoseError(f"{name} must have shape [..., 4, 4], got {tuple(T.shape)}")
    if not torch.isfinite(T).all():
        raise PoseError(f"{name} contains NaN or inf")
    bottom = T[..., 3, :]
    expected = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
    if not torch.allclose(bottom, expected.expand_as(bottom), atol=tol):
        raise PoseError(
            f"{name} bottom row must be [0, 0, 0, 1], got {bottom.reshape(-1, 4)[0].tolist()}"
        )
    R = T[..., :3, :3]
    eye = torch.eye(3, dtype=T.dtype, device=T.device)
    err = (R.transpose(-1, -2) @ R - eye).abs().amax(dim=(-2, -1))
    if (err > tol).any():
        raise PoseError(
            f"{name} rotation is not orthonormal: max |R^T R - I| = {err.max().item():.3g} "
            f"(tolerance {tol:g})"
        )
    det = torch.linalg.det(R)
    if (det < 0).any():
        raise PoseError(
            f"{name} rotation has determinant {det.min().item():.3g}: a reflection, not a rotation"
        )
    return T


def check_intrinsics(K: torch.Tensor, name: str = "K") -> torch.Tensor:
    """Validate a pinhole intrinsic matrix ``[3, 3]`` (or ``[..., 3, 3]``); returns float64.

    Requires finite entries, ``fx, fy > 0``, zero skew row/bottom ``[0, 0, 1]``.
    """
    K = _as_tensor(K)
    if K.ndim < 2 or tuple(K.shape[-2:]) != (3, 3):
        raise ShapeError(f"{name} must have shape [..., 3, 3], got {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ShapeError(f"{name} contains NaN or inf")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ShapeError(
            f"{name} focal lengths must be positive, got fx={K[..., 0, 0].flatten()[0].item()}, "
            f"fy={K[..., 1, 1].flatten()[0].item()}"
        )
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=K.dtype, device=K.device)
    if (
        not torch.allclose(K[..., 2, :], bottom.expand_as(K[..., 2, :]))
        or (K[..., 1, 0] != 0).any()
    ):
        raise ShapeError(f"{name} must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    return K


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` as float64 ``[3, 3]``."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def intrinsics_from_fov(width: int, height: int, fov_y_deg: float) -> torch.Tensor:
    """Square-pixel intrinsics for an ``H x W`` image with vertical field of view ``fov_y_deg``.

    The principal point is the image centre ``(W/2, H/2)`` under the +1/2 pixel-centre rule.
    """
    fy = 0.5 * height / np.tan(np.deg2rad(fov_y_deg) / 2.0)
    return intrinsics_matrix(fy, fy, width / 2.0, height / 2.0)


def resize_intrinsics(K: torch.Tensor, src_hw: Sequence[int], resized_hw: Sequence[int],
                      top_left: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Pixel intrinsics after resizing an image ``src_hw -> resized_hw`` then cropping.

    Under the +1/2 pixel-centre rule a continuous image coordinate ``u`` (pixel edges at
    integers) becomes ``u * W'/W`` on resizing, so ``fx, cx`` scale by ``W'/W`` and
    ``fy, cy`` by ``H'/H`` with no half-pixel term; a crop whose top-left pixel is
    ``(top, left)`` subtracts it from ``(cy, cx)``.

    Args:
        K: ``[..., 3, 3]`` intrinsics of the ``src_hw`` image.
        src_hw, resized_hw: ``(H, W)`` before and after resizing, in pixels.
        top_left: ``(top, left)`` of the crop in the resized image, in pixels.

    Returns:
        ``[..., 3, 3]`` float64 intrinsics of the resized (and cropped) image.
    """
    K = torch.as_tensor(K).to(torch.float64).clone()
    sy, sx = resized_hw[0] / src_hw[0], resized_hw[1] / src_hw[1]
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 0, 2] = K[..., 0, 2] * sx - top_left[1]
    K[..., 1, 1] *= sy
    K[..., 1, 2] = K[..., 1, 2] * sy - top_left[0]
    return K


def latent_intrinsics(
    K: torch.Tensor, image_hw: Sequence[int], latent_hw: Sequence[int]
) -> torch.Tensor:
    """``K_l = diag(w/W, h/H, 1) @ K``: intrinsics at latent resolution.

    Args:
        K: ``[..., 3, 3]`` pixel intrinsics of an ``image_hw = (H, W)`` image.
        latent_hw: ``(h, w)`` of the latent grid.
    Returns:
        ``[..., 3, 3]`` float64.
    """
    K = check_intrinsics(K)
    H, W = int(image_hw[0]), int(image_hw[1])
    h, w = int(latent_hw[0]), int(latent_hw[1])
    if min(H, W, h, w) <= 0:
        raise ShapeError(f"image_hw {image_hw} and latent_hw {latent_hw} must be positive")
    S = torch.diag(torch.tensor([w / W, h / H, 1.0], dtype=torch.float64, device=K.device))
    return S @ K


# --------------------------------------------------------------------------- SE(3)


def se3_inverse(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transform(s) ``[..., 4, 4]`` (validated), float64: ``[R^T, -R^T t]``."""
    T = check_se3(T)
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1.0
    return out


def se3_compose(T_a_b: torch.Tensor, T_b_c: torch.Tensor) -> torch.Tensor:
    """``T_a_c = T_a_b @ T_b_c`` (both validated, broadcasting over leading dims), float64."""
    return check_se3(T_a_b, "T_a_b") @ check_se3(T_b_c, "T_b_c")


def transform_points(T_b_a: torch.Tensor, points_a: torch.Tensor) -> torch.Tensor:
    """Apply ``T_b_a`` ``[4, 4]`` to points ``[..., 3]`` in frame a; returns ``[..., 3]`` in
    frame b, in the points' dtype. The pose is not re-validated (callers validate once)."""
    T = T_b_a.to(device=points_a.device, dtype=points_a.dtype)
    return points_a @ T[:3, :3].T + T[:3, 3]


def pose_from_rt(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Build ``[..., 4, 4]`` from rotation ``[..., 3, 3]`` and translation ``[..., 3]``."""
    R = _as_tensor(R)
    t = _as_tensor(t)
    T = torch.zeros((*R.shape[:-2], 4, 4), dtype=torch.float64)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def look_at(
    eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, -1.0, 0.0)
) -> torch.Tensor:
    """``T_world_cam`` of an OpenCV camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear *up* in the image (OpenCV's image up is
    camera ``-Y``). The default ``(0, -1, 0)`` suits a world that is itself an OpenCV camera
    frame (the first frame of a rollout), where world -Y is up.
    """
    eye_v = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye_v
    if np.linalg.norm(z) < 1e-12:
        raise PoseError("look_at: eye and target coincide")
    z /= np.linalg.norm(z)
    up_v = np.asarray(up, dtype=np.float64)
    x = np.cross(-up_v, z)  # camera +X (right) = down x forward
    if np.linalg.norm(x) < 1e-9:
        raise PoseError("look_at: viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # camera +Y (down)
    R = np.stack([x, y, z], axis=1)
    return pose_from_rt(torch.from_numpy(R), torch.from_numpy(eye_v))


def opengl_to_opencv_pose(T_world_cam_gl: torch.Tensor) -> torch.Tensor:
    """Convert camera-to-world pose(s) ``[..., 4, 4]`` of an OpenGL camera (+Y up, +Z back;
    nerfstudio, Blender, PyBullet) to an OpenCV camera at the same place. Self-inverse."""
    T = check_se3(T_world_cam_gl, "T_world_cam (OpenGL)")
    return T @ torch.from_numpy(GL_FROM_CV).to(T)


opencv_to_opengl_pose = opengl_to_opencv_pose


# --------------------------------------------------------------------------- projection


def pixel_centers(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous cell centres ``[h, w, 3]``: entry ``[v, u] = (u + 1/2, v + 1/2, 1)``."""
    v, u = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype),
        torch.arange(w, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u + 0.5, v + 0.5, torch.ones_like(u)], dim=-1)


def camera_rays(K: torch.Tensor, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``K^{-1} [u + 1/2, v + 1/2, 1]`` for every cell: ``[h, w, 3]`` rays with z = 1.

    ``K`` must be the intrinsics of the ``h x w`` grid (use :func:`latent_intrinsics`).
    """
    K = check_intrinsics(K)
    Kinv = torch.linalg.inv(K).to(device=device, dtype=torch.float64)
    rays = pixel_centers(h, w, device=device, dtype=torch.float64) @ Kinv.T
    return rays.to(dtype)


def backproject(depth: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor) -> torch.Tensor:
    """Eq. 4: lift every cell of a depth map to a world point.

    ``p_uv = T_world_cam (D(u, v) * K^{-1} [u + 1/2, v + 1/2, 1])``.

    Args:
        depth: ``[h, w]`` z-depth per cell (at the resolution ``K`` describes).
        K: ``[3, 3]`` intrinsics of that ``h x w`` grid.
        T_world_cam: ``[4, 4]`` camera-to-world pose (``E^{-1}``).
    Returns:
        ``[h, w, 3]`` world points in ``depth``'s dtype. Cells with invalid depth produce
        meaningless points; callers select admissible cells (Eq. 6) themselves.
    """
    if depth.ndim != 2:
        raise ShapeError(f"depth must be [h, w], got {tuple(depth.shape)}")
    h, w = depth.shape
    T = check_se3(T_world_cam, "T_world_cam")
    rays = camera_rays(K, h, w, device=depth.device, dtype=torch.float64)
    p_cam = rays * depth.to(torch.float64)[..., None]
    return transform_points(T.to(depth.device), p_cam).to(
        depth.dtype if depth.is_floating_point() else torch.float32
    )


def project(
    points_world: torch.Tensor, K: torch.Tensor, T_cam_world: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous pinhole projection (Eq. 5 before the floor).

    Args:
        points_world: ``[N, 3]`` world points.
        K: ``[3, 3]`` intrinsics of the target grid (pixel or latent).
        T_cam_world: ``[4, 4]`` world-to-camera pose (``E_t``).
    Returns:
        ``xy`` ``[N, 2]`` continuous image coordinates (cell of a point = ``floor(xy)``) and
        ``z`` ``[N]`` camera depth. Points with ``z <= 0`` are behind the camera; their ``xy``
        is meaningless (callers must mask them with ``z > 0``).
    """
    if points_world.ndim != 2 or points_world.shape[-1] != 3:
        raise ShapeError(f"points_world must be [N, 3], got {tuple(points_world.shape)}")
    T = check_se3(T_cam_world, "T_cam_world")
    K = check_intrinsics(K)
    q = transform_points(T.to(points_world.device), points_world)
    z = q[:, 2]
    Kd = K.to(device=q.device, dtype=q.dtype)
    xy = (q @ Kd.T)[:, :2] / z[:, None]
    return xy, z


def project_to_cells(
    points_world: torch.Tensor, K: torch.Tensor, T_cam_world: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 cell assignment: ``pi(q) = floor((K q)_{x,y} / q_z)``.

    Returns:
        ``cell`` ``[N]`` int64 linear index ``v * w + u`` or ``-1`` for points behind the camera
        (``z <= 0``) or outside the ``h x w`` grid; and ``z`` ``[N]``.
    """
    xy, z = project(points_world, K, T_cam_world)
    uv = torch.floor(xy)
    ok = (z > 0) & torch.isfinite(uv).all(dim=1)
    ok &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    uv = torch.where(ok[:, None], uv, torch.zeros_like(uv)).long()
    cell = uv[:, 1] * w + uv[:, 0]
    return torch.where(ok, cell, torch.full_like(cell, -1)), z


# --------------------------------------------------------------------------- quaternions


def _check_order(order: str) -> None:
    if order not in ("xyzw", "wxyz"):
        raise ValueError(
            f"quaternion order must be 'xyzw' (ROS, scipy) or 'wxyz' (transforms3d), got {order!r}"
        )


def quat_convert(q, from_order: str, to_order: str) -> np.ndarray:
    """Reorder quaternion(s) ``[..., 4]`` between ``"xyzw"`` and ``"wxyz"``."""
    _check_order(from_order)
    _check_order(to_order)
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ShapeError(f"quaternion must have 4 components, got shape {q.shape}")
    if from_order == to_order:
        return q.copy()
    if from_order == "xyzw":
        return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def quat_to_matrix(q, order: str, tol: float = QUATERNION_NORM_TOL) -> np.ndarray:
    """Unit quaternion ``[4]`` in the stated ``order`` -> rotation matrix ``[3, 3]`` (float64).

    A quaternion whose norm differs from 1 by more than ``tol`` is rejected (ROS treats
    non-unit quaternions as invalid); within ``tol`` it is normalised.
    """
    q_wxyz = quat_convert(q, order, "wxyz")
    if q_wxyz.ndim != 1:
        raise ShapeError(f"quat_to_matrix takes one quaternion [4], got shape {q_wxyz.shape}")
    if not np.isfinite(q_wxyz).all():
        raise PoseError(f"quaternion contains NaN or inf: {q_wxyz.tolist()}")
    n = float(np.linalg.norm(q_wxyz))
    if abs(n - 1.0) > tol:
        raise PoseError(
            f"quaternion ({order}) {np.asarray(q).tolist()} has norm {n:.6g}; "
            "expected a unit quaternion"
        )
    return t3q.quat2mat(q_wxyz / n)


def matrix_to_quat(R, order: str) -> np.ndarray:
    """Rotation ``[3, 3]`` -> unit quaternion ``[4]`` in the stated ``order``, with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ShapeError(f"rotation must be [3, 3], got {R.shape}")
    check_se3(pose_from_rt(torch.from_numpy(R), torch.zeros(3)), "rotation")
    q = t3q.mat2quat(R)
    if q[0] < 0:
        q = -q
    return quat_convert(q, "wxyz", order)


def pose_from_translation_quat(t, q, order: str) -> torch.Tensor:
    """``[4, 4]`` pose from translation ``[3]`` and quaternion ``[4]`` in the stated order."""
    t = np.asarray(t, dtype=np.float64)
    if t.shape != (3,) or not np.isfinite(t).all():
        raise PoseError(f"translation must be 3 finite numbers, got {t.tolist()}")
    return pose_from_rt(torch.from_numpy(quat_to_matrix(q, order)), torch.from_numpy(t))


def pose_to_translation_quat(T, order: str) -> tuple[np.ndarray, np.ndarray]:
    """``[4, 4]`` pose -> (translation ``[3]``, quaternion ``[4]`` in the stated order)."""
    T = check_se3(T).cpu().numpy()
    return T[:3, 3].copy(), matrix_to_quat(T[:3, :3], order)
