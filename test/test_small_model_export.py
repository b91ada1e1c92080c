"""A small model from `mirage train` to a weights directory the rollout runs by default
(issue 12 items 3-4): the codec in the marker, the export, the job's use of the marker, the
held-out scene, and the codec check between data and model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError
from mirage_core.generator.loading import load_models, weights_profile
from mirage_core.train import TrainConfig
from mirage_core.train.main import _check_store_codec, main_train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_vae_run):
    """2 steps of the shipped recipe (chunks of 1 + 8 latents) on a small trained VAE."""
    tmp = tmp_path_factory.mktemp("small")
    recipe = TrainConfig.from_file(ROOT / "config" / "train_small.yaml")
    cfg = tmp / "small.json"
    replace(recipe, codec=str(small_vae_run), steps=2, warmup_steps=1, save_every=2, log_every=1,
            progress=False, tensorboard=False).save(cfg)
    out = tmp / "run"
    assert main_train(["--config", str(cfg), "--out", str(out)]) == 0
    return out


def test_small_run_uses_the_codec_of_its_config(small_run, small_vae_run):
    from mirage_core.codecs import SMALL_VAE_MARKER, weights_sha256

    marker = json.loads((small_run / "small_weights" / "mirage_tiny.json").read_text())
    assert "codec" not in marker  # not an analytic codec: the VAE is copied in
    vae = small_run / "small_weights" / "vae"
    assert (vae / SMALL_VAE_MARKER).is_file()
    assert marker["vae"]["sha256"] == weights_sha256(vae) == weights_sha256(small_vae_run / "vae")
    models = load_models(small_run / "small_weights", side_branch=str(small_run))
    assert (models.vae.channels, models.vae.stride, models.vae.temporal_stride) == (48, 8, 4)


def test_a_codec_folder_that_is_not_there_fails_when_building(tmp_path):
    from mirage_core.generator.loading import build_small_weights

    cfg = TrainConfig(model_size="small", codec=str(tmp_path / "none"))  # checked later
    with pytest.raises(MirageInputError, match="mirage codec train"):
        build_small_weights(tmp_path / "w", codec=cfg.codec)
    assert not (tmp_path / "w").exists()  # nothing written


def test_export_bakes_the_checkpoint_in_and_loads_back(small_run, tmp_path):
    from mirage_core.train.export import export_small_model

    ship = export_small_model(small_run, tmp_path / "ship", (64, 96))
    prof = weights_profile(ship)
    assert prof == {"size": "small", "trained": True, "image_hw": (64, 96),
                    "chunk_latent_frames": 9, "scene": "heldout", "prompt": prof["prompt"],
                    "flow_shift": 3.0, "latent_stride": 8, "readout_hole_fill": 0}
    a = load_models(small_run / "small_weights", side_branch=str(small_run))
    b = load_models(ship)  # its own side branch and backbone
    assert b.source.startswith("trained small model") and b.chunk_latent_frames == 9
    assert (ship / "vae" / "config.json").is_file()  # the trained VAE ships with it
    assert b.flow_shift == 3.0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 3, 4, 6, generator=g)
    text = torch.randn(1, 4, a.text_dim, generator=g)
    readout = torch.randn(1, 48, 3, 4, 6, generator=g)
    mask = torch.ones(1, 3, 4, 6)
    labels = [0, 1, 2]
    with torch.no_grad():
        ya = a.transformer(x, torch.tensor([500.0]), labels, text, readout, mask, 1.0)
        yb = b.transformer(x, torch.tensor([500.0]), labels, text, readout, mask, 1.0)
    # bf16 storage: close, not equal; a wrong or missing weight would be far off
    rel = float((ya - yb).norm() / ya.norm())
    assert 0 < rel < 0.05, rel


def test_a_continued_run_exports_with_its_lineage(small_run, tmp_path):
    """Training more steps from an exported model (weights_dir + init: pretrained, how the
    shipped model's second stage ran: docs/model_card.md) exports with both runs recorded,
    and never over the directory it started from."""
    from mirage_core.train.export import export_small_model

    first = export_small_model(small_run, tmp_path / "first", (64, 96))
    recipe = TrainConfig.from_file(ROOT / "config" / "train_small_more.yaml")
    assert (recipe.init, recipe.train_backbone, recipe.codec) == ("pretrained", True, None)
    cfg = tmp_path / "more.json"
    replace(recipe, weights_dir=str(first),
            side_branch=str(first / "mirage_side_branch.safetensors"), steps=2, warmup_steps=1,
            save_every=2, log_every=1, progress=False, tensorboard=False).save(cfg)
    assert main_train(["--config", str(cfg), "--out", str(tmp_path / "more")]) == 0
    with pytest.raises(MirageInputError, match="starting weights"):
        export_small_model(tmp_path / "more", first, (64, 96))
    second = export_small_model(tmp_path / "more", tmp_path / "second", (64, 96))
    trained = json.loads((second / "mirage_tiny.json").read_text())["trained"]
    assert trained["run"] == "more" and trained["continued_from"]["run"] == "run"
    assert trained["total_steps"] == 4
    b = load_models(second)
    assert b.source.startswith("trained small model") and b.vae.stride == 8


def test_training_refuses_data_of_another_codec():
    models = SimpleNamespace(vae=SimpleNamespace(
        channels=48, stride=2, label="analytic space-time-to-depth (stride 2, ...)"))
    wan_tiny = SimpleNamespace(meta=SimpleNamespace(
        latent_channels=48, spatial_stride=16, vae_source="Wan2.2 VAE ... RANDOM"))
    with pytest.raises(MirageInputError, match=r"stride 16.*stride 2"):
        _check_store_codec(wan_tiny, models, "DATA")
    same = SimpleNamespace(meta=SimpleNamespace(
        latent_channels=48, spatial_stride=2, vae_source=models.vae.label))
    _check_store_codec(same, models, "DATA")  # no error


def test_bad_codec_in_a_config_is_refused():
    with pytest.raises(MirageInputError, match="space_time_to_depth"):
        TrainConfig(model_size="small", codec="space_time_to_depth:0")
    with pytest.raises(MirageInputError, match="codec"):
        TrainConfig(model_size="full", codec="space_time_to_depth")


def test_heldout_case_is_a_held_out_room_with_ground_truth():
    from mirage_core.data.synth import SCENE_SEED_RANGES, SynthConfig, plan_clip
    from mirage_core.eval.heldout import heldout_case

    case = heldout_case(0, (32, 48), frames=9)
    assert case.key.startswith("synth-heldout/")
    lo, hi = SCENE_SEED_RANGES["heldout"]
    plan = plan_clip(SynthConfig(frames=9, hw=(32, 48), held_out=True), 0)
    assert lo <= plan.scene_seed < hi
    assert case.gt.shape == (9, 32, 48, 3) and case.depth.shape == (9, 32, 48)
    assert np.array_equal(case.image, case.gt[0])
    assert torch.allclose(case.trajectory.T_world_cam[0], torch.eye(4, dtype=torch.float64))
    again = heldout_case(0, (32, 48), frames=9)
    assert np.array_equal(again.gt, case.gt)  # a pure function of the index


def test_rollout_job_follows_the_models_marker(small_run, tmp_path, monkeypatch):
    """No --weights: the shipped directory (here: an export) is used, at its resolution and
    chunk size, on held-out room 0 along its own path."""
    from mirage_core.rollout import job
    from mirage_core.train.export import export_small_model

    ship = export_small_model(small_run, tmp_path / "ship", (64, 96))
    monkeypatch.setattr(job, "shipped_weights_dir", lambda: ship)
    cfg = job.RolloutJobConfig(out=tmp_path / "o", steps=1, chunks=2, video=False,
                               progress=False)
    assert cfg.weights == str(ship)
    s = job.run_rollout_job(cfg)
    assert s["frames"] == 1 + 2 * 32  # 2 chunks of 8 latents = 32 frames each
    stats = json.loads((tmp_path / "o" / "memory_stats.json").read_text())
    assert stats["models"]["source"].startswith("trained small model")
    assert stats["perception"]["depth"] == "given"


def test_a_model_trained_on_filled_readouts_runs_with_the_same_fill(small_vae_run, tmp_path,
                                                                      monkeypatch):
    """readout_hole_fill travels from the training config to the export's marker, the loaded
    models and the rollout job's memory (docs/model_card.md); --hole-fill
    overrides it."""
    from mirage_core.rollout import job
    from mirage_core.train import loop
    from mirage_core.train.export import export_small_model

    recipe = TrainConfig.from_file(ROOT / "config" / "train_small.yaml")
    cfg = tmp_path / "fill.json"
    replace(recipe, codec=str(small_vae_run), steps=1, warmup_steps=0, save_every=1,
            log_every=1, progress=False, tensorboard=False, readout_hole_fill=1,
            memory_dropout=0.0).save(cfg)
    seen = []  # the training step's readouts are built with the fill

    def spy(*args, **kw):
        seen.append(kw["memory_config"].hole_fill)
        return chunk_inputs(*args, **kw)

    chunk_inputs = loop.chunk_inputs
    monkeypatch.setattr(loop, "chunk_inputs", spy)
    assert main_train(["--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert seen == [1]
    monkeypatch.undo()
    ship = export_small_model(tmp_path / "run", tmp_path / "ship", (64, 96))
    assert weights_profile(ship)["readout_hole_fill"] == 1
    assert load_models(ship).readout_hole_fill == 1
    # the export can set another (a measured inference choice); the training record stays
    other = export_small_model(tmp_path / "run", tmp_path / "other", (64, 96),
                               readout_hole_fill=0)
    marker = json.loads((other / "mirage_tiny.json").read_text())
    assert marker["readout_hole_fill"] == 0
    assert marker["trained"]["config"]["readout_hole_fill"] == 1
    monkeypatch.setattr(job, "shipped_weights_dir", lambda: ship)
    for override, want in ((None, 1), (0, 0)):
        out = tmp_path / f"o{want}"
        job.run_rollout_job(job.RolloutJobConfig(out=out, steps=1, chunks=1, video=False,
                                                 progress=False, hole_fill=override))
        stats = json.loads((out / "memory_stats.json").read_text())
        assert stats["memory_config"]["hole_fill"] == want


def test_export_bakes_the_weight_average_unless_raw(small_vae_run, tmp_path):
    """A run that kept a weight average (ema_decay) exports the average; --raw the last step."""
    from mirage_core.generator.loading import BACKBONE_FILENAME
    from mirage_core.safetensors_io import read_safetensors
    from mirage_core.train.export import export_small_model, main
    from mirage_core.train.loop import EMA_FILENAME

    recipe = TrainConfig.from_file(ROOT / "config" / "train_small.yaml")
    run = tmp_path / "run"
    replace(recipe, codec=str(small_vae_run), steps=2, warmup_steps=1, save_every=2,
            log_every=1, progress=False, tensorboard=False, ema_decay=0.9
            ).save(tmp_path / "ema.json")
    assert main_train(["--config", str(tmp_path / "ema.json"), "--out", str(run)]) == 0
    ck = sorted((run / "checkpoints").glob("step_*"))[-1]
    avg, _ = read_safetensors(ck / EMA_FILENAME, ValueError)
    last, _ = read_safetensors(ck / BACKBONE_FILENAME, ValueError)
    k = "proj_out.weight"
    assert not torch.equal(avg["backbone." + k], last[k])
    ema = export_small_model(run, tmp_path / "ema", (64, 96))
    assert main([str(run), str(tmp_path / "raw"), "--raw"]) == 0
    for d, want, what in ((ema, avg["backbone." + k], "ema (decay 0.9, 2 steps)"),
                          (tmp_path / "raw", last[k], "last step")):
        trained = json.loads((d / "mirage_tiny.json").read_text())["trained"]
        assert trained["weights"] == what
        got = load_models(d).transformer.backbone.proj_out.weight
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-2, atol=1e-3)  # bf16
