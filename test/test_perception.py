"""Perception adapters: given/constant/sim depth and masks, scale alignment, DA3 and SAM3 with tiny
random-weight models, factories, and the import hygiene of ``mirage_core.perception``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mirage_core.errors import (
    DepthError,
    MirageInputError,
    PoseError,
    ShapeError,
    WeightsNotFoundError,
)
from mirage_core.geometry import se3_inverse
from mirage_core.memory.depth_downsample import downsample_depth
from mirage_core.perception import (
    ConstantDepth,
    DepthEstimate,
    GivenDepth,
    GivenMasks,
    MissingDependencyError,
    NoMasks,
    ScaleAligner,
    align_scale_to_reference,
    make_depth_provider,
    make_mask_provider,
)

H, W = 64, 112  # stride-16 latent grid 4 x 7


def _K(h=H, w=W, f=80.0):
    return torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _poses(n):
    T = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    T[:, 0, 3] = torch.arange(n, dtype=torch.float64) * 0.1
    return T


def _frames(n, h=H, w=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


# --------------------------------------------------------------------------- import hygiene


def _run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_perception_does_not_import_optional_packages():
    r = _run_py(
        """
        import sys
        import mirage_core, mirage_core.perception
        from mirage_core.perception import make_depth_provider, make_mask_provider
        bad = [m for m in sys.modules if m.split(".")[0] in
               ("depth_anything_3", "torchvision", "pybullet", "transformers", "cv2")]
        print("BAD", bad)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "BAD []" in r.stdout, r.stdout


def test_da3_missing_package_gives_install_hint(tmp_path):
    """With depth_anything_3 unimportable, constructing the adapter raises an ImportError that
    says how to install it the project's way (simulated by blocking the module)."""
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    r = _run_py(
        f"""
        import sys
        sys.modules["depth_anything_3"] = None  # import of it raises ImportError
        from mirage_core.perception import DepthAnything3Depth, MissingDependencyError
        try:
            DepthAnything3Depth({str(tmp_path)!r})
        except MissingDependencyError as e:
            assert isinstance(e, ImportError)
            print("MSG", e)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "scripts/install_da3.sh" in r.stdout and "--no-deps" in r.stdout


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"frames": torch.rand(3, H, W)}, ShapeError),
        ({"frames": torch.rand(2, 4, H, W)}, ShapeError),
        ({"frames": (torch.rand(2, 3, H, W) * 255).to(torch.uint8)}, ShapeError),
        ({"frames": torch.rand(2, 3, H, W) * 255}, MirageInputError),
        ({"frames": torch.full((2, 3, H, W), float("nan"))}, MirageInputError),
        ({"T_world_cam": torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)}, ShapeError),
        ({"T_world_cam": torch.eye(4, dtype=torch.float64)}, ShapeError),
        ({"T_world_cam": torch.zeros(2, 4, 4, dtype=torch.float64)}, PoseError),
        ({"K": torch.eye(4)}, ShapeError),
        ({"frame_indices": [0]}, ShapeError),
        ({"frame_indices": [0, -1]}, MirageInputError),
        ({"frame_indices": [0, 1.5]}, MirageInputError),
    ],
)
def test_bad_inputs_raise(kwargs, err):
    args = {"frames": _frames(2), "K": _K(), "T_world_cam": _poses(2), "frame_indices": [0, 1]}
    args.update(kwargs)
    with pytest.raises(err):
        ConstantDepth(2.0).estimate(**args)
    with pytest.raises(err):
        NoMasks().masks(**args)


def test_bad_reference_depth_raises():
    from mirage_core.perception.base import check_reference_depth

    assert check_reference_depth(None, 2) is None
    assert check_reference_depth(torch.ones(2, 4, 7, dtype=torch.float64), 2).dtype == torch.float32
    with pytest.raises(ShapeError):
        check_reference_depth(torch.ones(3, 4, 7), 2)
    with pytest.raises(ShapeError):
        check_reference_depth(np.ones((2, 4, 7)), 2)
    with pytest.raises(DepthError):
        check_reference_depth(torch.full((2, 4, 7), -1.0), 2)
    with pytest.raises(DepthError):
        check_reference_depth(torch.full((2, 4, 7), float("nan")), 2)


# --------------------------------------------------------------------------- given / constant


def test_given_depth_returns_the_requested_frames_mapping_and_array():
    rng = np.random.default_rng(0)
    arr = rng.uniform(0.5, 5.0, (5, H, W)).astype(np.float32)
    sky = rng.uniform(size=(5, H, W)) > 0.8
    for prov in (
        GivenDepth(arr, sky),
        GivenDepth({t: arr[t] for t in range(5)}, {t: sky[t] for t in range(5)}),
        GivenDepth(torch.from_numpy(arr), torch.from_numpy(sky)),
    ):
        est = prov.estimate(_frames(2), _K(), _poses(2), [3, 1])
        assert isinstance(est, DepthEstimate)
        assert est.depth.dtype == torch.float32 and est.depth.shape == (2, H, W)
        np.testing.assert_array_equal(est.depth.numpy(), arr[[3, 1]])
        np.testing.assert_array_equal(est.sky.numpy(), sky[[3, 1]])
        assert est.scale == [1.0, 1.0]


def test_given_depth_missing_frame_names_the_index():
    prov = GivenDepth({0: np.ones((H, W)), 4: np.ones((H, W))})
    with pytest.raises(MirageInputError, match=r"frame 2 .*\[0, 4\]"):
        prov.estimate(_frames(2), _K(), _poses(2), [0, 2])
    prov = GivenDepth(np.ones((3, H, W)))
    with pytest.raises(MirageInputError, match=r"frame 7 \(have frames 0\.\.2\)"):
        prov.estimate(_frames(1), _K(), _poses(1), [7])


def test_given_depth_validates_values_and_sizes():
    bad = np.ones((2, H, W), np.float32)
    bad[1, 3, 4] = np.nan
    bad[1, 5, 6] = np.inf
    with pytest.raises(DepthError, match="frame 1"):
        GivenDepth(bad)
    est = GivenDepth(bad, invalid="zero").estimate(_frames(1), _K(), _poses(1), [1])
    assert est.depth[0, 3, 4] == 0 and est.depth[0, 5, 6] == 0 and est.depth[0, 0, 0] == 1
    with pytest.raises(ShapeError, match="32x56"):
        GivenDepth(np.ones((1, H, W))).estimate(_frames(1, 32, 56), _K(32, 56), _poses(1), [0])
    with pytest.raises(ShapeError):
        GivenDepth(np.ones((H, W)))  # a single map, not [T, H, W]
    with pytest.raises(MirageInputError, match="lacks frames"):
        GivenDepth(np.ones((2, H, W)), {0: np.zeros((H, W), bool)})


def test_given_masks_and_no_masks():
    m = np.zeros((3, H, W), bool)
    m[2, :5, :7] = True
    out = GivenMasks(m).masks(_frames(2), _K(), _poses(2), [2, 0])
    assert out.dtype == torch.bool and out.shape == (2, H, W)
    assert int(out[0].sum()) == 35 and not out[1].any()
    with pytest.raises(MirageInputError, match="frame 5"):
        GivenMasks(m).masks(_frames(1), _K(), _poses(1), [5])
    z = NoMasks().masks(_frames(2), _K(), _poses(2), [0, 1])
    assert z.dtype == torch.bool and z.shape == (2, H, W) and not z.any()


def test_constant_depth_is_a_plane_for_smoke_tests():
    with pytest.warns(UserWarning, match="smoke tests"):
        est = ConstantDepth(2.5).estimate(_frames(3), _K(), _poses(3), [0, 1, 2])
    assert est.depth.shape == (3, H, W) and torch.all(est.depth == 2.5)
    assert est.sky is None and "smoke test" in est.source
    with pytest.raises(MirageInputError):
        ConstantDepth(0.0)


# --------------------------------------------------------------------------- scale alignment


def _smooth_depth(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 4, 4, generator=g) * 3 + 1
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0, 0]


@pytest.mark.parametrize("mode", ["bilinear", "area", "nearest", "median"])
def test_align_scale_recovers_a_known_factor(mode):
    pred = _smooth_depth(H, W)
    ref = 3.7 * downsample_depth(pred, (4, 7), mode)
    ref[0, :3] = 0  # unknown cells are ignored
    ref[1, 0] *= 10  # one outlier: the median ignores it
    s, n = align_scale_to_reference(pred, ref, mode=mode, min_cells=8)
    assert n == 28 - 3
    assert s == pytest.approx(3.7, rel=1e-5)


def test_align_scale_excludes_masked_pixels_and_needs_overlap():
    pred = _smooth_depth(H, W)
    ref = 2.0 * downsample_depth(pred, (4, 7))
    sky = torch.zeros(H, W, dtype=torch.bool)
    sky[:16] = True  # top latent row is sky
    pred_sky_wrong = pred.clone()
    pred_sky_wrong[:16] = 1000.0  # garbage depth under the sky mask
    s, n = align_scale_to_reference(pred_sky_wrong, ref, exclude=sky, min_cells=4)
    assert n == 21 and s == pytest.approx(2.0, rel=1e-5)
    s, n = align_scale_to_reference(pred, torch.zeros(4, 7), min_cells=1)
    assert s is None and n == 0
    with pytest.raises(ShapeError):
        align_scale_to_reference(pred[:60], ref)  # 60 is not a multiple of 4 * 16


def test_scale_aligner_initial_aligned_carried():
    pred = _smooth_depth(H, W)
    al = ScaleAligner(initial_scale=0.5, min_cells=4)
    assert al.scale_for(pred, None) == (0.5, "initial")
    s, how = al.scale_for(pred, 1.5 * downsample_depth(pred, (4, 7)))
    assert s == pytest.approx(1.5, rel=1e-5) and how.startswith("aligned")
    s, how = al.scale_for(pred, torch.zeros(4, 7))  # no overlap: keep the last scale
    assert s == pytest.approx(1.5, rel=1e-5) and how == "carried"
    al.reset()
    assert al.scale_for(pred, None)[1] == "initial"


# --------------------------------------------------------------------------- factories


def test_factories_parse_specs(tmp_path):
    assert isinstance(make_depth_provider("constant:2.5"), ConstantDepth)
    assert make_depth_provider("constant:2.5").z == 2.5
    assert isinstance(make_mask_provider("none"), NoMasks)
    np.save(tmp_path / "d.npy", np.ones((2, H, W), np.float32))
    assert isinstance(make_depth_provider(f"given:{tmp_path / 'd.npy'}"), GivenDepth)
    np.save(tmp_path / "m.npy", np.zeros((2, H, W), bool))
    assert isinstance(make_mask_provider(f"given:{tmp_path / 'm.npy'}"), GivenMasks)
    # shared keywords are ignored where unused; others raise
    assert isinstance(make_mask_provider("none", device="cpu", scene=None), NoMasks)
    with pytest.raises(MirageInputError, match="process_res"):
        make_depth_provider("constant:1", process_res=56)
    for bad in ("bogus", "constant:abc", "", "sim:x"):
        with pytest.raises(MirageInputError):
            make_depth_provider(bad)
    with pytest.raises(MirageInputError, match="scene"):
        make_depth_provider("sim")
    with pytest.raises(MirageInputError):
        make_mask_provider("sam3")


def test_missing_weights_dirs_name_the_directory(tmp_path):
    missing = tmp_path / "no" / "DA3METRIC-LARGE"
    with pytest.raises(WeightsNotFoundError) as ei:
        make_depth_provider(f"da3:{missing}:metric")
    msg = str(ei.value)
    assert repr(str(missing)) in msg and "hf download depth-anything/DA3METRIC-LARGE" in msg
    assert "Nothing is downloaded" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match=r"lacks config\.json, model\.safetensors"):
        make_depth_provider(f"da3:{empty}")
    with pytest.raises(WeightsNotFoundError) as ei:
        make_mask_provider(f"sam3:{missing}")
    assert repr(str(missing)) in str(ei.value) and "facebook/sam3" in str(ei.value)
    with pytest.raises(WeightsNotFoundError, match="tokenizer"):
        make_mask_provider(f"sam3:{empty}")
    assert issubclass(WeightsNotFoundError, FileNotFoundError)


# --------------------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def room():
    pytest.importorskip("pybullet")
    from mirage_core.sim import PyBulletScene

    with PyBulletScene("room", seed=0, dynamic=True) as scene:
        yield scene


def _ball_view(scene, t):
    """Rollout-world pose (world = start pose) of a camera looking at the ball at time t."""
    from mirage_core.sim.pybullet_scene import pose_looking_at

    ball = scene.ball_position(t)
    T_sim_cam = pose_looking_at(ball + np.array([-2.0, 0.3, 0.6]), ball)
    T_sim_world = torch.as_tensor(scene.default_start_pose())
    return se3_inverse(T_sim_world) @ torch.as_tensor(T_sim_cam), T_sim_cam


def test_sim_depth_and_masks_equal_the_scene_render(room):
    fps = 4.0
    idx = [0, 6]
    poses, sim_poses = zip(*(_ball_view(room, t / fps) for t in idx), strict=True)
    T = torch.stack(list(poses))
    K = _K()
    depth_p = make_depth_provider("sim", scene=room, fps=fps, device="cpu")
    mask_p = make_mask_provider("sim", scene=room, fps=fps)
    est = depth_p.estimate(_frames(2), K, T, idx)
    dyn = mask_p.masks(_frames(2), K, T, idx)
    for i, t in enumerate(idx):
        fr = room.render(sim_poses[i], K.numpy(), H, W, time=t / fps)
        ref = np.where(np.isfinite(fr.depth), fr.depth, 0.0)
        np.testing.assert_allclose(est.depth[i].numpy(), ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(est.sky[i].numpy(), fr.sky_mask)
        np.testing.assert_array_equal(dyn[i].numpy(), fr.dynamic_mask)
        np.testing.assert_array_equal(
            dyn[i].numpy(), np.isin(fr.segmentation, room.dynamic_ids)
        )
        assert dyn[i].sum() > 20  # the ball is in view at its own time
    assert torch.isfinite(est.depth).all() and (est.depth >= 0).all()
    # time = frame_index / fps: at frame 0 the camera of frame 6 sees the ball elsewhere
    off = mask_p.masks(_frames(1), K, T[1:], [0])
    assert not torch.equal(off[0], dyn[1])


def test_sim_outdoor_sky_has_zero_depth():
    pytest.importorskip("pybullet")
    from mirage_core.perception import SimulatorDepth
    from mirage_core.sim import PyBulletScene

    with PyBulletScene("outdoor", seed=0, dynamic=False) as scene:
        T0 = torch.eye(4, dtype=torch.float64)[None]  # the start pose: looking at the horizon
        est = SimulatorDepth(scene, fps=10).estimate(_frames(1), _K(), T0, [0])
    assert est.sky[0].any() and (est.depth[0][est.sky[0]] == 0).all()
    assert (est.depth[0][~est.sky[0]] > 0).all()


# --------------------------------------------------------------------------- depth-anything-3


def test_da3_random_weights_end_to_end_align_to_memory(da3_small_dir):
    from mirage_core.perception.da3 import DepthAnything3Depth

    frames, K, T = _frames(2), _K(), _poses(2)
    raw = make_depth_provider(f"da3:{da3_small_dir}:none", process_res=56)
    assert isinstance(raw, DepthAnything3Depth) and raw.scale_policy == "none"
    with pytest.warns(UserWarning, match="relative"):
        e0 = raw.estimate(frames, K, T, [0, 1])
    assert e0.depth.shape == (2, H, W) and e0.depth.dtype == torch.float32
    assert e0.sky is None  # da3-small has no sky head
    assert (e0.depth > 0).all() and torch.isfinite(e0.depth).all()
    assert "torchvision" not in sys.modules

    al = make_depth_provider(f"da3:{da3_small_dir}", process_res=56, initial_scale=0.25)
    assert al.scale_policy == "align_to_memory"  # auto, relative model
    first = al.estimate(frames, K, T, [0, 1])  # nothing in memory yet: initial scale
    assert first.scale == [0.25, 0.25]
    torch.testing.assert_close(first.depth, 0.25 * e0.depth)
    ref = torch.stack([downsample_depth(e0.depth[i], (4, 7)) for i in range(2)])
    ref[0] *= 3.0
    ref[1] *= 5.0
    ref[1, :1] = 0.0  # part of the view not in memory
    est = al.estimate(frames, K, T, [4, 5], reference_depth=ref)
    assert est.scale == pytest.approx([3.0, 5.0], rel=1e-5)
    torch.testing.assert_close(est.depth[1], 5.0 * e0.depth[1], rtol=1e-5, atol=1e-6)
    assert "aligned (28 cells)" in est.source and "aligned (21 cells)" in est.source
    # one network call per frame (an any-view model then sees each frame alone)
    one = make_depth_provider(f"da3:{da3_small_dir}:none", process_res=56, batch_size=1)
    with pytest.warns(UserWarning):
        e1 = one.estimate(frames, K, T, [0, 1])
    assert e1.depth.shape == e0.depth.shape and (e1.depth > 0).all()
    ref[:, :3] = 0.0  # 7 cells < min_cells=16: the last scale is carried over
    est = al.estimate(frames[:1], K, T[:1], [6], reference_depth=ref[:1])
    assert est.scale == pytest.approx([5.0], rel=1e-5) and "carried" in est.source
    with pytest.raises(MirageInputError, match="metric model"):
        make_depth_provider(f"da3:{da3_small_dir}:metric")


def test_da3_weights_that_do_not_match_raise(tmp_path, da3_small_dir):
    from safetensors.torch import save_file

    from mirage_core.perception.da3 import DepthAnything3Depth

    d = tmp_path / "bad"
    d.mkdir()
    save_file({"model.not_a_layer": torch.zeros(2)}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    p = DepthAnything3Depth(d)
    with pytest.raises(WeightsNotFoundError, match="does not match model 'da3-small'"):
        p.load()
    (d / "config.json").write_text(json.dumps({"model_name": "da3-tiny-unknown"}))
    with pytest.raises(MirageInputError, match="da3-tiny-unknown"):
        DepthAnything3Depth(d)


@pytest.mark.slow
def test_da3_metric_large_random_weights_real_architecture(tmp_path, save_da3):
    """The real da3metric-large network (334M parameters, random weights): metric conversion,
    sky head and resizing through the actual DPT head."""
    pytest.importorskip("depth_anything_3")
    from mirage_core.perception._da3_import import import_da3
    from mirage_core.perception.da3 import DepthAnything3Depth

    m = import_da3()
    torch.manual_seed(0)
    net = m.create_object(m.load_config(m.registry.MODEL_REGISTRY["da3metric-large"]))
    save_da3(net, tmp_path / "m", "da3metric-large")
    raw_net = net.eval()
    p = DepthAnything3Depth(tmp_path / "m", process_res=56)
    assert p.scale_policy == "metric"
    est = p.estimate(_frames(2), _K(), _poses(2), [0, 1])
    assert est.depth.shape == (2, H, W) and est.sky.shape == (2, H, W)
    assert est.sky.dtype == torch.bool and (est.depth[est.sky] == 0).all()
    with torch.no_grad():
        raw = raw_net(p._preprocess(_frames(2)), None, None, [], False, False, "saddle_balanced")
    hp, wp = raw["depth"].shape[-2:]
    f = 0.5 * (80.0 * wp / W + 80.0 * hp / H)
    up = torch.nn.functional.interpolate(raw["depth"][0][:, None], size=(H, W), mode="bilinear")
    ok = est.depth > 0
    torch.testing.assert_close(est.depth[ok], (up[:, 0] * f / 300)[ok], rtol=1e-4, atol=1e-5)


class _FakeHead(torch.nn.Module):
    """Stands in for a DA3 network: depth = 2 + row index / h, sky = top quarter of the image."""

    def __init__(self, with_sky=True):
        super().__init__()
        self.with_sky = with_sky
        self.calls = []

    def forward(self, x, *args):
        self.calls.append(tuple(x.shape))
        _, n, _, h, w = x.shape
        rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        out = {"depth": (2.0 + rows / h).expand(1, n, h, w).clone()}
        if self.with_sky:
            out["sky"] = (rows < h / 4).float().expand(1, n, h, w).clone()
        return out


class _FakeNested(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.da3_metric = _FakeHead(with_sky=True)

    def forward(self, x, *args):
        metric = self.da3_metric(x)
        return {"depth": metric["depth"] * 1.0}  # the nested net returns no sky itself


def _fake_da3_dir(tmp_path, model_name):
    d = tmp_path / model_name
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    (d / "config.json").write_text(json.dumps({"model_name": model_name}))
    return d


def test_da3_metric_conversion_sky_and_resizing(tmp_path):
    pytest.importorskip("depth_anything_3")
    from mirage_core.perception.da3 import DepthAnything3Depth, da3_preprocess_size

    H2, W2 = 120, 200
    K = _K(H2, W2, f=150.0)
    p = DepthAnything3Depth(_fake_da3_dir(tmp_path, "da3metric-large"), process_res=196)
    assert p.scale_policy == "metric" and p.kind == "metric_focal"
    p._net = _FakeHead()
    est = p.estimate(_frames(2, H2, W2), K, _poses(2), [0, 1])
    _, _, hp, wp = da3_preprocess_size(H2, W2, 196)
    assert (hp, wp) == (112, 196) and p._net.calls == [(1, 2, 3, 112, 196)]
    f = 0.5 * (150.0 * wp / W2 + 150.0 * hp / H2)
    assert est.scale == [1.0, 1.0] and "focal/300" in est.source
    assert est.sky.shape == (2, H2, W2) and est.sky.dtype == torch.bool
    # the top quarter is sky (depth 0); elsewhere depth = f / 300 * (2 + row / hp) resized
    assert est.sky[:, : H2 // 4 - 2].all() and not est.sky[:, H2 // 4 + 2 :].any()
    assert (est.depth[est.sky] == 0).all()
    mid = est.depth[0, H2 // 2, W2 // 2].item()
    assert mid == pytest.approx(f / 300 * (2.0 + 0.5), rel=0.02)

    # the nested model: sky taken from its metric branch through a forward hook
    q = DepthAnything3Depth(_fake_da3_dir(tmp_path, "da3nested-giant-large"), process_res=196)
    assert q.kind == "metric"
    q._net = _FakeNested()
    est2 = q.estimate(_frames(1, H2, W2), K, _poses(1), [0])
    assert est2.sky is not None and est2.sky[0, 0].all()
    assert est2.depth[0, H2 // 2, W2 // 2].item() == pytest.approx(2.5, rel=0.02)
    assert not q._net.da3_metric._forward_hooks  # the hook is removed


def test_da3_preprocess_sizes_match_upstream_rule():
    from mirage_core.perception.da3 import da3_preprocess_size

    assert da3_preprocess_size(704, 1280, 504) == (277, 504, 280, 504)
    assert da3_preprocess_size(120, 200, 196) == (118, 196, 112, 196)
    assert da3_preprocess_size(504, 504, 504) == (504, 504, 504, 504)
    for H_, W_ in ((480, 640), (256, 448), (33, 70)):
        h1, w1, h2, w2 = da3_preprocess_size(H_, W_, 504)
        assert max(h1, w1) == 504 and h2 % 14 == 0 and w2 % 14 == 0


# --------------------------------------------------------------------------- SAM3


def _tiny_sam3_dir(d):
    """A random-weight Sam3Model with a tiny config, a word-level tokenizer and the processor
    config Sam3Processor.save_pretrained writes (transformers 5 nests it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, Sam3Config, Sam3Model

    cfg = Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, image_size=112, patch_size=14,
                window_size=4, global_attn_indexes=[1], pretrain_image_size=56,
            ),
            fpn_hidden_size=32, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        ),
        text_config=dict(
            model_type="clip_text_model", vocab_size=16, hidden_size=32, intermediate_size=64,
            projection_dim=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        geometry_encoder_config=dict(
            hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_encoder_config=dict(
            hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_decoder_config=dict(
            hidden_size=32, num_layers=1, num_queries=8, num_attention_heads=2,
            intermediate_size=64,
        ),
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=3, num_attention_heads=2),
    )
    torch.manual_seed(0)
    model = Sam3Model(cfg).eval()
    model.save_pretrained(d)
    words = ["<|startoftext|>", "<|endoftext|>", "person", "car", "animal", "ball"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{words[0]} $A {words[1]}", special_tokens=[(words[0], 0), (words[1], 1)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=words[0], eos_token=words[1], pad_token=words[1],
        unk_token=words[1], model_max_length=32,
    ).save_pretrained(d)
    (d / "processor_config.json").write_text(json.dumps({
        "image_processor": {
            "image_processor_type": "Sam3ImageProcessor", "do_normalize": True,
            "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 1 / 255,
            "size": {"height": 112, "width": 112},
        },
        "processor_class": "Sam3Processor",
    }))
    return model


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Sam3Model"):
        pytest.skip("transformers without Sam3Model")
    d = tmp_path_factory.mktemp("sam3") / "sam3"
    d.mkdir()
    model = _tiny_sam3_dir(d)
    return d, model


def test_sam3_masks_union_of_instances(sam3_dir):
    from mirage_core.perception.sam3 import Sam3Masks

    d, model = sam3_dir
    frames, K, T = _frames(3, 48, 80), _K(48, 80), _poses(3)
    prov = make_mask_provider(f"sam3:{d}", prompts=("person", "car"), score_threshold=0.0,
                              batch_size=2, device="cpu")
    assert isinstance(prov, Sam3Masks)
    out = prov.masks(frames, K, T, [0, 1, 2])
    assert out.shape == (3, 48, 80) and out.dtype == torch.bool
    # reference: the model run directly per frame and prompt, Sam3Processor's post-processing
    px = prov.preprocess(frames)
    assert px.shape == (3, 3, 112, 112)
    expected = torch.zeros(3, 48, 80, dtype=torch.bool)
    for ids, am in prov._text:
        with torch.no_grad():
            res = model(
                pixel_values=px, input_ids=ids.expand(3, -1), attention_mask=am.expand(3, -1)
            )
        probs = torch.nn.functional.interpolate(
            res.pred_masks.sigmoid(), size=(48, 80), mode="bilinear", align_corners=False
        )
        expected |= (probs > 0.5).any(1)
    assert torch.equal(out, expected) and out.any() and not out.all()
    # a threshold no instance reaches masks nothing; batch size does not change the result
    assert not Sam3Masks(d, prompts="person", score_threshold=0.999).masks(
        frames, K, T, [0, 1, 2]
    ).any()
    one = Sam3Masks(d, prompts=("person", "car"), score_threshold=0.0, batch_size=1)
    assert torch.equal(one.masks(frames, K, T, [0, 1, 2]), out)


def test_sam3_preprocess_normalises_like_the_processor(sam3_dir):
    from mirage_core.perception.sam3 import Sam3Masks

    d, _ = sam3_dir
    prov = Sam3Masks(d)
    grey = torch.full((1, 3, 40, 60), 0.5)
    px = prov.preprocess(grey)
    assert px.shape == (1, 3, 112, 112)
    torch.testing.assert_close(px, torch.zeros_like(px), atol=1e-5, rtol=0)
    with pytest.raises(MirageInputError):
        Sam3Masks(d, prompts=())


def test_missing_dependency_error_is_an_import_error():
    assert issubclass(MissingDependencyError, ImportError)
