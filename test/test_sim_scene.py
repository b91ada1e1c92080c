"""PyBullet simulated RGB-D camera: geometry of the rendered frames against mirage_core.geometry."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("pybullet")

from mirage_core.geometry import backproject, intrinsics_from_fov, intrinsics_matrix, project
from mirage_core.sim import PyBulletScene, SimFrame
from mirage_core.sim.pybullet_scene import pose_looking_at

H, W = 128, 224


@pytest.fixture(scope="module")
def room():
    with PyBulletScene("room", seed=0, dynamic=True) as scene:
        yield scene


@pytest.fixture(scope="module")
def static_room():
    with PyBulletScene("room", seed=0, dynamic=False) as scene:
        yield scene


def _ids(scene: PyBulletScene, name: str) -> list[int]:
    return [b for b, n in scene.body_names.items() if n == name]


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    R = np.eye(4)
    R[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return R


def _second_view(T_a: np.ndarray) -> np.ndarray:
    """T_a moved by (0.3, 0.15, -0.1) m, yawed 8 deg about world z and pitched 4 deg."""
    a = np.deg2rad(4.0)
    pitch = np.eye(4)
    pitch[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    T_b = _rot_z(8.0) @ T_a @ pitch
    T_b[:3, 3] = T_a[:3, 3] + [0.3, 0.15, -0.1]
    return T_b


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample ``img`` ``[H, W]`` at continuous coords ``xy`` ``[N, 2]`` (pixel centres at +1/2);
    NaN outside the interior or next to a non-finite pixel."""
    x, y = xy[:, 0] - 0.5, xy[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < img.shape[1]) & (y0 + 1 < img.shape[0])
    x0, y0 = np.where(ok, x0, 0), np.where(ok, y0, 0)
    ax, ay = x - x0, y - y0
    out = (
        img[y0, x0] * (1 - ax) * (1 - ay)
        + img[y0, x0 + 1] * ax * (1 - ay)
        + img[y0 + 1, x0] * (1 - ax) * ay
        + img[y0 + 1, x0 + 1] * ax * ay
    )
    return np.where(ok, out, np.nan)


def _reprojection_stats(scene, K, T_a, T_b, K_render_b=None):
    """Back-project view A's depth, project into view B and compare.

    Returns the fractions of A's pixels visible in B whose projected depth matches B's depth
    (inverse depth interpolated bilinearly at the projected point, exact for planes; within
    0.5 %) and whose colour matches B's nearest pixel (within 20/255 per channel), and the
    number of such pixels.
    """
    fa = scene.render(T_a, K, H, W)
    fb = scene.render(T_b, K if K_render_b is None else K_render_b, H, W)
    valid = np.isfinite(fa.depth)
    pts = backproject(
        torch.from_numpy(np.where(valid, fa.depth, 1.0)), torch.from_numpy(K), torch.from_numpy(T_a)
    )
    pts = pts.reshape(-1, 3)[torch.from_numpy(valid.reshape(-1))]
    xy, z = project(pts.double(), torch.from_numpy(K), torch.from_numpy(np.linalg.inv(T_b)))
    xy, z = xy.numpy(), z.numpy()
    d_b = 1.0 / _bilinear(1.0 / fb.depth.astype(np.float64), xy)
    inside = (z > 0) & np.isfinite(d_b)
    xy, z, d_b = xy[inside], z[inside], d_b[inside]
    # Points hidden in B lie clearly behind B's surface (d_b < z); leave them out.
    visible = d_b > z * (1 - 0.05)
    depth_ok = (np.abs(d_b - z) / z < 0.005)[visible].mean()
    uv = np.floor(xy).astype(int)
    rgb_a = fa.rgb.reshape(-1, 3)[valid.reshape(-1)][inside].astype(int)
    rgb_b = fb.rgb[uv[:, 1], uv[:, 0]].astype(int)
    colour_ok = (np.abs(rgb_a - rgb_b).max(axis=1) <= 20)[visible].mean()
    return depth_ok, colour_ok, visible.sum()


def test_frame_types_and_shapes(room):
    K = intrinsics_from_fov(W, H, 60.0).numpy()
    f = room.render(room.default_start_pose(), K, H, W, time=0.25)
    assert isinstance(f, SimFrame)
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (H, W) and f.depth.dtype == np.float32
    assert f.segmentation.shape == (H, W) and f.segmentation.dtype == np.int32
    assert f.dynamic_mask.dtype == bool and f.sky_mask.dtype == bool
    assert f.T_world_cam.shape == (4, 4) and f.T_world_cam.dtype == np.float64
    assert f.K.shape == (3, 3) and f.time == 0.25
    assert np.isfinite(f.depth).all(), "a closed room has geometry at every pixel"
    assert not f.sky_mask.any()
    assert len(np.unique(f.rgb.reshape(-1, 3), axis=0)) > 50, "scene should be colourful"


@pytest.mark.parametrize(
    "K",
    [
        intrinsics_from_fov(W, H, 60.0).numpy(),
        # principal point off-centre and fx != fy
        intrinsics_matrix(150.0, 140.0, W / 2 + 23.0, H / 2 - 11.5).numpy(),
    ],
    ids=["centred", "offset_pp"],
)
def test_two_view_reprojection_consistency(static_room, K):
    T_a = static_room.default_start_pose()
    T_b = _second_view(T_a)
    depth_ok, colour_ok, n = _reprojection_stats(static_room, K, T_a, T_b)
    assert n > 0.5 * H * W
    assert depth_ok > 0.95, depth_ok
    assert colour_ok > 0.9, colour_ok


@pytest.mark.parametrize(("dcx", "dcy"), [(0.5, 0.0), (0.0, 0.5)])
def test_half_pixel_error_breaks_consistency(static_room, dcx, dcy):
    """The check is sensitive: B rendered with a principal point 1/2 px off (a pixel-centre
    mistake) fails it."""
    K = intrinsics_from_fov(W, H, 60.0).numpy()
    T_a = static_room.default_start_pose()
    K_bad = K.copy()
    K_bad[0, 2] += dcx
    K_bad[1, 2] += dcy
    depth_ok, _, _ = _reprojection_stats(static_room, K, T_a, _second_view(T_a), K_bad)
    assert depth_ok < 0.9, depth_ok


@pytest.mark.parametrize(
    ("h", "w", "dcx", "dcy"), [(H, W, 0.0, 0.0), (77, 101, 0.0, 0.0), (H, W, 31.5, -17.25)]
)
def test_floor_depth_pins_pixel_centres(static_room, h, w, dcx, dcy):
    """Analytic floor depth per row and per column: pixel (u, v) is sampled at (u+1/2, v+1/2)."""
    K = intrinsics_matrix(0.8 * w, 0.8 * w, w / 2 + dcx, h / 2 + dcy).numpy()
    floor = _ids(static_room, "floor")
    cam_h = 1.5
    # level camera looking along +x: floor depth depends on the row only
    f = static_room.render(pose_looking_at((-3, 0, cam_h), (-2, 0, cam_h)), K, h, w)
    v = np.arange(h) + 0.5 - K[1, 2]
    m = np.isin(f.segmentation, floor) & (v[:, None] > 1.0)
    z_expected = np.broadcast_to((cam_h * K[1, 1] / np.where(v > 0, v, 1.0))[:, None], (h, w))
    assert m.sum() > 100
    np.testing.assert_allclose(f.depth[m], z_expected[m], rtol=2e-4)
    # camera rolled 90 deg (image up = world +y): floor depth depends on the column only
    f = static_room.render(pose_looking_at((-3, 0, cam_h), (-2, 0, cam_h), up=(0, 1, 0)), K, h, w)
    u = K[0, 2] - (np.arange(w) + 0.5)
    m = np.isin(f.segmentation, floor) & (u[None, :] > 1.0)
    z_expected = np.broadcast_to(cam_h * K[0, 0] / np.where(u > 0, u, 1.0), (h, w))
    assert m.sum() > 100
    np.testing.assert_allclose(f.depth[m], z_expected[m], rtol=2e-4)


def test_depth_of_known_wall(static_room):
    """Camera 3 m in front of the +x wall (inner face at x = 4), looking straight at it."""
    K = intrinsics_from_fov(W, H, 50.0).numpy()
    f = static_room.render(pose_looking_at((1.0, 0.5, 1.2), (2.0, 0.5, 1.2)), K, H, W)
    wall = np.isin(f.segmentation, _ids(static_room, "wall_+x"))
    assert wall.mean() > 0.2
    np.testing.assert_allclose(f.depth[wall], 3.0, rtol=1e-4)
    panel = np.isin(f.segmentation, _ids(static_room, "panel"))
    assert panel.mean() > 0.1
    # panels stand 2 cm proud of the wall (their thin side faces read between 2.98 and 3)
    assert (np.abs(f.depth[panel] - 2.98) < 1e-4).mean() > 0.9
    # yawed 30 deg: z-depth of the plane x = 4 is 3 / (cos30 + tan(ray) sin30) per column
    yaw = np.deg2rad(30.0)
    T = pose_looking_at((1.0, 0.5, 1.2), (1.0 + np.cos(yaw), 0.5 + np.sin(yaw), 1.2))
    f = static_room.render(T, K, H, W)
    wall = np.isin(f.segmentation, _ids(static_room, "wall_+x"))
    x_over_z = (np.arange(W) + 0.5 - K[0, 2]) / K[0, 0]
    # camera +x (image right) points to world -y rotated: x-component of direction is sin(yaw)
    z_exp = 3.0 / (np.cos(yaw) + x_over_z * np.sin(yaw))
    z_exp = np.broadcast_to(z_exp[None, :], (H, W))
    np.testing.assert_allclose(f.depth[wall], z_exp[wall], rtol=2e-4)


def test_dynamic_object_moves_and_is_masked(room):
    K = intrinsics_from_fov(W, H, 70.0).numpy()
    T = pose_looking_at((-2.5, -2.0, 2.5), (0.0, 0.0, 0.6))
    f0 = room.render(T, K, H, W, time=0.0)
    f1 = room.render(T, K, H, W, time=1.0)
    assert room.dynamic_ids
    ball = room.dynamic_ids[0]
    for f, t in ((f0, 0.0), (f1, 1.0)):
        assert f.dynamic_mask.sum() > 50
        np.testing.assert_array_equal(f.dynamic_mask, f.segmentation == ball)
        xy, _ = project(
            torch.from_numpy(room.ball_position(t))[None],
            torch.from_numpy(K),
            torch.from_numpy(np.linalg.inv(T)),
        )
        u, v = np.floor(xy[0].numpy()).astype(int)
        assert f.dynamic_mask[v, u], "ball centre must project into the dynamic mask"
    np.testing.assert_allclose(
        np.linalg.norm(room.ball_position(1.0) - room.ball_position(0.0)),
        2 * room.ball_orbit_radius * np.sin(0.5),
        rtol=1e-9,
    )
    c0 = np.argwhere(f0.dynamic_mask).mean(0)
    c1 = np.argwhere(f1.dynamic_mask).mean(0)
    assert np.linalg.norm(c0 - c1) > 5.0
    # away from the ball (old and new place) the static scene is unchanged
    static = ~(f0.dynamic_mask | f1.dynamic_mask)
    np.testing.assert_array_equal(f0.depth[static], f1.depth[static])


def test_default_pose_image_up_is_world_z(room):
    T = room.default_start_pose()
    np.testing.assert_allclose(T[:3, 1], [0.0, 0.0, -1.0], atol=1e-12)  # camera +Y (down)
    np.testing.assert_allclose(T[2, 3], 1.5)
    K = intrinsics_from_fov(W, H, 60.0).numpy()
    f = room.render(T, K, H, W)
    floor = np.isin(f.segmentation, _ids(room, "floor"))
    ceiling = np.isin(f.segmentation, _ids(room, "ceiling") + _ids(room, "lamp"))
    assert floor[H // 2 :].mean() > 0.1 and floor[: H // 2].sum() == 0
    assert ceiling[: H // 2].mean() > 0.1 and ceiling[H // 2 :].sum() == 0


def test_outdoor_sky_and_two_clients():
    K = intrinsics_from_fov(W, H, 60.0).numpy()
    with PyBulletScene("outdoor", seed=1, dynamic=False) as out, PyBulletScene("room") as rm:
        f = out.render(out.default_start_pose(), K, H, W)
        assert f.sky_mask[: H // 4].mean() > 0.3
        assert np.isinf(f.depth[f.sky_mask]).all() and (f.segmentation[f.sky_mask] == -1).all()
        assert np.isfinite(f.depth[~f.sky_mask]).all()
        assert not f.sky_mask[-H // 4 :].any()
        g = rm.render(rm.default_start_pose(), K, H, W)
        assert not g.sky_mask.any()
    with pytest.raises(ValueError, match="preset"):
        PyBulletScene("moon")


def test_missing_pybullet_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pybullet", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[demo\]"):
        PyBulletScene("room")
