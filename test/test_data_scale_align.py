"""Depth scale alignment to a dataset's cameras (mirage_core/data/scale_align.py, prepare.py).

Scenes are rendered analytically with numpy: an OpenCV camera inside a box room whose six
faces carry a smooth texture that is a function of the world point, so images are exactly
multi-view consistent and depth is exact. Depth is divided by a known factor; the estimator
must find it again from the images and the poses.

Torch runs single-threaded here: on a loaded 2-core machine torch's thread pool makes these
small kernels 100x slower, not faster.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mirage_core.data.scale_align import (
    _ZERO_BASELINE,
    ScaleAlignConfig,
    ScaleAlignmentError,
    ScaleAlignmentWarning,
    consistency_cost,
    consistency_cost_reference,
    default_pairs,
    estimate_depth_scale,
)
from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.geometry import camera_rays, intrinsics_from_fov, look_at

TRUE_FACTOR = 3.7  # provider depth = true depth / 3.7, so the scale to find is 3.7
BOX_LO = np.array([-3.0, -2.0, -2.0])
BOX_HI = np.array([3.0, 2.0, 6.0])


@pytest.fixture(scope="module")
def vae():
    from mirage_core.codecs import WanVAECodec

    return WanVAECodec.from_config("tiny", seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _texture(p: np.ndarray, axis: int) -> np.ndarray:
    i, j = (k for k in range(3) if k != axis)
    a, b = p[..., i], p[..., j]
    chans = [0.5 + 0.2 * np.sin(f1 * a + ph) * np.cos(f2 * b)
             + 0.15 * np.sin(7.3 * a + 5.1 * b + c) + 0.1 * np.sin(13.0 * b - 3.0 * a + axis)
             for c, (f1, f2, ph) in enumerate([(3.1, 2.3, 0.0), (4.7, 1.9, 1.0), (2.2, 5.3, 2.0)])]
    return np.clip(np.stack(chans, -1), 0.0, 1.0)


def _render(T_world_cam: torch.Tensor, K: torch.Tensor, hw) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB ``[3, H, W]`` and z-depth ``[H, W]`` of the textured box room (ray casting)."""
    H, W = hw
    rays = camera_rays(K, H, W, dtype=torch.float64).numpy()  # z = 1: ray length t = z-depth
    T = T_world_cam.numpy()
    dirs, o = rays @ T[:3, :3].T, T[:3, 3]
    best = np.full((H, W), np.inf)
    face = np.zeros((H, W), dtype=int)
    for ax in range(3):
        for bound in (BOX_LO[ax], BOX_HI[ax]):
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (bound - o[ax]) / dirs[..., ax]
            t = np.where(t > 1e-9, t, np.inf)
            face = np.where(t < best, ax, face)
            best = np.minimum(t, best)
    P = o + dirs * best[..., None]
    img = np.zeros((H, W, 3))
    for ax in range(3):
        img[face == ax] = _texture(P[face == ax], ax)
    return torch.from_numpy(img).permute(2, 0, 1).float(), torch.from_numpy(best).float()


def _poses(motion: str, n: int, step: float) -> torch.Tensor:
    Ts = []
    for i in range(n):
        if motion == "truck":  # sideways
            eye = np.array([-0.4 + step * i, 0.0, 0.0])
            tgt = eye + np.array([0.3, 0.1, 1.0])
        elif motion == "push":  # forward
            eye = np.array([0.3, -0.2, step * i])
            tgt = eye + np.array([0.2, 0.1, 1.0])
        else:  # "pan": yaw 0.05 rad per frame, plus `step` metres of forward drift
            eye = np.array([0.3, -0.2, 0.5 + step * i])
            tgt = eye + np.array([math.sin(0.05 * i), 0.1, math.cos(0.05 * i)])
        Ts.append(look_at(eye, tgt))
    return torch.stack(Ts)


def _scene(motion="truck", n=5, hw=(48, 64), step=0.1, fov=60.0):
    K = intrinsics_from_fov(hw[1], hw[0], fov)
    T = _poses(motion, n, step)
    frames, depth = zip(*[_render(t, K, hw) for t in T], strict=True)
    return torch.stack(frames), torch.stack(depth), K, T


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("motion,hw", [("truck", (48, 64)), ("push", (48, 64)),
                                       ("truck", (144, 256))])
def test_recovers_known_scale(motion, hw):
    frames, depth, K, T = _scene(motion, hw=hw)
    fit = estimate_depth_scale(frames, depth / TRUE_FACTOR, K, T)
    assert fit.ok and fit.status == "ok" and fit.scale == fit.estimate
    assert abs(fit.scale / TRUE_FACTOR - 1) < 0.01, fit
    assert fit.contrast > 0.3 and fit.sharpness > 0 and fit.parallax_px > 1.0
    assert fit.baseline == pytest.approx(0.4, rel=1e-9)  # frame 0 -> 4 at 0.1 per frame
    assert fit.scale_range[0] < TRUE_FACTOR < fit.scale_range[1]
    assert max(fit.working_hw) == min(max(hw), 128)
    json.dumps(fit.to_dict())


def test_recovers_with_masks_holes_and_geometric_term():
    frames, depth, K, T = _scene("truck")
    provider = depth * 0.27  # scale to find: 1 / 0.27
    mask = torch.zeros_like(depth, dtype=torch.bool)
    mask[:, :, :12] = True  # e.g. a dynamic object
    provider[:, 30:, 40:] = 0.0  # holes
    frames = frames.clone()
    frames[:, :, :, :12] = torch.rand(5, 3, 48, 12, generator=torch.Generator().manual_seed(0))
    cfg = ScaleAlignConfig(geo_weight=0.5)
    fit = estimate_depth_scale(frames, provider, K, T, mask=mask, cfg=cfg)
    assert fit.ok and abs(fit.scale * 0.27 - 1) < 0.01, fit


# --------------------------------------------------------------------------- unobservable


def test_pure_rotation_is_flagged():
    frames, depth, K, T = _scene("pan", step=0.0)
    with pytest.raises(ScaleAlignmentError, match="zero_baseline"):
        estimate_depth_scale(frames, depth, K, T)
    with pytest.warns(ScaleAlignmentWarning, match="keeping the provider's scale"):
        fit = estimate_depth_scale(frames, depth, K, T, cfg=ScaleAlignConfig(on_failure="keep"))
    assert fit.scale == 1.0 and fit.status == "zero_baseline"
    # the measured translation: float noise of the relative poses, at most the zero threshold
    # (1e-16, not 0.0, on this machine)
    assert 0.0 <= fit.baseline <= _ZERO_BASELINE


def test_near_pure_rotation_and_textureless_are_not_guessed():
    keep = ScaleAlignConfig(on_failure="keep")
    # 0.1 mm of drift per frame at a few metres: any scale that fits moves pixels < 1 px
    frames, depth, K, T = _scene("pan", step=1e-4)
    with pytest.warns(ScaleAlignmentWarning):
        fit = estimate_depth_scale(frames, depth / TRUE_FACTOR, K, T, cfg=keep)
    assert fit.status == "low_parallax" and fit.scale == 1.0, fit
    # a uniformly grey room: the images cannot single out a scale
    frames, depth, K, T = _scene("truck")
    with pytest.warns(ScaleAlignmentWarning):
        fit = estimate_depth_scale(torch.full_like(frames, 0.5), depth, K, T, cfg=keep)
    assert fit.status == "flat" and fit.scale == 1.0, fit


def test_minimum_at_the_search_edge_is_flagged():
    frames, depth, K, T = _scene("truck")  # the true scale moves the widest pair ~3.4 px
    cfg = ScaleAlignConfig(max_parallax_px=1.5, min_parallax_px=0.5)
    with pytest.raises(ScaleAlignmentError, match="at_boundary"):
        estimate_depth_scale(frames, depth / TRUE_FACTOR, K, T, cfg=cfg)


# --------------------------------------------------------------------------- fast vs reference


@pytest.mark.parametrize("geo_weight", [0.0, 0.7])
def test_fast_cost_matches_reference(geo_weight):
    # pan + drift: rotation and translation both change (no landing exactly on a border)
    frames, depth, K, T = _scene("pan", n=3, hw=(12, 16), step=0.3)
    mask = torch.zeros_like(depth, dtype=torch.bool)
    mask[1, 4:7, 5:9] = True
    depth = depth.clone()
    depth[0, 0, :5] = 0.0
    depth[2, 8:, 10:] = 0.0
    cfg = ScaleAlignConfig(geo_weight=geo_weight, photo_cap=0.05, min_overlap=0.3)
    us = [0.0, 0.05, 1 / TRUE_FACTOR, 0.9, 3.0, 40.0]
    for pairs in (None, [(2, 0), (1, 2)]):
        fast = consistency_cost(frames, depth, K, T, us, pairs=pairs, mask=mask, cfg=cfg)
        for u, c in zip(us, fast.tolist(), strict=True):
            ref = consistency_cost_reference(frames, depth, K, T, u, pairs=pairs, mask=mask,
                                             cfg=cfg)
            if math.isinf(ref):
                assert math.isinf(c), (u, c)
            else:
                assert c == pytest.approx(ref, rel=1e-4, abs=1e-6), (u, pairs)
    # sideways motion, u = 40: everything flies out of view -> both say inf
    frames, depth, K, T = _scene("truck", n=3, hw=(12, 16), step=0.3)
    assert math.isinf(float(consistency_cost(frames, depth, K, T, [40.0], cfg=cfg)[0]))
    assert math.isinf(consistency_cost_reference(frames, depth, K, T, 40.0, cfg=cfg))
    assert default_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]


def test_bad_inputs_are_clear():
    frames, depth, K, T = _scene("truck", n=3, hw=(12, 16))
    with pytest.raises(ShapeError, match=r"depth must be \[N=3, H=12, W=16\]"):
        estimate_depth_scale(frames, depth[:2], K, T)
    with pytest.raises(ShapeError, match=">= 2 frames"):
        estimate_depth_scale(frames[:1], depth[:1], K, T[:1])
    with pytest.raises(MirageInputError, match="finite and >= 0"):
        estimate_depth_scale(frames, -depth, K, T)
    with pytest.raises(MirageInputError, match="pair"):
        estimate_depth_scale(frames, depth, K, T, pairs=[(0, 0)])
    with pytest.raises(MirageInputError, match="no valid source pixels"):
        estimate_depth_scale(frames, torch.zeros_like(depth), K, T)
    with pytest.raises(MirageInputError, match="on_failure"):
        ScaleAlignConfig(on_failure="guess")


# --------------------------------------------------------------------------- prepare


def _sequence(root, motion="truck", n=9, step=0.05, hw=(48, 64)):
    """PNG frames + TUM trajectory + exact depth / TRUE_FACTOR as a ``given:`` ``.npy``."""
    from PIL import Image

    from mirage_core.trajectory import Trajectory
    from mirage_core.trajectory_io import write_trajectory

    frames, depth, _, T = _scene(motion, n=n, hw=hw, step=step)
    d = root / "seq"
    d.mkdir(parents=True)
    for i, f in enumerate(frames):
        arr = (f.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:03d}.png")
    write_trajectory(Trajectory(T_world_cam=T, timestamps=torch.arange(n, dtype=torch.float64)),
                     root / "cams.txt", "tum")
    np.save(root / "d.npy", (depth / TRUE_FACTOR).numpy())
    return d, root / "cams.txt", depth


def test_prepare_align_to_cameras(tmp_path, vae):
    pytest.importorskip("lmdb")
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.prepare import SCALE_LOG_NAME, PrepareConfig, prepare_sequence

    frames, traj, depth = _sequence(tmp_path)
    common = dict(frames=9, depth=f"given:{tmp_path / 'd.npy'}", fov_y_deg=60.0, progress=False)
    with ClipStore(tmp_path / "aligned", readonly=False) as st:
        rep = prepare_sequence(st, frames, traj, vae,
                               PrepareConfig(**common, depth_scale="align_to_cameras"))
        clip = st.get("seq/000000")
    fit = rep.depth_scales["seq/000000"]
    assert rep.written == 1 and fit.ok and abs(fit.scale / TRUE_FACTOR - 1) < 0.02, fit
    # stored depth = provider depth * s exactly, i.e. the true depth within the estimate's error
    given = (depth / TRUE_FACTOR)[[0, 4, 8]]
    assert torch.allclose(clip.depth, given * fit.scale, rtol=1e-6)
    assert torch.allclose(clip.depth, depth[[0, 4, 8]], rtol=0.02)
    logged = [json.loads(x) for x in (tmp_path / "aligned" / SCALE_LOG_NAME).read_text()
              .splitlines()]
    assert logged[0]["key"] == "seq/000000" and logged[0]["scale"] == fit.scale
    assert any("median scale" in line for line in rep.lines())
    with ClipStore(tmp_path / "raw", readonly=False) as st:  # default: as the provider returns
        rep = prepare_sequence(st, frames, traj, vae, PrepareConfig(**common))
        assert not rep.depth_scales
        assert torch.allclose(st.get("seq/000000").depth, given)
        assert "depth_scale=provider" in st.meta.note


def test_prepare_unobservable_scale_policy(tmp_path, vae):
    pytest.importorskip("lmdb")
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.prepare import PrepareConfig, PrepareError, prepare_sequence

    frames, traj, depth = _sequence(tmp_path, motion="pan", step=0.0)
    common = dict(frames=9, depth=f"given:{tmp_path / 'd.npy'}", fov_y_deg=60.0, progress=False,
                  depth_scale="align_to_cameras")
    with ClipStore(tmp_path / "out", readonly=False) as st:
        with pytest.raises(PrepareError, match=r"clip seq/000000: .*zero_baseline"):
            prepare_sequence(st, frames, traj, vae, PrepareConfig(**common))
        rep = prepare_sequence(st, frames, traj, vae, PrepareConfig(**common, errors="skip"))
        assert rep.written == 0 and "zero_baseline" in rep.failed[0]
        with pytest.warns(ScaleAlignmentWarning):
            rep = prepare_sequence(st, frames, traj, vae,
                                   PrepareConfig(**common, depth_scale_fallback="keep"))
        assert rep.written == 1 and rep.depth_scales["seq/000000"].status == "zero_baseline"
        assert torch.allclose(st.get("seq/000000").depth, (depth / TRUE_FACTOR)[[0, 4, 8]])
        assert any("1 kept at scale 1" in line for line in rep.lines())


def test_prepare_config_and_cli_validate_depth_scale(tmp_path, capsys):
    from mirage_core.data.prepare import PrepareConfig, main_prepare

    with pytest.raises(MirageInputError, match="depth_scale must be one of"):
        PrepareConfig(depth_scale="metric")
    with pytest.raises(MirageInputError, match="depth_scale_fallback"):
        PrepareConfig(depth_scale_fallback="guess")
    with pytest.raises(MirageInputError, match="2 latent frames"):
        PrepareConfig(frames=1, depth_scale="align_to_cameras")
    with pytest.raises(SystemExit):  # argparse rejects it before any weights are loaded
        main_prepare(["--frames-dir", str(tmp_path), "--trajectory", "x", "--out",
                      str(tmp_path / "o"), "--vae", "tiny", "--depth", "constant:1",
                      "--depth-scale", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
