"""Algorithm 1 end to end with tiny random-weight models (the real code path) on the CPU."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.loading import build_tiny_weights, load_models
from mirage_core.generator.sampler import SamplerConfig
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.memory import MemoryConfig
from mirage_core.perception import ConstantDepth
from mirage_core.rollout import MirageRollout, RolloutConfig
from mirage_core.trajectory import make_trajectory

H, W = 64, 96


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = build_tiny_weights(tmp_path_factory.mktemp("tiny") / "w")
    return load_models(root, device="cpu")


@pytest.fixture(scope="module")
def scene_inputs():
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 1 + 32 * 2, K=K, image_hw=(H, W))
    rng = np.random.default_rng(0)
    img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    return img, traj


def _rollout(models, steps=2, **kw):
    cfg = RolloutConfig(sampler=SamplerConfig(steps=steps), progress=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MirageRollout(models, ConstantDepth(2.0), None, cfg)


def _run(models, scene_inputs, **kw):
    img, traj = scene_inputs
    r = _rollout(models, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return r, list(r.run(img, traj, prompt="a room"))


def test_rollout_streams_chunks_and_grows_the_memory(models, scene_inputs):
    r, chunks = _run(models, scene_inputs)
    assert [c.plan.index for c in chunks] == [0, 1]
    c0, c1 = chunks
    assert c0.frames.shape == (32, H, W, 3) and c0.frames.dtype == np.uint8
    assert c0.latents.shape == (48, 8, H // 16, W // 16)
    assert c1.plan.rgb_frames == (33, 64) and c1.plan.pose_frames[0] == 36
    assert set(c0.timings_s) >= {"readout", "denoise", "decode", "depth", "masks", "encode",
                                 "update", "total"}
    assert len(c0.step_s) == 2
    init = r.initial_memory["points"]
    assert 0 < init < c0.memory["points"] < c1.memory["points"]
    assert c1.memory["growth_bytes"] == c1.memory["bytes"] - c0.memory["bytes"]
    # Orbiting away from the first view: the later targets see less of the memory.
    assert c0.readout_hole_rate[0] < 1.0


def test_rollout_is_deterministic_on_cpu(models, scene_inputs):
    _, a = _run(models, scene_inputs, num_chunks=1)
    _, b = _run(models, scene_inputs, num_chunks=1)
    _, c = _run(models, scene_inputs, num_chunks=1, seed=5)
    assert np.array_equal(a[0].frames, b[0].frames)
    assert not np.array_equal(a[0].frames, c[0].frames)


def test_memory_conditioning_changes_the_output(models, scene_inputs):
    _, on = _run(models, scene_inputs, num_chunks=1)
    r_off, off = _run(models, scene_inputs, num_chunks=1, memory=False)
    assert r_off.memory is None and off[0].memory["points"] == 0
    assert off[0].readout_hole_rate == [1.0] * 8
    assert (on[0].latents - off[0].latents).abs().max() > 1e-4


def test_rgb_cache_baseline_and_merge_policies_run(models, scene_inputs):
    r, rgb = _run(models, scene_inputs, num_chunks=1, conditioning="rgb_cache")
    assert type(r.memory).__name__ == "RGBPointCache"
    _, lat = _run(models, scene_inputs, num_chunks=1,
                  memory_config=MemoryConfig(merge_policy="union"))
    _, fill = _run(models, scene_inputs, num_chunks=1)
    assert rgb[0].memory["bytes"] > lat[0].memory["bytes"]  # pixel-resolution points
    assert lat[0].memory["points"] >= fill[0].memory["points"]


def test_chunk_frames_are_one_continuous_decode_without_seams(models, scene_inputs,
                                                             monkeypatch):
    """Issue 11 item 8: chunk c's frames were decoded from a fresh causal VAE cache, so chunk
    1's overlap latent (4 frames' worth) was decoded as a lone first frame: a seam. The frames
    of all chunks must be those of one decode of [z0, targets of chunk 0, targets of chunk 1]
    (frame 0 is the input image itself and is not among them)."""
    from mirage_core.rollout import chunked
    from mirage_core.rollout.inputs import check_image

    img, _ = scene_inputs
    h, w = H // 16, W // 16
    # Chunks of [preceding, 3 targets] (the real 9-latent chunk works the same, only slower).
    gen = torch.randn((2, 1, 48, 3, h, w), generator=torch.Generator().manual_seed(3))
    targets = iter(gen)
    monkeypatch.setattr(chunked, "denoise_chunk", lambda *a, **k: (next(targets).clone(), [0.0]))
    _, chunks = _run(models, scene_inputs, steps=1, chunk_latent_frames=4, num_chunks=2)
    assert [c.plan.rgb_frames for c in chunks] == [(1, 12), (13, 24)]
    z0 = models.vae.encode(check_image(img)[None])[:, :, None]  # [1, 48, 1, h, w]
    video = models.vae.decode_video(torch.cat([z0, gen[0], gen[1]], dim=2))[0]  # [3, 25, H, W]
    ref = (video[:, 1:].permute(1, 2, 3, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    for c in chunks:
        a, b = c.plan.rgb_frames
        diff = np.abs(c.frames.astype(int) - ref[a - 1:b].astype(int))
        assert diff.max() <= 1, (c.plan.index, int(diff.max()))


def test_bad_inputs_fail_before_any_model_runs(models, scene_inputs):
    img, traj = scene_inputs
    r = _rollout(models)
    calls = []
    hook = models.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ShapeError, match="multiples of 32"):
            r.prepare(img[:60], traj, prompt="x")
        with pytest.raises(ShapeError, match="another aspect ratio"):  # 2x size is scaled
            r.prepare(np.zeros((2 * H, W, 3), np.uint8), traj, prompt="x")
        with pytest.raises(MirageInputError, match="need 33"):
            r.prepare(img, make_trajectory("pan_left", 20, K=traj.K, image_hw=(H, W)),
                      prompt="x")
        with pytest.raises(MirageInputError, match="prompt is empty"):
            r.prepare(img, traj, prompt="   ")
        with pytest.raises(MirageInputError, match="exactly one"):
            r.prepare(img, traj)
        with pytest.raises(ShapeError, match="prompt_embeds"):
            r.prepare(img, traj, prompt_embeds=torch.zeros(1, 8, 7))
        bad_K = traj.K.clone()
        bad_K[1, 2] = -5.0
        with pytest.raises(MirageInputError, match="principal point"):
            r.prepare(img, traj, K=bad_K, prompt="x")
    finally:
        hook.remove()
    assert calls == []


def test_a_size_other_than_the_trained_one_is_warned_about(models, scene_inputs, caplog):
    import dataclasses
    import logging

    img, traj = scene_inputs
    caplog.set_level(logging.WARNING, logger="mirage_core.rollout.chunked")
    _rollout(models).prepare(img, traj, prompt="x")  # tiny: no trained size, no warning
    assert "was trained at" not in caplog.text
    trained = dataclasses.replace(models, image_hw=(2 * H, 2 * W))
    _rollout(trained).prepare(img, traj, prompt="x")
    assert f"trained at {2 * H}x{2 * W}; it runs on {H}x{W}" in caplog.text
    caplog.clear()
    _rollout(dataclasses.replace(models, image_hw=(H, W))).prepare(img, traj, prompt="x")
    assert "was trained at" not in caplog.text


def test_trajectory_not_starting_at_identity_is_made_relative(models, scene_inputs):
    img, traj = scene_inputs
    from mirage_core.trajectory import Trajectory

    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    moved = Trajectory(shift @ traj.T_world_cam, traj.timestamps, traj.K, traj.image_hw)
    prep = _rollout(models).prepare(img, moved, prompt="x")
    torch.testing.assert_close(prep.trajectory.T_world_cam, traj.T_world_cam)


def test_cli_tiny_rollout_writes_everything(tmp_path, monkeypatch):
    from mirage_core.cli import main

    monkeypatch.setenv("MIRAGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    rc = main(["rollout", "--tiny", "--chunks", "1", "--steps", "2", "--height", "64",
               "--width", "96", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert (out / "video.mp4").stat().st_size > 0
    import imageio.v3 as iio  # readout.mp4: frame | decoded readout | mask, per key frame

    rd = iio.imread(out / "readout.mp4")
    assert rd.shape == (8, 64, 3 * 96, 3)
    assert sorted(p.name for p in (out / "frames").iterdir())[:2] == ["00000.png", "00001.png"]
    assert len(list((out / "frames").iterdir())) == 33
    cams = json.loads((out / "cameras.json").read_text())
    assert len(cams["frames"]) == 33 and cams["image_hw"] == [64, 96]
    assert cams["frames"][4]["latent_index"] == 1 and "latent_index" not in cams["frames"][5]
    np.testing.assert_allclose(cams["frames"][0]["T_world_cam"], np.eye(4), atol=1e-12)
    stats = json.loads((out / "memory_stats.json").read_text())
    (chunk,) = stats["chunks"]
    assert chunk["memory"]["points"] > stats["initial"]["points"] > 0
    assert stats["perception"] == {"depth": "sim", "masks": "sim"}
    assert "RANDOM" in stats["models"]["source"] and stats["note"]
    assert stats["models"]["vae_dtype"] == "torch.float32"  # the reference's VAE precision
    assert 0 < stats["summary"]["memory_readout_update_share_of_chunk_time"] < 1


def test_cli_without_weights_says_what_to_do(tmp_path, capsys, monkeypatch):
    from mirage_core.cli import main
    from mirage_core.rollout import job

    # a checkout without the shipped model (with it, no --weights runs the shipped model)
    monkeypatch.setattr(job, "shipped_weights_dir", lambda: None)
    assert main(["rollout", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--weights DIR" in err and "--tiny" in err
    assert main(["rollout", "--weights", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "huggingface-cli download" in capsys.readouterr().err


@pytest.mark.slow
def test_three_chunk_tiny_rollout_at_defaults(tmp_path, monkeypatch):
    """The issue's target run: `mirage rollout --tiny` (3 chunks, 40 steps, 128x224)."""
    from mirage_core.cli import main

    monkeypatch.setenv("MIRAGE_CACHE", str(tmp_path / "cache"))
    assert main(["rollout", "--tiny", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    stats = json.loads((tmp_path / "o" / "memory_stats.json").read_text())
    assert len(stats["chunks"]) == 3
    assert len(list((tmp_path / "o" / "frames").iterdir())) == 97


def test_cli_rollout_of_a_user_image_with_depth_anything_3(tmp_path, monkeypatch, da3_small_dir):
    """User image + `--depth da3:DIR` (random da3-small weights): the DA3 adapter in the loop."""
    from PIL import Image

    from mirage_core.cli import main

    monkeypatch.setenv("MIRAGE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["rollout", "--tiny", "--image", str(tmp_path / "in.png"), "--trajectory",
                   "pan_left", "--chunks", "1", "--steps", "2", "--depth",
                   f"da3:{da3_small_dir}", "--out", str(out), "--no-progress", "--no-video"])
    assert rc == 0
    stats = json.loads((out / "memory_stats.json").read_text())
    assert stats["perception"] == {"depth": "da3", "masks": "none"}
    assert stats["chunks"][0]["memory"]["points"] > stats["initial"]["points"] > 0
    assert len(list((out / "frames").iterdir())) == 33
    # A user image without --depth is refused before any model loads.
    assert main(["rollout", "--tiny", "--image", str(tmp_path / "in.png"), "--out",
                 str(out)]) == 2
