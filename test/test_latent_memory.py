"""LatentSpatialMemory: Eq. 4-6 behaviour, merge policies, budget, persistence, bad input."""

import pytest
import torch
from scipy.spatial.transform import Rotation

from mirage_core.errors import DepthError, MemoryFileError, MirageInputError, PoseError, ShapeError
from mirage_core.geometry import intrinsics_matrix, pose_from_rt, se3_inverse
from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation

C, S = 8, 4  # channels, stride
H, W = 24, 40  # pixels -> 6 x 10 latent
h, w = H // S, W // S
K = intrinsics_matrix(30.0, 30.0, W / 2, H / 2)
I4 = torch.eye(4, dtype=torch.float64)


def mem(policy="union", dtype="float32", **kw):
    return LatentSpatialMemory(
        MemoryConfig(channels=C, stride=S, feature_dtype=dtype, merge_policy=policy, **kw)
    )


def frame(seed=0, T_cam_world=I4, depth=None, mask=None):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(C, h, w, generator=g)
    d = depth if depth is not None else 1.0 + 3.0 * torch.rand(H, W, generator=g)
    return Observation(depth=d, K=K, T_cam_world=T_cam_world, latent=lat, mask=mask)


def pose(rx=0.0, ry=0.0, tx=0.0, tz=0.0):
    R = Rotation.from_euler("xy", [rx, ry]).as_matrix()
    return se3_inverse(pose_from_rt(torch.from_numpy(R), torch.tensor([tx, 0.0, tz])))


def snapshot(m):
    return m.xyz.clone(), m.features.clone(), m.stats()


def assert_same(m, snap):
    xyz, feat, st = snap
    assert torch.equal(m.xyz, xyz) and torch.equal(m.features, feat) and m.stats() == st


# ------------------------------------------------------------------ Eq. 4/5 basics


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_each_admissible_cell_is_one_point_and_same_view_readout_is_identity(dtype):
    """The paper's 2x2 worked example, as an idea: every admissible cell becomes exactly one
    point carrying its own token; reading out from the same view returns the tokens."""
    m = mem(dtype=dtype)
    obs = frame(1)
    r = m.update(obs)
    assert r.added == h * w == m.num_points
    out = m.readout(I4, K, (H, W))
    assert out.zhat.shape == (C, h, w) and out.mask.all()
    assert torch.equal(out.zhat, obs.latent.to(m.features.dtype))


def test_two_by_two_worked_example():
    """2x2 latent grid, tokens a, b, c, d, four points; each stores its own token."""
    K2 = intrinsics_matrix(2.0 * S, 2.0 * S, S * 1.0, S * 1.0)  # 2x2 latent grid, f_l = 2
    m = LatentSpatialMemory(
        MemoryConfig(channels=4, stride=S, feature_dtype="float32", merge_policy="union")
    )
    tokens = torch.eye(4).view(4, 2, 2)  # a=e0 at (0,0), b=e1 at (u=1,v=0), ...
    depth = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    m.update(Observation(depth=depth, K=K2, T_cam_world=I4, latent=tokens))
    assert m.num_points == 4
    assert torch.equal(m.features, torch.eye(4))  # row-major: a, b, c, d
    assert torch.allclose(m.xyz[2], torch.tensor([1.0, 2.0, 2.0, 1.0]))
    out = m.readout(I4, K2, (2 * S, 2 * S))
    assert torch.equal(out.zhat, tokens) and torch.equal(out.depth, depth)


def test_depth_at_latent_resolution_equals_downsampled_pixel_depth():
    d = torch.full((H, W), 2.5)
    a, b = mem(), mem()
    a.update(frame(2, depth=d))
    b.update(frame(2, depth=torch.full((h, w), 2.5)))
    assert torch.allclose(a.xyz, b.xyz)


def test_mask_and_zero_depth_cells_are_not_admissible():
    d = 1.0 + torch.rand(H, W)
    d[:S, :S] = 0.0  # cell (0, 0): no measurement
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[-1, -1] = True  # one pixel of the last cell: conservative -> cell masked
    m = mem()
    r = m.update(frame(3, depth=d, mask=mask))
    assert r.added == h * w - 2 and r.masked == 1 and r.invalid_depth == 1
    out = m.readout(I4, K, (H, W))
    assert not out.mask[0, 0] and not out.mask[-1, -1]
    assert out.hole_rate == pytest.approx(2 / (h * w))
    assert (out.zhat[:, 0, 0] == 0).all()


def test_batched_readout_equals_single_views_and_reference():
    m = mem()
    for i in range(3):
        m.update(frame(i, T_cam_world=pose(ry=0.1 * i, tx=0.2 * i)))
    Ts = torch.stack([pose(ry=0.05 * i, tz=-0.3 * i) for i in range(4)])
    batch = m.readout(Ts, K, (H, W))
    assert batch.zhat.shape == (4, C, h, w)
    for v in range(4):
        one = m.readout(Ts[v], K, (H, W))
        ref = m.readout_reference(Ts[v], K, (H, W))
        assert torch.equal(batch.zhat[v], one.zhat) and torch.equal(batch.mask[v], one.mask)
        assert torch.equal(one.mask, ref.mask)
        assert (one.zhat == ref.zhat).float().mean() > 0.99


def test_frontmost_point_wins():
    m = mem()
    far, near = frame(0, depth=torch.full((H, W), 4.0)), frame(1, depth=torch.full((H, W), 2.0))
    m.update(far)
    m.update(near)
    out = m.readout(I4, K, (H, W))
    assert torch.equal(out.zhat, near.latent) and torch.allclose(out.depth, torch.full((h, w), 2.0))


# ------------------------------------------------------------------ merge policies


def test_union_grows_on_revisit_fill_empty_and_voxel_do_not():
    sizes = {}
    for policy in ("union", "fill_empty", "voxel"):
        m = mem(policy, voxel_size=0.01)
        m.update(frame(0))
        r = m.update(frame(0))  # exact revisit
        sizes[policy] = (r.added, r.replaced, m.num_points)
    assert sizes["union"] == (h * w, 0, 2 * h * w)
    assert sizes["fill_empty"] == (0, 0, h * w)
    assert sizes["voxel"][0] == 0 and sizes["voxel"][2] == h * w and sizes["voxel"][1] > 0


def test_fill_empty_adds_new_area_and_new_occluders_only():
    m = mem("fill_empty")
    m.update(frame(0, depth=torch.full((H, W), 4.0)))
    # Same view, a nearer object in the left half: only those cells are added.
    d = torch.full((H, W), 4.0)
    d[:, : W // 2] = 1.0
    r = m.update(frame(1, depth=d))
    assert r.added == h * (w // 2)
    out = m.readout(I4, K, (H, W))
    assert torch.allclose(out.depth[:, : w // 2], torch.ones(h, w // 2))
    # Turning the camera reveals empty cells that get filled.
    r2 = m.update(frame(2, T_cam_world=pose(ry=0.4)))
    assert 0 < r2.added < h * w


def test_voxel_policy_latest_feature_wins():
    m = mem("voxel", voxel_size=0.5)
    d = torch.full((H, W), 2.0)
    m.update(frame(0, depth=d))
    n = m.num_points
    second = frame(1, depth=d)
    r = m.update(second)
    assert r.added == 0 and m.num_points == n < h * w  # several cells share a 0.5 m voxel
    out = m.readout(I4, K, (H, W))
    hit = out.mask
    # every stored feature now comes from the second frame's latent
    assert any(
        torch.equal(m.features[0], second.latent[:, v, u]) for v in range(h) for u in range(w)
    )
    assert hit.any()


# ------------------------------------------------------------------ budget


def test_budget_evicts_least_recently_seen_blocks():
    m = mem("union", max_points=3 * h * w)
    for i in range(3):
        m.update(frame(i, T_cam_world=pose(tx=10.0 * i)))  # blocks 0, 1, 2: disjoint views
    m.readout(pose(tx=0.0), K, (H, W))  # block 0 is seen again
    r = m.update(frame(3, T_cam_world=pose(tx=30.0)))
    assert r.evicted == h * w and m.num_points == 3 * h * w
    # block 1 (tx=10) was the least recently seen: block 0's points are still there
    out = m.readout(pose(tx=0.0), K, (H, W))
    assert torch.equal(out.zhat, frame(0).latent)
    assert m.stats().evicted_points == h * w


def test_frame_larger_than_budget_is_rejected_unchanged():
    m = mem("union", max_points=h * w - 1)
    with pytest.raises(MirageInputError, match="budget"):
        m.update(frame(0))
    assert m.num_points == 0


def test_stats_growth_history():
    m = mem("fill_empty")
    m.update(frame(0))
    m.update(frame(0))
    st = m.stats()
    assert st.growth_bytes == [h * w * (12 + 4 * C), 0]
    assert st.bytes == st.num_points * st.bytes_per_point


# ------------------------------------------------------------------ persistence


@pytest.mark.parametrize("policy", ["union", "voxel"])
def test_save_load_round_trip(tmp_path, policy):
    m = mem(policy, dtype="bfloat16")
    for i in range(2):
        m.update(frame(i, T_cam_world=pose(tx=0.3 * i)))
    p = tmp_path / "m.safetensors"
    m.save(p)
    m2 = LatentSpatialMemory.load(p)
    assert torch.equal(m2.xyz, m.xyz) and torch.equal(m2.features, m.features)
    assert m2.stats() == m.stats() and m2.config == m.config
    a, b = m.readout(pose(tx=0.1), K, (H, W)), m2.readout(pose(tx=0.1), K, (H, W))
    assert torch.equal(a.zhat, b.zhat)
    if policy == "voxel":  # voxel index rebuilt: a revisit still adds nothing
        assert m2.update(frame(0)).added == 0


def test_corrupt_and_mismatched_files_are_rejected(tmp_path):
    m = mem()
    m.update(frame(0))
    good = tmp_path / "good.safetensors"
    m.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flip.safetensors"
    flipped.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a file at all")
    for p, match in [
        (truncated, "readable"),
        (flipped, "checksum"),
        (garbage, "readable"),
        (tmp_path / "none", "no such"),
    ]:
        with pytest.raises(MemoryFileError, match=match):
            LatentSpatialMemory.load(p)
    other = LatentSpatialMemory(MemoryConfig(channels=C + 1, stride=S, feature_dtype="float32"))
    other.update(
        Observation(depth=torch.ones(H, W), K=K, T_cam_world=I4, latent=torch.randn(C + 1, h, w))
    )
    snap = snapshot(other)
    with pytest.raises(MemoryFileError, match="channels"):
        other.load_state(good)
    assert_same(other, snap)


# ------------------------------------------------------------------ bad input


def _bad_cases():
    good = frame(0)
    nan = good.depth.clone()
    nan[0, 0] = float("nan")
    R = torch.eye(4, dtype=torch.float64)
    R[0, 1] = 0.3
    return [
        ("nan depth", Observation(nan, K, I4, latent=good.latent), DepthError),
        (
            "inf depth",
            Observation(good.depth + float("inf"), K, I4, latent=good.latent),
            DepthError,
        ),
        (
            "negative depth (behind camera)",
            Observation(-good.depth, K, I4, latent=good.latent),
            DepthError,
        ),
        ("non-orthonormal", Observation(good.depth, K, R, latent=good.latent), PoseError),
        (
            "latent channels",
            Observation(good.depth, K, I4, latent=torch.randn(C + 1, h, w)),
            ShapeError,
        ),
        (
            "depth resolution",
            Observation(torch.ones(H + 1, W), K, I4, latent=good.latent),
            ShapeError,
        ),
        (
            "int latent",
            Observation(good.depth, K, I4, latent=torch.ones(C, h, w, dtype=torch.int64)),
            ShapeError,
        ),
        ("int depth", Observation(good.depth.long(), K, I4, latent=good.latent), ShapeError),
        (
            "float mask",
            Observation(good.depth, K, I4, latent=good.latent, mask=torch.zeros(H, W)),
            ShapeError,
        ),
        (
            "empty mask",
            Observation(
                good.depth, K, I4, latent=good.latent, mask=torch.zeros(0, 0, dtype=torch.bool)
            ),
            ShapeError,
        ),
        ("empty latent", Observation(good.depth, K, I4, latent=torch.zeros(C, 0, 0)), ShapeError),
        (
            "nan latent",
            Observation(good.depth, K, I4, latent=good.latent * float("nan")),
            MirageInputError,
        ),
        ("bad K", Observation(good.depth, torch.eye(4), I4, latent=good.latent), ShapeError),
        ("no latent", Observation(good.depth, K, I4), MirageInputError),
    ]


@pytest.mark.parametrize("name, obs, err", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_update_raises_and_leaves_memory_unchanged(name, obs, err):
    m = mem("voxel")
    m.update(frame(5, T_cam_world=pose(tx=0.2)))
    snap = snapshot(m)
    with pytest.raises(err):
        m.update(obs)
    assert issubclass(err, ValueError)
    assert_same(m, snap)


def test_invalid_depth_mask_mode_drops_bad_pixels():
    d = 1.0 + torch.rand(H, W)
    d[:S, :S] = float("nan")
    m = mem(invalid_depth="mask")
    r = m.update(frame(0, depth=d))
    assert r.added == h * w - 1


def test_readout_bad_arguments():
    m = mem()
    m.update(frame(0))
    with pytest.raises(ShapeError, match="stride"):
        m.readout(I4, K, (H + 1, W))
    with pytest.raises(PoseError):
        m.readout(torch.zeros(4, 4), K, (H, W))


def test_config_validation():
    with pytest.raises(ValueError, match="merge_policy"):
        MemoryConfig(merge_policy="latest")
    with pytest.raises(ValueError, match="feature_dtype"):
        MemoryConfig(feature_dtype="float16")


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cpu, gpu = (
        mem(dtype="bfloat16"),
        LatentSpatialMemory(
            MemoryConfig(
                channels=C, stride=S, feature_dtype="bfloat16", merge_policy="union", device="cuda"
            )
        ),
    )
    for i in range(3):
        cpu.update(frame(i, T_cam_world=pose(ry=0.1 * i)))
        gpu.update(frame(i, T_cam_world=pose(ry=0.1 * i)))
    a, b = cpu.readout(pose(ry=0.05), K, (H, W)), gpu.readout(pose(ry=0.05), K, (H, W))
    assert torch.equal(a.mask, b.mask.cpu())
    assert (a.zhat == b.zhat.cpu()).float().mean() > 0.99


def test_initialize_replaces_contents_and_rejects_bad_input_unchanged():
    m = mem("union")
    m.update(frame(0))
    m.update(frame(1))
    snap = snapshot(m)
    bad = frame(2)
    bad.depth[0, 0] = -1.0
    with pytest.raises(DepthError):
        m.initialize(bad)
    assert_same(m, snap)  # a rejected initialize does not clear
    r = m.initialize(frame(3))
    assert r.added == h * w == m.num_points and m.stats().updates == 1
