"""Trajectory container and camera-motion generators (OpenCV frame, world = first camera)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError, PoseError, ShapeError
from mirage_core.geometry import check_se3, intrinsics_matrix, project
from mirage_core.trajectory import TRAJECTORY_NAMES, Trajectory, make_trajectory

EYE4 = torch.eye(4, dtype=torch.float64)
K = intrinsics_matrix(100.0, 100.0, 64.0, 48.0)


def centres(traj: Trajectory) -> torch.Tensor:
    return traj.T_world_cam[:, :3, 3]


def project_in(traj: Trajectory, i: int, point) -> tuple[float, float, float]:
    """Image (x, y) and depth of a world point in frame i."""
    xy, z = project(torch.tensor([point], dtype=torch.float64), K, traj.T_cam_world[i])
    return xy[0, 0].item(), xy[0, 1].item(), z[0].item()


@pytest.mark.parametrize("name", TRAJECTORY_NAMES)
def test_generators_start_at_identity_and_are_se3(name):
    traj = make_trajectory(name, num_frames=13)
    assert len(traj) == 13
    assert torch.equal(traj.T_world_cam[0], EYE4)
    assert traj.T_world_cam.dtype == torch.float64
    check_se3(traj.T_world_cam)
    assert torch.allclose(traj.timestamps, torch.arange(13, dtype=torch.float64) / 10.0)
    # not degenerate: the camera moves or turns
    assert not torch.allclose(traj.T_world_cam[-1 if name != "loop" else 6], EYE4)


@pytest.mark.parametrize(
    ("name", "axis", "sign"),
    [("push_in", 2, 1), ("pull_out", 2, -1), ("move_left", 0, -1), ("move_right", 0, 1)],
)
def test_translations_move_in_the_stated_direction(name, axis, sign):
    traj = make_trajectory(name, num_frames=5, speed=0.1)
    c = centres(traj)
    expected = torch.zeros(5, 3, dtype=torch.float64)
    expected[:, axis] = sign * 0.1 * torch.arange(5)
    assert torch.allclose(c, expected, atol=1e-12)
    eye3 = torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    assert torch.allclose(traj.T_world_cam[:, :3, :3], eye3)
    assert traj.path_length() == pytest.approx(0.4)


def test_push_in_point_ahead_gets_closer_and_move_right_shifts_image_left():
    p = [0.0, 0.0, 3.0]
    push = make_trajectory("push_in", num_frames=5, speed=0.1)
    assert project_in(push, 4, p)[2] == pytest.approx(2.6)
    right = make_trajectory("move_right", num_frames=5, speed=0.1)
    x0, _, _ = project_in(right, 0, p)
    x1, _, _ = project_in(right, 4, p)
    assert x0 == pytest.approx(64.0) and x1 < x0 - 5  # camera right -> content left


@pytest.mark.parametrize(("name", "image_dir"), [("pan_left", 1), ("pan_right", -1)])
def test_pans_rotate_in_place_and_content_moves_opposite(name, image_dir):
    traj = make_trajectory(name, num_frames=11, speed=2.0)
    assert torch.allclose(centres(traj), torch.zeros(11, 3, dtype=torch.float64))
    p = [0.0, 0.0, 5.0]  # straight ahead of the first camera
    x0, y0, _ = project_in(traj, 0, p)
    x1, y1, z1 = project_in(traj, 10, p)
    assert z1 > 0
    assert image_dir * (x1 - x0) > 30  # pan_left: content moves right
    assert y1 == pytest.approx(y0)  # pure yaw about the vertical: no vertical image motion
    # total yaw is 20 degrees, about world Y; optical axis turns to -X for pan_left
    fwd = traj.T_world_cam[10, :3, 2]
    assert fwd[0].item() == pytest.approx(-image_dir * math.sin(math.radians(20.0)))
    assert fwd[1].item() == pytest.approx(0.0)
    # camera Y (image down) stays world +Y (down): the horizon does not roll
    assert torch.allclose(traj.T_world_cam[:, :3, 1], torch.tensor([0.0, 1.0, 0.0]).double())


@pytest.mark.parametrize(("name", "side"), [("orbit_left", -1), ("orbit_right", 1)])
def test_orbits_circle_the_centre_and_keep_looking_at_it(name, side):
    d = 3.0
    traj = make_trajectory(name, num_frames=16, speed=3.0, orbit_distance=d)
    centre = torch.tensor([0.0, 0.0, d], dtype=torch.float64)
    c = centres(traj)
    radius = torch.linalg.norm(c - centre, dim=1)
    assert torch.allclose(radius, torch.full((16,), d, dtype=torch.float64))
    assert torch.allclose(c[:, 1], torch.zeros(16, dtype=torch.float64))
    assert side * c[-1, 0].item() > 0.5  # orbit_left moves to -X (camera's left)
    for i in range(16):  # the orbit centre stays at the principal point
        x, y, z = project_in(traj, i, centre.tolist())
        assert (x, y, z) == pytest.approx((64.0, 48.0, d))
    assert torch.allclose(traj.T_world_cam[:, :3, 1], torch.tensor([0.0, 1.0, 0.0]).double())
    angle = math.radians(45.0)
    expected = [side * d * math.sin(angle), 0.0, d - d * math.cos(angle)]
    assert c[-1].tolist() == pytest.approx(expected)


def test_loop_is_closed_smooth_and_goes_out():
    traj = make_trajectory("loop", num_frames=41, radius=0.5, length=2.0, look_deg=15.0)
    assert torch.equal(traj.T_world_cam[-1], EYE4)
    c = centres(traj)
    assert c[20].tolist() == pytest.approx([0.0, 0.0, 2.0], abs=1e-12)  # furthest point ahead
    assert c[10, 0].item() == pytest.approx(-0.5)  # leaves on the left
    assert c[30, 0].item() == pytest.approx(0.5)  # returns on the right
    steps = torch.linalg.norm(c.diff(dim=0), dim=1)
    assert steps.max() < 2.0 * steps.min() + 1e-9  # no jumps, including the last step
    yaw = torch.atan2(traj.T_world_cam[:, 0, 2], traj.T_world_cam[:, 2, 2])
    assert math.degrees(yaw[10].item()) == pytest.approx(-15.0)  # looks left on the way out
    assert traj.path_length() > 4.0


def test_generator_validation_lists_options():
    with pytest.raises(ValueError, match=r"push_in.*loop"):
        make_trajectory("zoom")
    with pytest.raises(ValueError, match="num_frames"):
        make_trajectory("push_in", num_frames=1)
    with pytest.raises(ValueError, match="speed"):
        make_trajectory("pan_left", speed=-1.0)
    with pytest.raises(ValueError, match="orbit_distance"):
        make_trajectory("push_in", orbit_distance=2.0)
    with pytest.raises(ValueError, match="orbit_distance"):
        make_trajectory("orbit_left", orbit_distance=0.0)
    with pytest.raises(ValueError, match="radius, length"):
        make_trajectory("loop", speed=0.1)
    with pytest.raises(ValueError, match="fps"):
        make_trajectory("push_in", fps=0.0)


def test_trajectory_validation_names_index():
    T = make_trajectory("push_in", num_frames=4).T_world_cam.clone()
    ts = torch.arange(4, dtype=torch.float64)
    bad = T.clone()
    bad[2, 0, 0] = 2.0
    with pytest.raises(PoseError, match=r"T_world_cam\[2\]"):
        Trajectory(bad, ts)
    with pytest.raises(MirageInputError, match=r"timestamps\[3\]"):
        Trajectory(T, torch.tensor([0.0, 1.0, 2.0, 2.0]))
    with pytest.raises(MirageInputError, match=r"timestamps\[1\].*not finite"):
        Trajectory(T, torch.tensor([0.0, math.nan, 2.0, 3.0]))
    with pytest.raises(ShapeError, match="timestamps"):
        Trajectory(T, ts[:3])
    with pytest.raises(ShapeError, match=r"\[N, 4, 4\]"):
        Trajectory(T[:, :3], ts)
    with pytest.raises(ShapeError, match="per-frame K"):
        Trajectory(T, ts, K=K.expand(3, 3, 3))


def test_inverse_intrinsics_subsample():
    traj = make_trajectory("orbit_left", num_frames=9, K=K, image_hw=(96, 128))
    assert torch.allclose(traj.T_cam_world @ traj.T_world_cam, EYE4.expand(9, 4, 4), atol=1e-12)
    assert torch.equal(traj.intrinsics(5), K)
    sub = traj.subsample(4)
    assert len(sub) == 3
    assert torch.equal(sub.T_world_cam, traj.T_world_cam[[0, 4, 8]])
    assert torch.equal(sub.timestamps, traj.timestamps[[0, 4, 8]])
    perframe = Trajectory(traj.T_world_cam, traj.timestamps, K=K * torch.ones(9, 1, 1))
    assert perframe.subsample(3).K.shape == (3, 3, 3)
    with pytest.raises(ValueError, match="stride"):
        traj.subsample(0)
    with pytest.raises(ValueError, match="no intrinsics"):
        make_trajectory("push_in").intrinsics(0)


def test_relative_to_first():
    base = make_trajectory("orbit_right", num_frames=6, speed=5.0)
    offset = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(0.3), math.sin(0.3)
    offset[:3, :3] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    offset[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
    moved = Trajectory(offset @ base.T_world_cam, base.timestamps)
    rel = moved.relative_to_first()
    assert torch.equal(rel.T_world_cam[0], EYE4)
    assert torch.allclose(rel.T_world_cam, base.T_world_cam, atol=1e-12)
    assert rel.path_length() == pytest.approx(base.path_length())
    # relative motion between frames is unchanged
    a = np.linalg.inv(moved.T_world_cam[1].numpy()) @ moved.T_world_cam[4].numpy()
    b = np.linalg.inv(rel.T_world_cam[1].numpy()) @ rel.T_world_cam[4].numpy()
    assert np.allclose(a, b, atol=1e-12)


def test_resample_keeps_endpoints_and_interpolates_in_time():
    # Two poses 1 s apart: a 90 degree yaw and a 2 m move; the midpoint is half of each.
    from scipy.spatial.transform import Rotation

    T = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    T[1, :3, :3] = torch.from_numpy(Rotation.from_euler("y", 90, degrees=True).as_matrix())
    T[1, :3, 3] = torch.tensor([2.0, 0.0, 0.0])
    traj = Trajectory(T, torch.tensor([0.0, 1.0]))
    r = traj.resample(3)
    assert len(r) == 3
    torch.testing.assert_close(r.T_world_cam[0], T[0])
    torch.testing.assert_close(r.T_world_cam[2], T[1])
    torch.testing.assert_close(r.timestamps, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    mid = Rotation.from_matrix(r.T_world_cam[1, :3, :3].numpy()).as_euler("xyz", degrees=True)
    np.testing.assert_allclose(mid, [0.0, 45.0, 0.0], atol=1e-9)
    torch.testing.assert_close(r.T_world_cam[1, :3, 3], torch.tensor([1.0, 0, 0],
                                                                      dtype=torch.float64))


def test_resample_at_the_original_times_is_the_identity():
    traj = make_trajectory("orbit_left", 9, fps=8.0)
    torch.testing.assert_close(traj.resample(9).T_world_cam, traj.T_world_cam)
    with pytest.raises(ValueError, match="num_frames"):
        traj.resample(1)
