"""The generator's model pieces: segment-aware RoPE, side branch, transformer, sampler."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError
from mirage_core.generator.configs import default_side_layers, transformer_config
from mirage_core.generator.sampler import SamplerConfig, denoise_chunk, make_scheduler
from mirage_core.generator.segment_rope import (
    SegmentLabel,
    SegmentRoPE,
    SegmentRoPEConfig,
    segment_positions,
    segment_rope_reference,
)
from mirage_core.generator.side_branch import (
    MemorySideBranch,
    SideBranchConfig,
    SideBranchMismatchError,
)
from mirage_core.generator.transformer import MirageTransformer, per_token_timesteps

R, P, T = SegmentLabel.REFERENCE, SegmentLabel.PRECEDING, SegmentLabel.TARGET


@pytest.fixture(scope="module")
def backbone():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return WanTransformer3DModel(**transformer_config("tiny")).eval()


def _branch(backbone, random_out: bool, seed: int = 1) -> MemorySideBranch:
    sb = MemorySideBranch(SideBranchConfig.for_backbone(backbone))
    sb.init_from_backbone(backbone)
    if random_out:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in (sb.mask_embedding, sb.proj_in, *sb.proj_out):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    return sb.eval()


def _inputs(F=5, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 48, F, h, w), generator=g)
    text = torch.randn((1, 7, 32), generator=g)
    ro = torch.randn((1, 48, F, h, w), generator=g)
    mask = torch.rand((1, F, h, w), generator=g) > 0.5
    return x, text, ro, mask


# ----------------------------------------------------------------------------- RoPE
def test_segment_positions_table():
    assert segment_positions([P] + [T] * 8).tolist() == list(range(9))
    assert segment_positions([R, P, T, T]).tolist() == [-9, 0, 1, 2]
    assert segment_positions([R, P, P, T], SegmentRoPEConfig(reference_position=-20)).tolist() == [
        -20, -1, 0, 1
    ]
    with pytest.raises(MirageInputError, match="not a SegmentLabel"):
        segment_positions([0, 7])


def test_rope_matches_diffusers_for_the_ti2v_layout(backbone):
    x, *_ = _inputs(F=5, h=4, w=6)
    cos_ref, sin_ref = backbone.rope(x)
    cos, sin = SegmentRoPE(24)([P, T, T, T, T], (4, 6))
    assert cos.shape == cos_ref.shape == (1, 5 * 2 * 3, 1, 24)
    torch.testing.assert_close(cos, cos_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, sin_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "labels", [[R, P, T, T], [R, R, P, P, T], [T, R, P], [P, T, R, T]], ids=str
)
def test_rope_fast_equals_slow_reference(labels):
    cfg = SegmentRoPEConfig(reference_position=-5)
    fast = SegmentRoPE(24, (1, 2, 2), cfg)(labels, (4, 6))
    slow = segment_rope_reference(labels, (4, 6), 24, (1, 2, 2), cfg)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_per_token_timesteps_zero_on_clean_frames():
    t = per_token_timesteps(700.0, [R, P, T, T], tokens_per_frame=3, batch=2)
    assert t.shape == (2, 12)
    assert t[:, :6].abs().max() == 0 and (t[:, 6:] == 700.0).all()


# ----------------------------------------------------------------------------- transformer
def test_zero_side_branch_reproduces_the_backbone(backbone):
    """Untrained (zero-initialised) branch + TI2V layout == diffusers' own forward."""
    x, text, ro, mask = _inputs()
    labels = [P, T, T, T, T]
    model = MirageTransformer(backbone, _branch(backbone, random_out=False))
    assert model.side_branch.is_zero()
    with torch.no_grad():
        ours = model(x, 500.0, labels, text, readout=ro, mask=mask)
        tt = per_token_timesteps(500.0, labels, 2 * 3, 1)
        ref = backbone(x, tt, text, return_dict=False)[0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_side_branch_hints_land_after_the_attached_blocks(backbone):
    """Fast path == the backbone's own forward with the hints added by forward hooks."""
    x, text, ro, mask = _inputs()
    labels = [P, T, T, T, T]
    sb = _branch(backbone, random_out=True)
    model = MirageTransformer(backbone, sb)
    with torch.no_grad():
        ours = model(x, 300.0, labels, text, readout=ro, mask=mask)
        # Reference: compute the hints separately, then inject them with hooks.
        S = 5 * 2 * 3
        tt = per_token_timesteps(300.0, labels, 6, 1)
        _temb, tproj, txt, _ = backbone.condition_embedder(tt.flatten(), text, None,
                                                          timestep_seq_len=S)
        tproj = tproj.unflatten(2, (6, -1))
        rope = backbone.rope(x)
        xs = backbone.patch_embedding(x).flatten(2).transpose(1, 2)
        ctrl = (backbone.patch_embedding(ro) + sb.mask_embedding(mask.float()[:, None]))
        hints = sb(xs, ctrl.flatten(2).transpose(1, 2), txt, tproj, rope)
        handles = [
            backbone.blocks[layer].register_forward_hook(lambda m, a, out, h=h: out + h)
            for layer, h in zip(sb.config.layers, hints, strict=True)
        ]
        try:
            ref = backbone(x, tt, text, return_dict=False)[0]
        finally:
            for hd in handles:
                hd.remove()
        plain = backbone(x, tt, text, return_dict=False)[0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-3  # the branch does something


def test_changing_one_label_changes_the_output(backbone):
    x, text, ro, mask = _inputs()
    model = MirageTransformer(backbone, _branch(backbone, random_out=True))
    with torch.no_grad():
        base = model(x, 400.0, [R, P, T, T, T], text, ro, mask)
        # REFERENCE -> PRECEDING: both clean (timestep 0), so only the RoPE position moves.
        moved = model(x, 400.0, [P, P, T, T, T], text, ro, mask)
        # TARGET -> PRECEDING on frame 2: position and timestep change.
        clean = model(x, 400.0, [R, P, P, T, T], text, ro, mask)
        again = model(x, 400.0, [R, P, T, T, T], text, ro, mask)
    assert torch.equal(base, again)
    assert (base[:, :, 2:] - moved[:, :, 2:]).abs().max() > 1e-4
    assert (base[:, :, 3:] - clean[:, :, 3:]).abs().max() > 1e-4


def test_transformer_shape_errors(backbone):
    model = MirageTransformer(backbone, _branch(backbone, random_out=False))
    x, text, ro, mask = _inputs()
    with pytest.raises(ShapeError, match="labels"):
        model(x, 1.0, [P, T], text)
    with pytest.raises(ShapeError, match="divisible"):
        model(torch.zeros(1, 48, 2, 3, 6), 1.0, [P, T], text)
    with pytest.raises(ShapeError, match="mask"):
        model(x, 1.0, [P, T, T, T, T], text, ro, mask[:, :2])
    with pytest.raises(MirageInputError, match="visibility mask"):
        model(x, 1.0, [P, T, T, T, T], text, ro, None)


# ----------------------------------------------------------------------------- side-branch files
def test_side_branch_save_load_roundtrip_and_mismatch(backbone, tmp_path):
    sb = _branch(backbone, random_out=True)
    path = tmp_path / "sb.safetensors"
    sb.save(path)
    back = MemorySideBranch.load(path, SideBranchConfig.for_backbone(backbone))
    for k, v in sb.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k

    other = SideBranchConfig.for_backbone(backbone, layers=(0, 2, 4))
    with pytest.raises(SideBranchMismatchError, match="layers"):
        MemorySideBranch.load(path, other)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        MemorySideBranch.load(tmp_path / "nope.safetensors", other)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(SideBranchMismatchError, match="not a Mirage side-branch"):
        MemorySideBranch.load(tmp_path / "plain.safetensors", other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(SideBranchMismatchError, match="readable"):
        MemorySideBranch.load(tmp_path / "junk.safetensors", other)


def test_default_side_layers_are_the_papers():
    assert default_side_layers(30) == (0, 4, 8, 12, 16, 20, 24, 28)


# ----------------------------------------------------------------------------- sampler
def test_scheduler_is_wan_unipc_flow():
    s = make_scheduler()  # set to Wan2.2's grid (test_generator_sampler_text.py pins it)
    assert len(s.timesteps) == 40
    c = s.config
    # flow_shift 1: the shift 5 is in the sigmas passed, as Wan2.2 builds its scheduler
    assert (c.prediction_type, c.use_flow_sigmas, c.flow_shift, c.solver_type) == (
        "flow_prediction", True, 1.0, "bh2"
    )
    assert c.final_sigmas_type == "zero"
    assert float(s.sigmas[-1]) == 0.0


def test_denoise_chunk_is_seeded_and_deterministic(backbone):
    model = MirageTransformer(backbone, _branch(backbone, random_out=True))
    x, text, _, _ = _inputs(F=2)
    labels = [R, P, T, T]
    ro = torch.randn(1, 48, 4, 4, 6)
    mask = torch.ones(1, 4, 4, 6)
    cfg = SamplerConfig(steps=4)
    a, ta = denoise_chunk(model, x, labels, text, ro, mask, cfg, seed=3)
    b, _ = denoise_chunk(model, x, labels, text, ro, mask, cfg, seed=3)
    c, _ = denoise_chunk(model, x, labels, text, ro, mask, cfg, seed=4)
    assert a.shape == (1, 48, 2, 4, 6) and len(ta) == 4
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(MirageInputError, match="clean frames first"):
        denoise_chunk(model, x, [T, R, P, T], text, config=cfg)
    with pytest.raises(ShapeError, match="clean must be"):
        denoise_chunk(model, x[:, :, :1], labels, text, config=cfg)


class _GuidedReference:
    """Slow, obvious memory guidance: the model called twice per step by hand,
    ``v_none + w (v_mem - v_none)``, handed to the sampler as a plain (unguided) model."""

    def __init__(self, model, w):
        self.model, self.w, self.device = model, w, model.device

    def __call__(self, latents, t, labels, text, readout, mask, scale):
        v_mem = self.model(latents, t, labels, text, readout, mask, scale).float()
        v_none = self.model(latents, t, labels, text).float()
        return v_none + self.w * (v_mem - v_none)


def test_memory_guidance_matches_the_two_call_reference(backbone):
    model = MirageTransformer(backbone, _branch(backbone, random_out=True))
    x, text, _, _ = _inputs(F=2)
    labels = [R, P, T, T]
    ro = torch.randn(1, 48, 4, 4, 6, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(1, 4, 4, 6)
    plain = SamplerConfig(steps=3)
    for w in (0.0, 2.5):
        guided, _ = denoise_chunk(model, x, labels, text, ro, mask,
                                  SamplerConfig(steps=3, memory_guidance=w), seed=1)
        ref, _ = denoise_chunk(_GuidedReference(model, w), x, labels, text, ro, mask, plain,
                               seed=1)
        torch.testing.assert_close(guided, ref, rtol=0, atol=1e-6)
    # w = 0 is sampling without memory; w = 1 is the paper's one-call sampler
    none, _ = denoise_chunk(model, x, labels, text, config=plain, seed=1)
    zero, _ = denoise_chunk(model, x, labels, text, ro, mask,
                            SamplerConfig(steps=3, memory_guidance=0.0), seed=1)
    torch.testing.assert_close(zero, none, rtol=0, atol=1e-6)
    one, _ = denoise_chunk(model, x, labels, text, ro, mask, plain, seed=1)
    assert not torch.allclose(one, none, atol=1e-4)  # the memory does something here
    far, _ = denoise_chunk(model, x, labels, text, ro, mask,
                           SamplerConfig(steps=3, memory_guidance=2.5), seed=1)
    assert not torch.allclose(far, one, atol=1e-4)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), True, "2"])
def test_memory_guidance_must_be_a_finite_number_at_least_zero(bad):
    with pytest.raises(MirageInputError, match="memory_guidance"):
        SamplerConfig(memory_guidance=bad)


class _Recorder:
    """The model, with every call's noisy TARGET latents and flow recorded."""

    def __init__(self, model, n_clean):
        self.model, self.n_clean, self.device, self.calls = model, n_clean, model.device, []

    def __call__(self, latents, t, labels, text, readout=None, mask=None, scale=1.0):
        flow = self.model(latents, t, labels, text, readout, mask, scale)
        self.calls.append((latents[:, :, self.n_clean:].clone(), flow[:, :, self.n_clean:]))
        return flow


@pytest.mark.parametrize("stop", [0.5, 0.9])
def test_stop_sigma_returns_the_posterior_mean_at_the_first_level_below_it(backbone, stop):
    """Slow reference: run the full sampler, record the model's calls, and form
    ``x_t - sigma_k v_k`` at the first grid level ``sigma_k <= stop`` by hand."""
    from mirage_core.generator.sampler import wan22_sampling_schedule

    model = MirageTransformer(backbone, _branch(backbone, random_out=True))
    x, text, _, _ = _inputs(F=2)
    labels = [R, P, T, T]
    ro = torch.randn(1, 48, 4, 4, 6, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(1, 4, 4, 6)
    full_cfg = SamplerConfig(steps=8, flow_shift=3.0)
    rec = _Recorder(model, n_clean=2)
    full, _ = denoise_chunk(rec, x, labels, text, ro, mask, full_cfg, seed=3)
    sigmas, _ = wan22_sampling_schedule(8, 3.0)
    k = next(i for i, s in enumerate(sigmas.tolist()) if s <= stop)
    xt, v = rec.calls[k]
    ref = xt - float(sigmas[k]) * v.float()

    cfg = SamplerConfig(steps=8, flow_shift=3.0, stop_sigma=stop)
    got, times = denoise_chunk(model, x, labels, text, ro, mask, cfg, seed=3)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert len(times) == cfg.steps_run == k + 1 < 8
    assert not torch.allclose(got, full, atol=1e-3)  # it is not the full sampler's output
    # 0 is the paper's sampler: every step, the same output as the default config
    zero, times0 = denoise_chunk(model, x, labels, text, ro, mask,
                                 SamplerConfig(steps=8, flow_shift=3.0, stop_sigma=0.0), seed=3)
    torch.testing.assert_close(zero, full, rtol=0, atol=0)
    assert len(times0) == SamplerConfig(steps=8).steps_run == 8


class _PointMassFlow:
    """The exact flow of a data distribution that is one point ``c``: on the path
    ``x_t = (1 - sigma) c + sigma eps``, ``v = eps - c = (x_t - c) / sigma``, whose posterior
    mean of ``x0`` is ``c`` at every noise level."""

    device = torch.device("cpu")

    def __init__(self, c, n_clean):
        self.c, self.n_clean = c, n_clean

    def __call__(self, latents, t, labels, text, readout=None, mask=None, scale=1.0):
        sigma = float(t) / 1000.0
        xt = latents[:, :, self.n_clean:]
        v = (xt - self.c) / sigma
        return torch.cat([torch.zeros_like(latents[:, :, :self.n_clean]), v], dim=2)


def test_stop_sigma_recovers_a_point_mass_exactly():
    """Where the model's flow is exact, the posterior mean is the data point itself."""
    c = torch.randn(1, 48, 2, 4, 6, generator=torch.Generator().manual_seed(2))
    x, text, _, _ = _inputs(F=2)
    # the model sees Wan's integer timesteps (int(1000 sigma)); give it sigma exactly
    from mirage_core.generator import sampler as S

    sigmas, _ = S.wan22_sampling_schedule(40, 3.0)

    class Exact(_PointMassFlow):
        def __call__(self, latents, t, *a, **k):
            return super().__call__(latents, 1000.0 * float(sigmas[self.i]), *a, **k)

    m = Exact(c, n_clean=2)
    m.i = 0
    cfg = SamplerConfig(steps=40, flow_shift=3.0, stop_sigma=0.5)
    got, _ = denoise_chunk(m, x, [R, P, T, T], text, config=cfg, seed=0,
                           step_callback=lambda i, n: setattr(m, "i", i + 1))
    torch.testing.assert_close(got, c, rtol=0, atol=1e-5)


def test_stop_sigma_step_count_numpy_numbers_and_unreachable_levels():
    import warnings

    import numpy as np

    assert SamplerConfig(steps=40, flow_shift=3.0, stop_sigma=0.7).steps_run == 24
    assert SamplerConfig(steps=1, stop_sigma=0.7).steps_run == 1  # never more than steps
    assert SamplerConfig(steps=2, flow_shift=3.0, stop_sigma=0.3).steps_run == 2
    assert SamplerConfig(stop_sigma=np.float32(0.5)).stop_sigma == 0.5
    assert type(SamplerConfig(memory_guidance=np.float32(1.5)).memory_guidance) is float
    # the sampler says so when its grid never gets down to stop_sigma (2 steps, shift 3:
    # levels 0.999 and 0.75), and not when it does
    c = torch.zeros(1, 48, 2, 4, 6)
    x, text, _, _ = _inputs(F=2)
    model = _PointMassFlow(c, n_clean=2)
    with pytest.warns(UserWarning, match="no effect"):
        denoise_chunk(model, x, [R, P, T, T], text,
                      config=SamplerConfig(steps=2, flow_shift=3.0, stop_sigma=0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in (0.8, 0.0):
            denoise_chunk(model, x, [R, P, T, T], text,
                          config=SamplerConfig(steps=2, flow_shift=3.0, stop_sigma=s))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True, "0.5", "np.bool_"])
def test_stop_sigma_must_be_in_0_1(bad):
    import numpy as np

    bad = np.bool_(True) if bad == "np.bool_" else bad
    with pytest.raises(MirageInputError, match="stop_sigma"):
        SamplerConfig(stop_sigma=bad)


def test_full_size_architecture_on_the_meta_device():
    """The real Wan2.2-TI2V-5B config + branch (no memory allocated): sizes as documented."""
    with torch.device("meta"):
        bb = WanTransformer3DModel(**transformer_config("full"))
        sb = MemorySideBranch(SideBranchConfig.for_backbone(bb))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(n(bb) / 1e9, 2) == 5.00
    assert round(n(sb) / 1e9, 2) == 1.39
    assert sb.config.layers == (0, 4, 8, 12, 16, 20, 24, 28)
    assert sb.config.inner_dim == 3072 and sb.config.num_heads == 24


@pytest.mark.gpu
@pytest.mark.parametrize("offload", ["none", "model"])
def test_full_size_chunk_on_cuda(offload):
    """Full-size random weights, bf16, one chunk at 704x1280 with 2 steps (GPU hosts only)."""
    import numpy as np

    from mirage_core.generator.loading import random_models
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.perception import ConstantDepth
    from mirage_core.rollout import MirageRollout, RolloutConfig
    from mirage_core.trajectory import make_trajectory

    models = random_models("full", device="cuda", offload=offload)
    H, W = 704, 1280
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 33, K=K, image_hw=(H, W))
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    r = MirageRollout(models, ConstantDepth(2.0), None,
                      RolloutConfig(sampler=SamplerConfig(steps=2), progress=False))
    (ch,) = list(r.run(img, traj, prompt_embeds=torch.randn(1, 512, 4096)))
    assert ch.frames.shape == (32, H, W, 3)
    assert ch.peak_gpu_bytes and ch.peak_gpu_bytes > 10 * 2**30
    assert torch.isfinite(ch.latents).all()
