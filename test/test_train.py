"""Training (method.md section 5) with tiny random-weight models on the CPU."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import assert_resume_is_bit_for_bit

from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError
from mirage_core.generator.loading import load_models
from mirage_core.generator.sampler import SamplerConfig
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.perception import ConstantDepth
from mirage_core.rollout import MirageRollout, RolloutConfig
from mirage_core.rollout.inputs import check_image
from mirage_core.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    TrainConfig,
    apply_lora,
    chunk_inputs,
    flow_matching_loss,
    main_train,
    synthetic_clips,
    train,
)
from mirage_core.train.lora import lora_state_dict
from mirage_core.trajectory import make_trajectory

H, W = 64, 96


@pytest.fixture(scope="module")
def clips():
    return synthetic_clips(3, 9, (H, W), text_dim=32, seed=1)


def _models(weights):
    return load_models(weights, side_branch="zero", device="cpu")


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(stage=1, lr=1e-3, steps=4, log_every=1, save_every=2, progress=False,
                tensorboard=False, text_dropout=0.2, out_dir=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def _forward(models, clip):
    inp = chunk_inputs(clip, 48, 16, "cpu")
    x = torch.cat([inp.clean, inp.targets], dim=2)
    with torch.no_grad():
        return models.transformer(x, 500.0, inp.labels, clip.prompt_embeds, inp.readout,
                                  inp.mask)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def test_config_checks_and_files(tmp_path):
    assert TrainConfig.stage1().peak_lr == 1e-5 and TrainConfig.stage2().peak_lr == 1e-4
    assert TrainConfig().betas == (0.0, 0.999) and TrainConfig().weight_decay == 1e-3
    with pytest.raises(MirageInputError, match="stage"):
        TrainConfig(stage=3)
    with pytest.raises(MirageInputError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(MirageInputError, match="conditioning"):
        TrainConfig(conditioning="rgb")
    assert TrainConfig().conditioning == "latent"
    p = tmp_path / "c.yaml"
    p.write_text("stage: 2\nsteps: 10\nbetas: [0.0, 0.99]\n")
    c = TrainConfig.from_file(p)
    assert c.stage == 2 and c.steps == 10 and c.betas == (0.0, 0.99) and c.lora_rank == 64
    p.write_text("stage: 2\nstpes: 10\n")
    with pytest.raises(MirageInputError, match="stpes"):
        TrainConfig.from_file(p)


def test_lora_zero_init_leaves_the_forward_unchanged(tiny_weights, clips):
    models = _models(tiny_weights)
    with torch.no_grad():  # non-zero side branch so the whole path is exercised
        for m in models.transformer.side_branch.proj_out:
            m.weight.normal_(0, 0.05)
    before = _forward(models, clips[0])
    names = apply_lora(models.transformer.backbone, rank=4, alpha=4.0, dropout=0.05)
    assert len(names) == 4 * 8 and names[0] == "blocks.0.attn1.to_q"
    models.transformer.eval()
    assert torch.equal(_forward(models, clips[0]), before)
    with pytest.raises(MirageInputError, match="already"):
        apply_lora(models.transformer.backbone, rank=4)


@pytest.mark.parametrize("stage", [1, 2])
def test_only_the_stage_parameters_train(tiny_weights, clips, tmp_path, stage):
    models = _models(tiny_weights)
    bb, vae = _snapshot(models.transformer.backbone), _snapshot(models.vae.vae)
    sb = _snapshot(models.transformer.side_branch)
    res = train(_cfg(tmp_path, stage=stage, steps=2, lora_rank=4, lora_alpha=4.0), clips,
                models)
    assert res.step == 2 and all(np.isfinite(res.losses))
    assert _changed(vae, models.vae.vae) == set()
    changed_sb = _changed(sb, models.transformer.side_branch)
    assert any(k.startswith("proj_out") for k in changed_sb)
    # the frozen backbone weights (the LoRA base layers included) are untouched
    own = {k.replace(".base.", "."): v for k, v in models.transformer.backbone.state_dict().items()
           if ".lora_" not in k}
    assert {k for k, v in own.items() if not torch.equal(v, bb[k])} == set()
    lora = lora_state_dict(models.transformer.backbone)
    if stage == 1:
        assert lora == {}
    else:
        assert len(lora) == 2 * 4 * 8
        assert any(k.endswith("lora_B") and v.abs().sum() > 0 for k, v in lora.items())
        assert (res.checkpoint / "lora.safetensors").is_file()
    # the saved side branch loads as an inference side branch
    load_models(tiny_weights, side_branch=res.checkpoint / "mirage_side_branch.safetensors",
                device="cpu", load_text_encoder=False)


def test_loss_decreases_when_overfitting_one_clip(tiny_weights, clips, tmp_path):
    models = _models(tiny_weights)
    clip = clips[0]
    g = torch.Generator().manual_seed(0)
    inp = chunk_inputs(clip, 48, 16, "cpu")
    noise = torch.randn(inp.targets.shape, generator=g)

    def probe() -> float:
        with torch.no_grad():
            return float(flow_matching_loss(models.transformer, inp, clip.prompt_embeds, 0.7,
                                            noise))

    l0 = probe()
    train(_cfg(tmp_path, steps=25, lr=3e-3, text_dropout=0.0, warmup_steps=2, save_every=25,
               log_every=5), [clip], models)
    models.transformer.eval()
    l1 = probe()
    assert np.isfinite(l1) and l1 < 0.97 * l0, (l0, l1)


def test_resume_is_bit_for_bit(tiny_weights, clips, tmp_path):
    first, second, _ = assert_resume_is_bit_for_bit(
        lambda d: _cfg(d, stage=2, lora_rank=4), lambda: _models(tiny_weights), clips, tmp_path)
    assert first.checkpoint.name == "step_00000002" and second.step == 4
    cfg_b = _cfg(tmp_path / "b", stage=2, lora_rank=4)
    # a fresh run into a directory with checkpoints is refused
    with pytest.raises(MirageInputError, match="resume"):
        train(cfg_b, clips, _models(tiny_weights))


def test_resume_with_another_config_names_the_fields(tiny_weights, clips, tmp_path):
    cfg = _cfg(tmp_path, steps=2, save_every=1)
    train(cfg, clips, _models(tiny_weights), stop_after=1)
    other = replace(cfg, lr=5e-4, text_dropout=0.0, log_every=7)
    with pytest.raises(CheckpointMismatchError) as e:
        train(other, clips, _models(tiny_weights), resume=True)
    msg = str(e.value)
    assert "lr: 0.001 vs 0.0005" in msg and "text_dropout" in msg and "log_every" not in msg


def test_resume_with_more_steps_extends_the_run_with_a_warning(tiny_weights, clips, tmp_path):
    cfg = _cfg(tmp_path, steps=2)
    train(cfg, clips, _models(tiny_weights))
    with pytest.warns(UserWarning, match="cosine schedule now spans 4"):
        res = train(replace(cfg, steps=4), clips, _models(tiny_weights), resume=True)
    assert res.step == 4 and len(res.losses) == 2 and all(np.isfinite(res.losses))
    with pytest.raises(CheckpointMismatchError, match="at step 4, past steps=3"):
        train(replace(cfg, steps=3), clips, _models(tiny_weights), resume=True)


def test_nan_loss_stops_with_the_step_and_clip_and_keeps_the_checkpoint(tiny_weights, clips,
                                                                         tmp_path):
    bad = Clip(**{**clips[2].__dict__, "prompt_embeds": torch.full((1, 8, 32), float("nan")),
                  "key": "re10k/bad/000"})
    data = [clips[0], clips[1], bad]
    cfg = _cfg(tmp_path, shuffle=False, save_every=1, text_dropout=0.0)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, data, _models(tiny_weights))
    assert e.value.step == 3 and e.value.clip_key == "re10k/bad/000"
    assert "step 3" in str(e.value) and "re10k/bad/000" in str(e.value)
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_00000001", "step_00000002"]
    assert "step_00000002" in str(e.value)


def test_training_readout_equals_the_rollout_readout(tiny_weights, monkeypatch):
    """The sampler receives exactly the tensors training builds for the same clip."""
    import mirage_core.rollout.chunked as chunked

    models = load_models(tiny_weights, side_branch="zero", device="cpu")
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 33, K=K, image_hw=(H, W))
    T = traj.T_world_cam.clone()
    T[:, :3, 3] += torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)  # world != camera 0
    traj = replace(traj, T_world_cam=T)
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)

    seen = {}

    class _Stop(Exception):
        pass

    def fake_denoise(model, clean, labels, text, readout, mask, *a, **k):
        seen.update(clean=clean, labels=list(labels), readout=readout, mask=mask)
        raise _Stop

    monkeypatch.setattr(chunked, "denoise_chunk", fake_denoise)
    cfg = RolloutConfig(sampler=SamplerConfig(steps=1), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roll = MirageRollout(models, ConstantDepth(2.0), None, cfg)
        with pytest.raises(_Stop):
            list(roll.run(img, traj, prompt="a room"))

    z0 = models.vae.encode(check_image(img)[None])[0]  # [48, h, w]
    lat = torch.randn((9, 48, H // 16, W // 16))
    lat[0] = z0
    clip = Clip(latents=lat, depth=torch.full((9, H, W), 2.0),
                mask=torch.zeros((9, H, W), dtype=torch.bool),
                T_world_cam=traj.T_world_cam[::4].clone(), K=K, image_hw=(H, W))
    inp = chunk_inputs(clip, models.vae.channels, models.vae.stride, models.device)
    assert inp.labels == seen["labels"]
    assert torch.equal(inp.clean, seen["clean"])
    assert torch.equal(inp.readout, seen["readout"])
    assert torch.equal(inp.mask, seen["mask"])
    assert 0.0 < inp.mask.mean() < 1.0


def test_rgb_cache_training_readout_equals_the_rollout_readout(tmp_path, monkeypatch):
    """``conditioning: rgb_cache`` builds what the rollout's RGB-cache baseline gives the
    sampler. Training writes the frames its store holds as latents, decoded; with a lossless
    codec that is the input image itself, so the tensors must be equal."""
    import mirage_core.rollout.chunked as chunked
    from mirage_core.generator.loading import build_small_weights

    w = build_small_weights(tmp_path / "w", codec="space_time_to_depth:2")
    models = load_models(w, side_branch="zero", device="cpu")
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 33, K=K, image_hw=(H, W))
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    seen = {}

    class _Stop(Exception):
        pass

    def fake_denoise(model, clean, labels, text, readout, mask, *a, **k):
        seen.update(clean=clean, readout=readout, mask=mask)
        raise _Stop

    monkeypatch.setattr(chunked, "denoise_chunk", fake_denoise)
    cfg = RolloutConfig(sampler=SamplerConfig(steps=1), progress=False,
                        conditioning="rgb_cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roll = MirageRollout(models, ConstantDepth(2.0), None, cfg)
        with pytest.raises(_Stop):
            list(roll.run(img, traj, prompt="a room"))

    z0 = models.vae.encode(check_image(img)[None])[0]
    lat = torch.randn((9, *z0.shape))
    lat[0] = z0
    clip = Clip(latents=lat, depth=torch.full((9, H, W), 2.0),
                mask=torch.zeros((9, H, W), dtype=torch.bool),
                T_world_cam=traj.T_world_cam[::4].clone(), K=K, image_hw=(H, W))
    inp = chunk_inputs(clip, models.vae.channels, models.vae.stride, models.device,
                       conditioning="rgb_cache", codec=models.vae)
    assert torch.equal(inp.clean, seen["clean"])
    assert torch.equal(inp.mask, seen["mask"]) and 0.0 < inp.mask.mean() < 1.0
    torch.testing.assert_close(inp.readout, seen["readout"], rtol=0, atol=1e-5)
    # and it is not the latent memory's readout
    lat_inp = chunk_inputs(clip, models.vae.channels, models.vae.stride, models.device)
    assert not torch.allclose(lat_inp.readout, inp.readout, atol=1e-3)
    with pytest.raises(MirageInputError, match="needs the models' codec"):
        chunk_inputs(clip, models.vae.channels, models.vae.stride, conditioning="rgb_cache")


def test_main_train_tiny_smoke(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main_train(["--tiny", "--steps", "2", "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").read_text().count("\n") == 2
    assert (out / "checkpoints" / "step_00000002" / "config.json").is_file()
    assert main_train(["--tiny", "--steps", "3", "--out", str(out)]) == 2  # exists: no resume
    assert "resume" in capsys.readouterr().err


def test_command_line_values_replace_the_files_before_it_is_checked(tmp_path, capsys):
    """A file valid only with the command line's --steps (warmup_steps < steps) trains."""
    p = tmp_path / "c.yaml"
    p.write_text("steps: 1\nwarmup_steps: 1\nlog_every: 1\nsave_every: 1\n"
                 "progress: false\ntensorboard: false\n")
    with pytest.raises(MirageInputError, match="warmup_steps"):
        TrainConfig.from_file(p)
    assert TrainConfig.from_file(p, steps=2).steps == 2
    out = tmp_path / "run"
    assert main_train(["--config", str(p), "--tiny", "--steps", "2", "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").read_text().count("\n") == 2


def test_mirage_train_runs_on_a_synthesized_clip_store(tmp_path):
    """End to end through the CLI: `mirage data synth` -> `mirage train --data` (tiny)."""
    from mirage_core.cli import main

    store = tmp_path / "clips"
    assert main(["data", "synth", "--out", str(store), "--n-clips", "2", "--vae", "tiny",
                 "--no-progress"]) == 0
    assert main(["data", "validate", str(store)]) == 0
    out = tmp_path / "run"
    assert main(["train", "--tiny", "--data", str(store), "--steps", "2", "--out", str(out)]) == 0
    assert any(out.rglob("mirage_side_branch.safetensors"))
    # several stores train as one: an epoch of 4 steps visits both stores' clips
    other = tmp_path / "clips_seed1"
    assert main(["data", "synth", "--out", str(other), "--n-clips", "2", "--vae", "tiny",
                 "--seed", "1", "--no-progress"]) == 0
    out2 = tmp_path / "run2"
    assert main(["train", "--tiny", "--data", str(store), str(other), "--steps", "4",
                 "--out", str(out2)]) == 0
    seen = {json.loads(x)["clip"] for x in (out2 / "metrics.jsonl").read_text().splitlines()}
    assert {k.split("/")[1] for k in seen} == {"0", "1"} and len(seen) == 4
