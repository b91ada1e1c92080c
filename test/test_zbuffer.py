"""Fast scatter-min z-buffer vs the slow per-point reference, on random scenes."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mirage_core.geometry import backproject, intrinsics_matrix, pose_from_rt, se3_inverse
from mirage_core.memory.zbuffer import zbuffer_select, zbuffer_select_reference


def scene(rng, h, w, n_views, ties=False):
    """Points lifted from jittered cell centres of random views (never on a cell boundary),
    plus points behind the camera and outside the frame. Returns xyz [N, 3] float32."""
    K = intrinsics_matrix(0.9 * w, 0.9 * w, w / 2, h / 2)
    pts = []
    for _ in range(n_views):
        R = Rotation.from_rotvec(rng.normal(scale=0.15, size=3)).as_matrix()
        T_world_cam = pose_from_rt(
            torch.from_numpy(R), torch.from_numpy(rng.normal(scale=0.2, size=3))
        )
        depth = torch.from_numpy(rng.uniform(1.0, 5.0, size=(h, w)))
        if ties:
            depth = torch.round(depth * 2) / 2  # many equal depths
        p = backproject(depth, K, T_world_cam).reshape(-1, 3)
        pts.append(p)
    pts = torch.cat(pts)
    pts = torch.cat([pts, -pts[:50], pts[:50] * torch.tensor([50.0, 50.0, 1.0], dtype=pts.dtype)])
    return pts.float(), K


@pytest.mark.parametrize("h, w, n_views", [(2, 2, 1), (5, 7, 3), (11, 4, 2), (9, 16, 4)])
def test_fast_matches_reference(h, w, n_views):
    rng = np.random.default_rng(h * 100 + w)
    pts, K = scene(rng, h, w, n_views)
    # Targets: the identity plus small motions; jitter keeps projections off cell borders
    # only approximately, so compare on cells whose reference winner is unambiguous.
    for k in range(3):
        R = Rotation.from_rotvec(rng.normal(scale=0.05 * k, size=3)).as_matrix()
        T_cam_world = se3_inverse(
            pose_from_rt(torch.from_numpy(R), torch.from_numpy(rng.normal(scale=0.05 * k, size=3)))
        )
        idx, z = zbuffer_select(pts.T.contiguous(), T_cam_world, K, h, w)
        ref_idx, ref_z = zbuffer_select_reference(pts, T_cam_world, K, h, w)
        assert torch.equal(idx[0] >= 0, ref_idx >= 0)
        assert torch.allclose(z[0].double(), ref_z, rtol=1e-5)
        assert (idx[0] == ref_idx).float().mean() > 0.99  # float32 vs float64 near-ties only
        if k == 0:
            assert torch.equal(idx[0], ref_idx)


@pytest.mark.parametrize("h, w", [(3, 3), (8, 12)])
def test_ties_go_to_lowest_index_in_both(h, w):
    rng = np.random.default_rng(7)
    pts, K = scene(rng, h, w, 3, ties=True)
    pts = torch.cat([pts, pts])  # exact duplicates: the first copy must win
    T = torch.eye(4, dtype=torch.float64)
    idx, _ = zbuffer_select(pts.T.contiguous(), T, K, h, w)
    ref_idx, _ = zbuffer_select_reference(pts, T, K, h, w)
    assert torch.equal(idx[0], ref_idx)
    assert (idx[0] < len(pts) // 2).all()


def test_batched_views_equal_single_views():
    rng = np.random.default_rng(3)
    pts, K = scene(rng, 6, 9, 2)
    Ts = torch.stack(
        [
            se3_inverse(pose_from_rt(torch.eye(3), torch.tensor([0.05 * i, 0.0, 0.0])))
            for i in range(4)
        ]
    )
    idx, z = zbuffer_select(pts.T.contiguous(), Ts, K, 6, 9)
    for v in range(4):
        i1, z1 = zbuffer_select(pts.T.contiguous(), Ts[v], K, 6, 9)
        assert torch.equal(idx[v], i1[0]) and torch.equal(z[v], z1[0])


def test_behind_and_outside_points_are_ignored():
    K = intrinsics_matrix(2.0, 2.0, 1.0, 1.0)
    pts = torch.tensor([[0.0, 0.0, -1.0], [100.0, 0.0, 1.0], [float("nan"), 0.0, 1.0]])
    idx, z = zbuffer_select(pts.T.contiguous(), torch.eye(4), K, 2, 2)
    assert (idx == -1).all() and (z == 0).all()


def test_empty_cloud():
    idx, _ = zbuffer_select(
        torch.zeros(3, 0), torch.eye(4), intrinsics_matrix(1.0, 1.0, 1.0, 1.0), 2, 3
    )
    assert idx.shape == (1, 2, 3) and (idx == -1).all()
