"""Training the whole model from scratch (issue 12): the small size, ``train_backbone``,
``init: random``, memory dropout, full-model checkpoints at inference, versions, NaN stops.

Tiny random models on the CPU unless a test is about the small size itself; few steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_resume_is_bit_for_bit
from safetensors.torch import save_file

from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError
from mirage_core.generator.configs import (
    LATENT_CHANNELS,
    transformer_config,
)
from mirage_core.generator.loading import (
    BACKBONE_FILENAME,
    MODEL_CODE_VERSION,
    SIDE_BRANCH_FILENAME,
    TrainedWeightsMismatchError,
    build_small_weights,
    load_models,
    weights_size,
)
from mirage_core.safetensors_io import read_safetensors
from mirage_core.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    TrainConfig,
    chunk_inputs,
    flow_matching_loss,
    main_train,
    synthetic_clips,
    train,
)
from mirage_core.train.loop import _Dist, _memory_dropped, _step_inputs

ROOT = Path(__file__).resolve().parents[1]
H, W = 64, 96


@pytest.fixture(scope="module")
def clips():
    return synthetic_clips(3, 9, (H, W), text_dim=32, seed=1)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return build_small_weights(tmp_path_factory.mktemp("small") / "w", seed=0)


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(stage=1, lr=1e-3, steps=4, log_every=1, save_every=2, progress=False,
                tensorboard=False, text_dropout=0.2, train_backbone=True,
                out_dir=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _models(weights, text_encoder: bool = True):
    return load_models(weights, side_branch="zero", device="cpu", load_text_encoder=text_encoder)


def _forward(models, clip, readout: bool = True):
    models.transformer.eval()
    inp = chunk_inputs(clip, 48, 16, "cpu")
    x = torch.cat([inp.clean, inp.targets], dim=2)
    with torch.no_grad():
        return models.transformer(x, 500.0, inp.labels, clip.prompt_embeds,
                                  inp.readout if readout else None,
                                  inp.mask if readout else None)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def _randomize_branch(models, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    sb = models.transformer.side_branch
    with torch.no_grad():
        for m in (sb.mask_embedding, sb.proj_in, *sb.proj_out):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)


# ------------------------------------------------------------------------------ the small size
def test_the_small_size_fills_a_token_and_the_tiny_one_does_not():
    token_out = LATENT_CHANNELS * 2 * 2  # 48 channels x the (1, 2, 2) patch
    small, tiny = transformer_config("small"), transformer_config("tiny")
    hidden = small["num_attention_heads"] * small["attention_head_dim"]
    assert hidden >= token_out and small["ffn_dim"] == 4 * hidden
    assert small["num_layers"] == 8
    assert tiny["num_attention_heads"] * tiny["attention_head_dim"] < token_out  # why "small"
    with pytest.raises(ValueError, match="size"):
        transformer_config("medium")


def test_small_weights_load_through_the_common_path(small_dir):
    assert weights_size(small_dir) == "small"
    assert build_small_weights(small_dir, seed=0) == small_dir  # idempotent (marker)
    models = _models(small_dir, text_encoder=False)
    tr = models.transformer
    assert tr.backbone.config.num_layers == 8 and tr.side_branch.config.inner_dim == 192
    assert tr.side_branch.config.layers == (0, 2, 4, 6)  # every 2nd block
    assert models.source.startswith("RANDOM small weights")
    clip = synthetic_clips(1, 9, (H, W), text_dim=32, seed=0)[0]
    out = _forward(models, clip)
    assert out.shape == (1, 48, 10, H // 16, W // 16) and torch.isfinite(out).all()
    # the small sizes are accepted only in a marked directory, as the tiny ones
    from mirage_core.generator.configs import check_transformer_config

    conf = json.loads((small_dir / "transformer" / "config.json").read_text())
    with pytest.raises(MirageInputError, match="num_attention_heads"):
        check_transformer_config(conf, "x", tiny=False)


# ------------------------------------------------------------------------------ the config
def test_config_refuses_what_does_not_combine():
    with pytest.raises(MirageInputError, match=r"train_backbone.*stage 2 adds a LoRA"):
        TrainConfig(stage=2, train_backbone=True)
    with pytest.raises(MirageInputError, match="train_backbone: true"):
        TrainConfig(init="random")
    with pytest.raises(MirageInputError, match="side_branch: zero"):
        TrainConfig(init="random", train_backbone=True, side_branch="out/stage1")
    for bad in (-0.1, 1.5, True, "0.2"):
        with pytest.raises(MirageInputError, match="memory_dropout"):
            TrainConfig(memory_dropout=bad)
    with pytest.raises(MirageInputError, match="model_size"):
        TrainConfig(model_size="huge")
    with pytest.raises(MirageInputError, match="init"):
        TrainConfig(init="xavier", train_backbone=True)


def test_shipped_small_recipe_loads_and_validates():
    cfg = TrainConfig.from_file(ROOT / "config" / "train_small.yaml")
    assert cfg.model_size == "small" and cfg.weights_dir is None
    assert cfg.train_backbone and cfg.init == "random" and cfg.side_branch == "zero"
    assert cfg.stage == 1 and not cfg.uses_lora
    assert 3e-4 <= cfg.peak_lr <= 1e-3 and 0 < cfg.warmup_steps < cfg.steps
    assert 0.1 <= cfg.memory_dropout <= 0.3 and cfg.chunks == "all"
    assert cfg.save_every <= cfg.steps


def test_memory_dropout_draw_is_seeded_and_has_its_rate():
    seeds = range(2000)
    draws = [_memory_dropped(0.2, s) for s in seeds]
    assert draws == [_memory_dropped(0.2, s) for s in seeds]  # a function of the seed
    assert 0.16 < sum(draws) / len(draws) < 0.24  # binomial sd 0.009
    assert not any(_memory_dropped(0.0, s) for s in seeds)
    assert all(_memory_dropped(1.0, s) for s in seeds)


# ------------------------------------------------------------------------------ memory dropout
def test_memory_dropout_feeds_what_the_rollout_without_memory_feeds(tiny_weights, clips,
                                                                   monkeypatch):
    """A dropped step's model output is the one of ``readout=None`` (the branch skipped), which
    is what ``MirageRollout`` hands the sampler with ``memory=False``."""
    import mirage_core.rollout.chunked as chunked
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.perception import ConstantDepth
    from mirage_core.rollout import MirageRollout, RolloutConfig
    from mirage_core.trajectory import make_trajectory

    models = _models(tiny_weights, text_encoder=False)
    _randomize_branch(models)
    models.transformer.eval()
    cfg = _cfg(Path("unused"), memory_dropout=1.0, text_dropout=0.0)
    si = _step_inputs(cfg, clips, 0, _Dist(), models, None)
    assert si.memory_dropped
    assert not si.inputs.readout.any() and not si.inputs.mask.any()
    assert si.inputs.hole_rate == [1.0] * 8  # the rollout's holes without memory
    kept = _step_inputs(replace(cfg, memory_dropout=0.0), clips, 0, _Dist(), models, None)
    assert not kept.memory_dropped and kept.inputs.mask.any()
    assert torch.equal(kept.inputs.targets, si.inputs.targets) and kept.sigma == si.sigma

    x = torch.cat([si.inputs.clean, (1 - si.sigma) * si.inputs.targets + si.sigma * si.noise], 2)
    t = torch.tensor([1000.0 * si.sigma])
    tr = models.transformer
    with torch.no_grad():
        dropped = tr(x, t, si.inputs.labels, si.text, si.inputs.readout, si.inputs.mask,
                     conditioning_scale=0.0)
        no_memory = tr(x, t, si.inputs.labels, si.text, None, None)
        with_memory = tr(x, t, si.inputs.labels, si.text, kept.inputs.readout, kept.inputs.mask)
        loss = flow_matching_loss(tr, si.inputs, si.text, si.sigma, si.noise,
                                  conditioning_scale=0.0)
    assert torch.equal(dropped, no_memory)
    assert not torch.allclose(with_memory, no_memory, atol=1e-5)  # the branch does act
    want = torch.mean((no_memory[:, :, 2:] - (si.noise - si.inputs.targets)) ** 2)
    assert torch.equal(loss, want)

    # the rollout with memory=False gives the transformer no readout at all
    seen = {}

    class _Stop(Exception):
        pass

    def fake_denoise(model, clean, labels, text, readout, mask, *a, **k):
        seen.update(readout=readout, mask=mask)
        raise _Stop

    monkeypatch.setattr(chunked, "denoise_chunk", fake_denoise)
    K = intrinsics_from_fov(W, H, 60.0)
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roll = MirageRollout(models, ConstantDepth(2.0), None,
                             RolloutConfig(memory=False, progress=False))
        with pytest.raises(_Stop):
            list(roll.run(img, make_trajectory("orbit_left", 33, K=K, image_hw=(H, W)),
                          prompt_embeds=clips[0].prompt_embeds))
    assert seen == {"readout": None, "mask": None}


def test_memory_dropout_one_leaves_the_branch_untouched(tiny_weights, clips, tmp_path):
    """With every step dropped, the side branch gets exactly zero gradient (AdamW without
    weight decay then leaves it bit-identical), and the first loss is the no-memory model's."""
    models = _models(tiny_weights)
    _randomize_branch(models)
    sb0 = _snapshot(models.transformer.side_branch)
    cfg = _cfg(tmp_path / "run", train_backbone=False, memory_dropout=1.0, weight_decay=0.0,
               steps=2, text_dropout=0.0)
    si = _step_inputs(cfg, clips, 0, _Dist(), models, None)
    with torch.no_grad():
        x = torch.cat([si.inputs.clean, (1 - si.sigma) * si.inputs.targets
                       + si.sigma * si.noise], 2)
        pred = models.transformer(x, torch.tensor([1000.0 * si.sigma]), si.inputs.labels,
                                  si.text, None, None)
        want = float(torch.mean((pred[:, :, 2:] - (si.noise - si.inputs.targets)) ** 2))
    res = train(cfg, clips, models)
    assert res.losses[0] == want
    assert _changed(sb0, models.transformer.side_branch) == set()
    recs = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["memory_dropped"] for r in recs] == [True, True]
    assert all(r["readout_hole_rate"] == 1.0 for r in recs)


# ------------------------------------------------------------------------------ train_backbone
@pytest.fixture(scope="module")
def full_run(tiny_weights, clips, tmp_path_factory):
    """2 steps of train_backbone on the tiny model; returns (config, result, trained models)."""
    out = tmp_path_factory.mktemp("full") / "run"
    models = _models(tiny_weights)
    bb0 = _snapshot(models.transformer.backbone)
    vae0 = _snapshot(models.vae.vae)
    cfg = _cfg(out, steps=2, save_every=2, memory_dropout=0.5)
    res = train(cfg, clips, models)
    return cfg, res, models, bb0, vae0


def test_train_backbone_trains_every_weight_and_checkpoints_the_whole_model(
        tiny_weights, clips, full_run, tmp_path):
    cfg, res, models, bb0, vae0 = full_run
    assert res.step == 2 and all(np.isfinite(res.losses))
    assert _changed(vae0, models.vae.vae) == set()
    changed = _changed(bb0, models.transformer.backbone)
    for k in ("patch_embedding.weight", "blocks.0.attn1.to_q.weight", "blocks.7.ffn.net.2.weight",
              "proj_out.weight", "condition_embedder.text_embedder.linear_1.weight"):
        assert k in changed, k
    assert len(changed) > 0.9 * len(bb0)
    ck = res.checkpoint
    assert sorted(p.name for p in ck.iterdir()) == sorted(
        ["config.json", BACKBONE_FILENAME, SIDE_BRANCH_FILENAME, "trainer_state.pt"])
    tensors, meta = read_safetensors(ck / BACKBONE_FILENAME, ValueError)
    assert set(tensors) == set(bb0) and all(v.dtype == torch.float32 for v in tensors.values())
    assert meta["model_version"] == str(MODEL_CODE_VERSION)
    assert json.loads(meta["config"])["num_layers"] == 8

    # inference: the checkpoint's backbone replaces the directory's (checkpoint or run dir)
    want = _forward(models, clips[0])
    for spec in (ck, Path(cfg.out_dir)):
        loaded = _models_with(tiny_weights, spec)
        assert loaded.source.startswith("trained tiny backbone") and str(ck) in loaded.source
        assert torch.equal(_forward(loaded, clips[0]), want)
    # a weights directory holding both files: side_branch=None takes both
    wdir = tmp_path / "weights_with_backbone"
    shutil.copytree(tiny_weights, wdir)
    for name in (SIDE_BRANCH_FILENAME, BACKBONE_FILENAME):
        shutil.copy(ck / name, wdir / name)
    loaded = load_models(wdir, side_branch=None, device="cpu", load_text_encoder=False)
    assert torch.equal(_forward(loaded, clips[0]), want)
    # the side branch alone would run on the untrained backbone: refused
    with pytest.raises(TrainedWeightsMismatchError, match="pass the directory"):
        _models_with(tiny_weights, ck / SIDE_BRANCH_FILENAME)


def _models_with(weights, side_branch):
    return load_models(weights, side_branch=side_branch, device="cpu", load_text_encoder=False)


def test_init_random_restarts_the_backbone_from_the_seed(tiny_weights, clips, tmp_path):
    from mirage_core.train import prepare_for_training

    a, b, c = (_models(tiny_weights, text_encoder=False) for _ in range(3))
    dir_weights = _snapshot(a.transformer.backbone)
    prepare_for_training(a, _cfg(tmp_path, init="random", seed=3))
    prepare_for_training(b, _cfg(tmp_path, init="random", seed=3))
    prepare_for_training(c, _cfg(tmp_path, init="random", seed=4))
    sa, sb_, sc = (m.transformer.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb_[k]) for k in sa)
    assert _changed(dir_weights, a.transformer.backbone)  # not the directory's weights
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # another seed, other weights
    assert a.transformer.side_branch.is_zero()  # a zero (no-op) branch on the new backbone
    assert torch.equal(a.transformer.side_branch.blocks[1].ffn.net[2].weight,
                       a.transformer.backbone.blocks[4].ffn.net[2].weight)
    assert all(p.requires_grad and p.dtype == torch.float32
               for p in a.transformer.parameters())


def test_train_backbone_with_memory_dropout_resumes_bit_for_bit(tiny_weights, clips, tmp_path):
    kw = dict(init="random", memory_dropout=0.5, seed=5)
    _, _, recs = assert_resume_is_bit_for_bit(lambda d: _cfg(d, **kw),
                                              lambda: _models(tiny_weights), clips, tmp_path)
    assert {r["memory_dropped"] for r in recs} == {True, False}  # both kinds of step ran


def test_nan_with_train_backbone_names_the_step_and_keeps_the_last_good_model(
        tiny_weights, clips, tmp_path):
    bad = Clip(**{**clips[2].__dict__, "prompt_embeds": torch.full((1, 8, 32), float("nan")),
                  "key": "synth/bad/000"})
    cfg = _cfg(tmp_path / "run", shuffle=False, save_every=1, text_dropout=0.0)
    models = _models(tiny_weights)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, [clips[0], clips[1], bad], models)
    assert e.value.step == 3 and e.value.clip_key == "synth/bad/000"
    assert "step 3" in str(e.value) and "step_00000002" in str(e.value)
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_00000001", "step_00000002"]
    # nothing of step 3 reached the weights, and the kept checkpoint is a loadable model
    good = _models_with(tiny_weights, tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in good.transformer.parameters())
    sd, live = good.transformer.backbone.state_dict(), models.transformer.backbone.state_dict()
    assert all(torch.equal(sd[k], live[k]) for k in sd)


def test_nan_exits_1_from_the_cli(tmp_path, capsys, monkeypatch):
    """``mirage train`` on a diverging run: exit code 1, the step named on stderr."""
    import mirage_core.train.main as tm

    real = tm.synthetic_clips

    def with_nan(*a, **k):
        cl = real(*a, **k)
        return [Clip(**{**c.__dict__, "prompt_embeds": torch.full_like(c.prompt_embeds,
                                                                       float("nan"))})
                for c in cl]

    monkeypatch.setattr(tm, "synthetic_clips", with_nan)
    cfg = tmp_path / "c.json"
    _cfg(tmp_path / "unused", steps=2, text_dropout=0.0).save(cfg)
    assert main_train(["--tiny", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "at step 1" in err and "none written yet" in err
    assert not list((tmp_path / "run").glob("checkpoints/step_*"))


# ------------------------------------------------------------------------------ versions
def test_a_backbone_for_another_config_or_code_version_is_refused(full_run, small_dir,
                                                                  tiny_weights, tmp_path):
    _, res, *_ = full_run
    # tiny-trained backbone on the small architecture: the key and both values
    with pytest.raises(TrainedWeightsMismatchError,
                       match=r"num_attention_heads: file 2 vs model 3"):
        _models_with(small_dir, res.checkpoint)
    # another model code version: both versions named, before anything is loaded
    ck = tmp_path / "ck"
    shutil.copytree(res.checkpoint, ck)
    tensors, meta = read_safetensors(ck / BACKBONE_FILENAME, ValueError)
    save_file(tensors, str(ck / BACKBONE_FILENAME), metadata={**meta, "model_version": "0"})
    with pytest.raises(TrainedWeightsMismatchError) as e:
        _models_with(tiny_weights, ck)
    assert "model code version 0" in str(e.value)
    assert f"this code is model version {MODEL_CODE_VERSION}" in str(e.value)
    # not a backbone file at all
    save_file(tensors, str(ck / BACKBONE_FILENAME))
    with pytest.raises(TrainedWeightsMismatchError, match="not a Mirage backbone"):
        _models_with(tiny_weights, ck)


def test_resume_from_another_code_version_or_without_the_backbone_is_refused(
        full_run, tiny_weights, clips, tmp_path):
    cfg, res, *_ = full_run
    run = tmp_path / "run"
    shutil.copytree(Path(cfg.out_dir), run)
    cfg = replace(cfg, out_dir=str(run), steps=3)
    state_file = run / "checkpoints" / res.checkpoint.name / "trainer_state.pt"
    state = torch.load(state_file, weights_only=False)
    assert state["model_version"] == MODEL_CODE_VERSION
    torch.save({**state, "model_version": 0, "mirage_version": "0.0.1"}, state_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # steps 2 -> 3 extends the run
        with pytest.raises(CheckpointMismatchError) as e:
            train(cfg, clips, _models(tiny_weights), resume=True)
        assert "model code version 0 (mirage 0.0.1)" in str(e.value)
        assert f"this code is model version {MODEL_CODE_VERSION}" in str(e.value)
        torch.save(state, state_file)
        (state_file.parent / BACKBONE_FILENAME).unlink()
        with pytest.raises(CheckpointMismatchError, match=f"no {BACKBONE_FILENAME}"):
            train(cfg, clips, _models(tiny_weights), resume=True)


# ------------------------------------------------------------------------------ the CLI
def test_mirage_train_size_small_trains_the_whole_model(tmp_path, small_vae_run):
    """`mirage train --size small` with the shipped recipe (shortened): the small directory is
    built in OUT/small_weights, the whole model trains, and the run loads for inference."""
    recipe = TrainConfig.from_file(ROOT / "config" / "train_small.yaml")
    cfg = tmp_path / "small.json"
    replace(recipe, codec=str(small_vae_run), steps=2, warmup_steps=1, save_every=2, log_every=1,
            progress=False, tensorboard=False).save(cfg)
    out = tmp_path / "run"
    assert main_train(["--config", str(cfg), "--size", "small", "--out", str(out)]) == 0
    assert weights_size(out / "small_weights") == "small"
    recs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and all("memory_dropped" in r for r in recs)
    ck = out / "checkpoints" / "step_00000002"
    assert (ck / BACKBONE_FILENAME).is_file()
    models = _models_with(out / "small_weights", out)
    assert models.source.startswith("trained small backbone")
    assert main_train(["--tiny", "--size", "small", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_two_process_train_backbone_checkpoint_loads_and_resumes_single_process(tmp_path):
    """2 gloo ranks (FSDP2) with train_backbone + memory dropout: one full-model checkpoint
    whose backbone loads single-process, and which one process resumes."""
    cfg_file = tmp_path / "cfg.json"
    _cfg(tmp_path / "unused", steps=4, save_every=2, memory_dropout=0.5, init="random").save(
        cfg_file)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "mirage_core.cli", "train", "--tiny", "--config", str(cfg_file), "--out",
         str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ck = out / "checkpoints" / "step_00000004"
    assert sorted(p.name for p in ck.iterdir()) == sorted(
        ["config.json", BACKBONE_FILENAME, SIDE_BRANCH_FILENAME, "trainer_state.pt"])
    weights = out / "tiny_weights"
    trained = _models_with(weights, out).transformer.backbone.state_dict()
    init = _models(weights, text_encoder=False).transformer.backbone.state_dict()
    assert sum(not torch.equal(trained[k], init[k]) for k in init) > 0.9 * len(init)
    # the 2-rank step-2 checkpoint resumes in one process (name-keyed optimizer state)
    one = tmp_path / "one"
    shutil.copytree(out / "checkpoints" / "step_00000002", one / "checkpoints" / "step_00000002")
    cfg = replace(TrainConfig.from_file(ck / "config.json"), out_dir=str(one))
    res = train(cfg, synthetic_clips(4, 9, (H, W), text_dim=32, seed=cfg.seed),
                _models(weights), resume=True)
    assert res.step == 4 and len(res.losses) == 2 and all(np.isfinite(res.losses))


# ------------------------------------------------------------------------- the weight average
def test_weight_average_follows_diffusers_ema_and_resumes_bit_for_bit(tiny_weights, clips,
                                                                       tmp_path):
    """ema_decay keeps the average diffusers' EMAModel defines (checked against a slow,
    obvious recomputation from the per-step weights), writes it with every checkpoint, and a
    resumed run continues it exactly."""
    from mirage_core.train.loop import EMA_FILENAME

    kw = dict(init="random", seed=5, ema_decay=0.5, steps=4, save_every=1, keep_last=10)
    straight = train(_cfg(tmp_path / "a", **kw), clips, _models(tiny_weights))
    ck = straight.checkpoint
    assert sorted(p.name for p in ck.iterdir()) == sorted(
        ["config.json", BACKBONE_FILENAME, SIDE_BRANCH_FILENAME, "trainer_state.pt",
         EMA_FILENAME])
    # reference: EMAModel's decay after n steps is min(decay, (1 + m) / (10 + m)), m = n - 1
    # (0 at the first step: the average starts as the first step's weights)
    steps = [tmp_path / "a" / "checkpoints" / f"step_{n:08d}" for n in range(1, 5)]
    w = [read_safetensors(s / BACKBONE_FILENAME, ValueError)[0] for s in steps]
    avg = {k: v.clone() for k, v in w[0].items()}
    for n in range(2, 5):
        d = min(0.5, n / (9 + n))
        avg = {k: d * avg[k] + (1 - d) * w[n - 1][k] for k in avg}
    got, meta = read_safetensors(ck / EMA_FILENAME, ValueError)
    assert meta == {"ema_decay": "0.5", "ema_steps": "4"}
    for k, v in avg.items():
        torch.testing.assert_close(got["backbone." + k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(got["backbone.proj_out.weight"], w[-1]["proj_out.weight"])
    assert any(k.startswith("side_branch.") for k in got)

    cfg_b = _cfg(tmp_path / "b", **kw)
    train(cfg_b, clips, _models(tiny_weights), stop_after=2)
    second = train(cfg_b, clips, _models(tiny_weights), resume=True)
    again, _ = read_safetensors(second.checkpoint / EMA_FILENAME, ValueError)
    assert set(again) == set(got) and all(torch.equal(again[k], got[k]) for k in got)

    # a run without an average cannot be resumed with one (and the other way round)
    with pytest.raises(CheckpointMismatchError, match="ema_decay"):
        train(_cfg(tmp_path / "b", **{**kw, "ema_decay": 0.0}), clips, _models(tiny_weights),
              resume=True)
    with pytest.raises(MirageInputError, match="ema_decay"):
        _cfg(tmp_path, ema_decay=1.0)


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("train_*.yaml")),
                         ids=lambda p: p.name)
def test_every_training_config_under_config_loads(path):
    """Each committed recipe is a valid TrainConfig (unknown keys and bad values are errors),
    so a config a model card cites still runs."""
    cfg = TrainConfig.from_file(path)
    assert cfg.steps >= 1 and cfg.out_dir
