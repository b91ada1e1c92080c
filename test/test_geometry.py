"""Pins the conventions of mirage_core.geometry (OpenCV frame, +1/2 pixel centres, K_l,
SE(3) validation, quaternion orders)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mirage_core.errors import PoseError, ShapeError
from mirage_core.geometry import (
    backproject,
    check_se3,
    intrinsics_matrix,
    latent_intrinsics,
    look_at,
    matrix_to_quat,
    opengl_to_opencv_pose,
    pose_from_rt,
    pose_from_translation_quat,
    pose_to_translation_quat,
    project,
    project_to_cells,
    quat_convert,
    quat_to_matrix,
    se3_compose,
    se3_inverse,
)


def random_pose(rng, scale=1.0):
    R = Rotation.random(random_state=rng).as_matrix()
    return pose_from_rt(torch.from_numpy(R), torch.from_numpy(rng.normal(size=3) * scale))


def test_latent_intrinsics_paper_resolution():
    K = intrinsics_matrix(1000.0, 900.0, 640.0, 352.0)
    K_l = latent_intrinsics(K, (704, 1280), (44, 80))
    assert torch.allclose(K_l, intrinsics_matrix(1000 / 16, 900 / 16, 40.0, 22.0).double())


def test_pixel_centres_project_back_to_half_offsets():
    K = intrinsics_matrix(3.0, 3.0, 1.0, 1.0)  # a 2x2 grid
    depth = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    T_world_cam = torch.eye(4, dtype=torch.float64)
    pts = backproject(depth, K, T_world_cam)
    # Cell (u, v) = (0, 0) lies on the ray through (0.5, 0.5): x = (0.5 - cx) / fx * d
    assert torch.allclose(pts[0, 0], torch.tensor([-0.5 / 3, -0.5 / 3, 1.0]))
    xy, z = project(pts.reshape(-1, 3), K, se3_inverse(T_world_cam))
    expected = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]])
    assert torch.allclose(xy, expected, atol=1e-6)
    assert torch.allclose(z, depth.flatten())
    cell, _ = project_to_cells(pts.reshape(-1, 3), K, se3_inverse(T_world_cam), 2, 2)
    assert cell.tolist() == [0, 1, 2, 3]  # v * w + u, row-major


def test_backproject_then_project_round_trip_random_pose():
    rng = np.random.default_rng(0)
    T_world_cam = random_pose(rng, 3.0)
    K = intrinsics_matrix(50.0, 55.0, 40.0, 22.0)
    depth = torch.from_numpy(rng.uniform(0.5, 8.0, size=(44, 80))).float()
    pts = backproject(depth, K, T_world_cam)
    cell, z = project_to_cells(pts.reshape(-1, 3), K, se3_inverse(T_world_cam), 44, 80)
    assert torch.equal(cell, torch.arange(44 * 80))
    assert torch.allclose(z, depth.flatten(), rtol=1e-5)


def test_project_agrees_with_cv2_projectPoints():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    T_cam_world = random_pose(rng, 2.0)
    K = intrinsics_matrix(500.0, 480.0, 320.5, 241.0)
    pts_cam = rng.uniform([-1, -1, 2], [1, 1, 6], size=(100, 3))
    pts_world = (se3_inverse(T_cam_world).numpy() @ np.c_[pts_cam, np.ones(100)].T).T[:, :3]
    xy, z = project(torch.from_numpy(pts_world), K, T_cam_world)
    rvec, _ = cv2.Rodrigues(T_cam_world[:3, :3].numpy())
    ref, _ = cv2.projectPoints(pts_world, rvec, T_cam_world[:3, 3].numpy(), K.numpy(), None)
    assert np.allclose(xy.numpy(), ref[:, 0, :], atol=1e-6)
    assert np.allclose(z.numpy(), pts_cam[:, 2])


def test_opencv_frame_axes():
    # A point right of and below the optical axis lands right of and below the principal point.
    K = intrinsics_matrix(100.0, 100.0, 50.0, 50.0)
    xy, z = project(torch.tensor([[0.1, 0.2, 1.0]], dtype=torch.float64), K, torch.eye(4))
    assert xy[0, 0] > 50 and xy[0, 1] > 50 and z[0] == 1.0


def test_se3_inverse_and_compose():
    rng = np.random.default_rng(2)
    A, B = random_pose(rng), random_pose(rng)
    assert torch.allclose(
        se3_compose(A, se3_inverse(A)), torch.eye(4, dtype=torch.float64), atol=1e-12
    )
    assert torch.allclose(
        se3_inverse(se3_compose(A, B)), se3_compose(se3_inverse(B), se3_inverse(A))
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.diag(torch.tensor([1.0, 1.0, 1.1, 1.0])), "orthonormal"),
        (torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0])), "reflection"),
        (torch.full((4, 4), float("nan")), "NaN"),
        (torch.eye(3), r"\[\.\.\., 4, 4\]"),
    ],
)
def test_check_se3_rejects(bad, match):
    with pytest.raises(PoseError, match=match):
        check_se3(bad)


def test_bad_bottom_row_rejected():
    T = torch.eye(4)
    T[3, 0] = 0.5
    with pytest.raises(PoseError, match="bottom row"):
        se3_inverse(T)


def test_quaternion_orders_round_trip_and_agree_with_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rot = Rotation.random(random_state=rng)
        q_xyzw = rot.as_quat()  # scipy: x, y, z, w
        q_wxyz = quat_convert(q_xyzw, "xyzw", "wxyz")
        assert np.allclose(q_wxyz, [q_xyzw[3], *q_xyzw[:3]])
        assert np.allclose(quat_convert(q_wxyz, "wxyz", "xyzw"), q_xyzw)
        R = rot.as_matrix()
        assert np.allclose(quat_to_matrix(q_xyzw, "xyzw"), R)
        assert np.allclose(quat_to_matrix(q_wxyz, "wxyz"), R)
        back = matrix_to_quat(R, "xyzw")
        assert np.allclose(back, q_xyzw) or np.allclose(back, -q_xyzw)
        assert back[3] >= 0


def test_quaternion_order_matters():
    q = np.array([0.0, 0.0, np.sin(0.25), np.cos(0.25)])  # xyzw: rotation about z
    assert not np.allclose(quat_to_matrix(q, "xyzw"), quat_to_matrix(q, "wxyz"))
    with pytest.raises(ValueError, match="order"):
        quat_to_matrix(q, "zyx")


def test_non_unit_quaternion_rejected():
    with pytest.raises(PoseError, match="norm"):
        quat_to_matrix([0.0, 0.0, 0.0, 2.0], "xyzw")


def test_pose_translation_quaternion_round_trip():
    rng = np.random.default_rng(4)
    T = random_pose(rng, 5.0)
    t, q = pose_to_translation_quat(T, "xyzw")
    assert torch.allclose(pose_from_translation_quat(t, q, "xyzw"), T, atol=1e-12)


def test_look_at_puts_target_on_principal_point():
    T_world_cam = look_at([1.0, -0.5, -2.0], [0.3, 0.2, 1.5])
    K = intrinsics_matrix(100.0, 100.0, 64.0, 48.0)
    xy, z = project(
        torch.tensor([[0.3, 0.2, 1.5]], dtype=torch.float64), K, se3_inverse(T_world_cam)
    )
    assert torch.allclose(xy, torch.tensor([[64.0, 48.0]], dtype=torch.float64), atol=1e-9)
    assert z[0] > 0


def test_look_at_straight_ahead_is_identity():
    # OpenCV world (first camera): -Y is up; looking down +Z from the origin is the identity.
    assert torch.allclose(
        look_at([0.0, 0.0, 0.0], [0.0, 0.0, 1.0]), torch.eye(4, dtype=torch.float64)
    )


def test_opengl_to_opencv():
    # An OpenGL camera at the origin looks down -Z; the OpenCV camera at the same place looks
    # down +Z of its own frame, i.e. world -Z.
    T_cv = opengl_to_opencv_pose(torch.eye(4))
    assert torch.allclose(T_cv[:3, 2], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    assert torch.allclose(opengl_to_opencv_pose(T_cv), torch.eye(4, dtype=torch.float64))


def test_latent_intrinsics_rejects_bad_K():
    with pytest.raises(ShapeError):
        latent_intrinsics(torch.eye(4), (16, 16), (1, 1))
    with pytest.raises(ShapeError, match="positive"):
        latent_intrinsics(intrinsics_matrix(-1.0, 1.0, 0.0, 0.0), (16, 16), (1, 1))


def test_core_never_imports_rclpy():
    root = Path(__file__).resolve().parents[1] / "mirage_core"
    # no import of rclpy or of ROS interfaces anywhere in the core, even a lazy one (the CLI's
    # ROS commands import mirage_ros lazily, which is where rclpy lives)
    pattern = re.compile(r"^\s*(import|from)\s+(rclpy|mirage\.(msg|srv|action))\b", re.M)
    offenders = [p for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders, f"mirage_core imports rclpy or ROS interfaces in {offenders}"
    code = (
        "import sys, pkgutil, importlib, mirage_core\n"
        "for m in pkgutil.walk_packages(mirage_core.__path__, 'mirage_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'rclpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
