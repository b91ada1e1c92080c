"""The latent readout's opt-in hole fill (mirage_core/memory/hole_fill.py): the fast path
against the per-cell loop, worked values, default-off invariance (Eq. 5 as written), that
the memory itself is untouched, and that training, export, loading, rollout, held-out
evaluation and the ROS memory node all carry the same setting."""

from __future__ import annotations

import json

import pytest
import torch
from test_latent_memory import C, H, K, W, frame, h, pose, w

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.memory import LatentSpatialMemory, MemoryConfig
from mirage_core.memory.hole_fill import fill_holes, fill_holes_reference


def _random_readout(seed: int, V: int = 3, C_: int = 5, hh: int = 7, ww: int = 9,
                    cover: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(V, hh, ww, generator=g) < cover
    zhat = torch.randn(V, C_, hh, ww, generator=g) * mask[:, None]
    depth = (1.0 + torch.rand(V, hh, ww, generator=g)) * mask
    return zhat, mask, depth


@pytest.mark.parametrize("passes", [0, 1, 2, 3])
@pytest.mark.parametrize("cover", [0.2, 0.5, 0.9])
def test_fast_fill_equals_the_per_cell_loop(passes, cover):
    zhat, mask, depth = _random_readout(passes + int(10 * cover), cover=cover)
    fast = fill_holes(zhat, mask, depth, passes)
    ref = fill_holes_reference(zhat, mask, depth, passes)
    for a, b in zip(fast, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    z, m, d, filled = fast
    assert torch.equal(m, mask | filled) and not (filled & mask).any()
    covered = mask[:, None].expand_as(z)
    assert torch.equal(z[covered], zhat[covered])  # covered cells never change
    assert torch.equal(d[mask], depth[mask])
    if passes == 0:
        assert not filled.any() and torch.equal(z, zhat) and torch.equal(d, depth)


def test_bfloat16_readout_keeps_its_dtype():
    zhat, mask, depth = _random_readout(1)
    z, _, _, filled = fill_holes(zhat.bfloat16(), mask, depth, 1)
    assert z.dtype == torch.bfloat16 and filled.any()


def test_worked_values():
    """One row ``[a, _, b, _, _]``: cell 1 takes the mean of a and b, cell 3 takes b (its only
    covered neighbour); a second pass fills cell 4 from the filled cell 3."""
    zhat = torch.tensor([[[[2.0, 0.0, 6.0, 0.0, 0.0]]]])  # [V=1, C=1, h=1, w=5]
    mask = torch.tensor([[[True, False, True, False, False]]])
    depth = torch.tensor([[[1.0, 0.0, 3.0, 0.0, 0.0]]])
    z, m, d, filled = fill_holes(zhat, mask, depth, 1)
    assert z.flatten().tolist() == [2.0, 4.0, 6.0, 6.0, 0.0]
    assert d.flatten().tolist() == [1.0, 2.0, 3.0, 3.0, 0.0]
    assert filled.flatten().tolist() == [False, True, False, True, False]
    assert m.flatten().tolist() == [True, True, True, True, False]
    z2, m2, _, _ = fill_holes(zhat, mask, depth, 2)
    assert z2.flatten().tolist() == [2.0, 4.0, 6.0, 6.0, 6.0] and m2.all()


def test_what_uncovered_cells_hold_never_leaks_into_a_fill():
    zhat, mask, depth = _random_readout(3)
    junk = zhat.clone()
    junk[~mask[:, None].expand_as(zhat)] = float("nan")
    a, b = fill_holes(zhat, mask, depth, 2), fill_holes(junk, mask, depth, 2)
    assert torch.equal(a[0][a[1][:, None].expand_as(zhat)], b[0][b[1][:, None].expand_as(zhat)])


def test_an_empty_readout_stays_empty():
    zhat, mask, depth = torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5, dtype=torch.bool), \
        torch.zeros(2, 4, 5)
    z, m, d, filled = fill_holes(zhat, mask, depth, 3)
    assert not m.any() and not filled.any() and not z.any() and not d.any()


def test_bad_arguments():
    zhat, mask, depth = _random_readout(0)
    with pytest.raises(ShapeError, match="zhat"):
        fill_holes(zhat[0], mask, depth, 1)
    with pytest.raises(ShapeError):
        fill_holes(zhat, mask[:, :-1], depth, 1)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="passes"):
            fill_holes(zhat, mask, depth, bad)
        with pytest.raises(ValueError, match="hole_fill"):
            MemoryConfig(hole_fill=bad)


# ------------------------------------------------------------------ in the memory


def _memories(fill: int):
    """Two memories written alike, one reading out with ``fill`` passes."""
    out = []
    for f in (0, fill):
        m = LatentSpatialMemory(MemoryConfig(channels=C, stride=4, feature_dtype="float32",
                                             hole_fill=f))
        m.update(frame(1))
        m.update(frame(2, T_cam_world=pose(ry=0.3)))
        out.append(m)
    return out


def _closer_views():
    """Targets nearer the scene than the writing views: points spread, leaving holes."""
    return torch.stack([pose(tz=-1.0), pose(ry=0.15, tz=-1.2)])


def test_default_readout_is_eq5_as_written():
    assert MemoryConfig().hole_fill == 0
    plain, _ = _memories(1)
    r = plain.readout(_closer_views(), K, (H, W))
    assert r.filled is None and not r.mask.all()  # the views do have holes to fill


@pytest.mark.parametrize("passes", [1, 2])
def test_memory_readout_is_the_fill_of_the_plain_readout(passes):
    plain, filled = _memories(passes)
    T = _closer_views()
    a = plain.readout(T, K, (H, W))
    b = filled.readout(T, K, (H, W))
    z, m, d, f = fill_holes(a.zhat, a.mask, a.depth, passes)
    assert f.any()
    assert torch.equal(b.zhat, z) and torch.equal(b.mask, m) and torch.equal(b.depth, d)
    assert torch.equal(b.filled, f) and b.hole_rate < a.hole_rate
    ref = filled.readout_reference(T, K, (H, W))  # the slow path fills with the loop
    torch.testing.assert_close(ref.zhat, b.zhat, rtol=0, atol=1e-6)
    assert torch.equal(ref.mask, b.mask) and torch.equal(ref.filled, b.filled)
    one = filled.readout(T[0], K, (H, W))  # a single view: [C, h, w], filled [h, w]
    assert one.zhat.shape == (C, h, w) and torch.equal(one.filled, b.filled[0])


def test_the_fill_never_changes_what_the_memory_stores():
    """The fill_empty merge reads the memory out itself: that readout stays unfilled, so a
    memory with the fill stores exactly the points of one without it."""
    a, b = _memories(2)
    for m in (a, b):
        m.update(frame(3, T_cam_world=pose(tz=-1.0)))
        m.update(frame(4, T_cam_world=pose(ry=-0.2, tz=-0.5)))
    assert a.num_points == b.num_points
    assert torch.equal(a.xyz, b.xyz) and torch.equal(a.features, b.features)


def test_a_saved_memory_keeps_its_readout_setting(tmp_path):
    _, m = _memories(1)
    m.save(tmp_path / "m.safetensors")
    assert LatentSpatialMemory.load(tmp_path / "m.safetensors").config.hole_fill == 1


# ------------------------------------------------------------------ one setting end to end


def test_training_readouts_carry_the_fill():
    """chunk_inputs (what mirage train conditions on) fills exactly as the rollout's memory,
    for a camera walking forward (its targets see the first frame's cells spread out)."""
    from mirage_core.data.clip import Clip
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.train.config import TrainConfig
    from mirage_core.train.readouts import chunk_inputs

    L, C_, S = 9, 8, 8
    T = torch.eye(4, dtype=torch.float64).repeat(L, 1, 1)
    T[:, 2, 3] = 0.15 * torch.arange(L)  # T_world_cam: forward along the optical axis
    g = torch.Generator().manual_seed(0)
    clip = Clip(latents=torch.randn(L, C_, 6, 8, generator=g),
                depth=2.0 + torch.rand(L, 48, 64, generator=g),
                mask=torch.zeros((L, 48, 64), dtype=torch.bool), T_world_cam=T,
                K=intrinsics_from_fov(64, 48, 60.0), image_hw=(48, 64), key="forward")
    a = chunk_inputs(clip, C_, S)
    b = chunk_inputs(clip, C_, S, memory_config=MemoryConfig(hole_fill=1))
    n = 8  # the targets: the last n_new frames of the sequence
    z, m, _, f = fill_holes(a.readout[0, :, -n:].permute(1, 0, 2, 3), a.mask[0, -n:] > 0,
                            torch.zeros_like(a.mask[0, -n:]), 1)
    assert f.any()  # the memory stores bfloat16 features: its fill's means are rounded so
    assert torch.equal(b.readout[0, :, -n:], z.permute(1, 0, 2, 3).bfloat16().float())
    assert torch.equal(b.mask[0, -n:] > 0, m) and sum(b.hole_rate) < sum(a.hole_rate)
    with pytest.raises(MirageInputError, match="readout_hole_fill"):
        TrainConfig(readout_hole_fill=1, conditioning="rgb_cache")
    with pytest.raises(MirageInputError, match="readout_hole_fill"):
        TrainConfig(readout_hole_fill=-1)


def test_rollout_and_heldout_take_the_models_setting_unless_told(tmp_path):
    from mirage_core.eval.heldout import HeldoutConfig
    from mirage_core.generator import loading
    from mirage_core.rollout.job import RolloutJobConfig

    root = tmp_path / "w"
    root.mkdir()
    (root / loading.WEIGHTS_MARKER).write_text(json.dumps({"size": "small",
                                                           "readout_hole_fill": 2}))
    assert loading.weights_profile(root)["readout_hole_fill"] == 2
    (root / loading.WEIGHTS_MARKER).write_text(json.dumps({"size": "small"}))
    assert loading.weights_profile(root)["readout_hole_fill"] == 0  # older markers: Eq. 5
    for bad in (-1, True, 1.5, None, "2"):
        (root / loading.WEIGHTS_MARKER).write_text(json.dumps({"readout_hole_fill": bad}))
        with pytest.raises(MirageInputError, match=r"mirage_tiny\.json.*readout_hole_fill"):
            loading.weights_profile(root)
    for bad in (-1, True):
        with pytest.raises(MirageInputError, match="hole_fill"):
            RolloutJobConfig(tiny=True, hole_fill=bad)
        with pytest.raises(MirageInputError, match="hole_fill"):
            HeldoutConfig(hole_fill=bad)
    with pytest.raises(MirageInputError, match="rgb_cache"):  # a fill that would do nothing
        RolloutJobConfig(tiny=True, hole_fill=1, conditioning="rgb_cache")
    RolloutJobConfig(tiny=True, hole_fill=0, conditioning="rgb_cache")


def test_mirage_launch_sets_the_memory_nodes_fill_from_the_model(tmp_path):
    from test_launch_model_params import _small_dir

    from mirage_ros.launch_specs import LAUNCHES, model_params

    w = _small_dir(tmp_path / "w")
    marker = json.loads((w / "mirage_tiny.json").read_text())
    (w / "mirage_tiny.json").write_text(json.dumps({**marker, "readout_hole_fill": 1}))
    got = model_params(LAUNCHES["sim_rollout"], {"weights": str(w)})
    assert got["memory"] == {"stride": 8, "hole_fill": 1}
