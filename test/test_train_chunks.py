"""Training chunks after the first: inputs equal to what the rollout builds for that chunk."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.loading import load_models
from mirage_core.generator.sampler import SamplerConfig
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.perception import ConstantDepth
from mirage_core.rollout import MirageRollout, RolloutConfig
from mirage_core.rollout.inputs import check_image
from mirage_core.train import chunk_inputs
from mirage_core.train.readouts import trainable_chunks
from mirage_core.trajectory import make_trajectory

H, W = 64, 96


def test_chunk_1_inputs_equal_the_rollouts_second_chunk(tiny_weights, monkeypatch):
    """Rollout of 2 chunks with a fake denoiser returning known latents; the clip made of those
    latents, the rollout's own per-frame re-encodings, depth and poses gives, for chunk 1,
    exactly the tensors the rollout passes to its second denoiser call."""
    import mirage_core.rollout.chunked as chunked

    models = load_models(tiny_weights, side_branch="zero", device="cpu", load_text_encoder=False)
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 65, K=K, image_hw=(H, W))
    T = traj.T_world_cam.clone()
    T[:, :3, 3] += torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)  # world != camera 0
    traj = replace(traj, T_world_cam=T)
    img = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    h, w = H // 16, W // 16
    gen = torch.randn((2, 1, 48, 8, h, w), generator=torch.Generator().manual_seed(4))

    calls, encoded = [], []

    def fake_denoise(model, clean, labels, text, readout, mask, *a, **k):
        calls.append(dict(clean=clean, labels=list(labels), readout=readout, mask=mask))
        return gen[len(calls) - 1].clone(), [0.0]

    real_encode = models.vae.encode

    def recording_encode(images):
        z = real_encode(images)
        encoded.append(z.clone())
        return z

    monkeypatch.setattr(chunked, "denoise_chunk", fake_denoise)
    monkeypatch.setattr(models.vae, "encode", recording_encode)
    cfg = RolloutConfig(sampler=SamplerConfig(steps=1), progress=False, num_chunks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        roll = MirageRollout(models, ConstantDepth(2.0), None, cfg)
        list(roll.run(img, traj, prompt_embeds=torch.zeros((1, 8, models.text_dim))))
    assert len(calls) == 2
    # encode calls: the input image, then the 8 key frames of each chunk
    z0 = real_encode(check_image(img)[None])[0]
    assert torch.equal(encoded[0][0], z0) and [e.shape[0] for e in encoded] == [1, 8, 8]

    lat = torch.cat([z0[None], gen[0, 0].permute(1, 0, 2, 3), gen[1, 0].permute(1, 0, 2, 3)])
    frame_lat = torch.cat([z0[None], encoded[1], encoded[2]])
    clip = Clip(latents=lat, depth=torch.full((17, H, W), 2.0),
                mask=torch.zeros((17, H, W), dtype=torch.bool),
                T_world_cam=traj.T_world_cam[::4].clone(), K=K, image_hw=(H, W),
                frame_latents=frame_lat)
    assert trainable_chunks(clip) == 2
    for k in (0, 1):
        inp = chunk_inputs(clip, models.vae.channels, models.vae.stride, models.device, chunk=k)
        assert inp.labels == calls[k]["labels"]
        assert torch.equal(inp.clean, calls[k]["clean"]), k
        assert torch.equal(inp.readout, calls[k]["readout"]), k
        assert torch.equal(inp.mask, calls[k]["mask"]), k
        assert torch.equal(inp.targets, gen[k])
    # chunk 1 sees more memory than a readout from frame 0 alone would give
    only0 = replace(clip, frame_latents=torch.zeros_like(frame_lat))
    inp0 = chunk_inputs(only0, 48, 16, "cpu", chunk=1)
    assert not torch.equal(inp0.readout, calls[1]["readout"])


def test_chunk_limits_and_clips_without_frame_latents():
    L, C = 17, 48
    clip = Clip(latents=torch.randn(L, C, 4, 6), depth=torch.full((L, 64, 96), 2.0),
                mask=torch.zeros((L, 64, 96), dtype=torch.bool),
                T_world_cam=torch.eye(4, dtype=torch.float64).expand(L, 4, 4).clone(),
                K=intrinsics_from_fov(96, 64, 60.0), image_hw=(64, 96), key="c")
    assert trainable_chunks(clip) == 1
    with pytest.raises(MirageInputError, match="frame_latents"):
        chunk_inputs(clip, C, 16, chunk=1)
    clip.frame_latents = clip.latents.clone()
    assert trainable_chunks(clip) == 2
    with pytest.raises(ShapeError, match="chunk 2 needs 25"):
        chunk_inputs(clip, C, 16, chunk=2)
    with pytest.raises(ShapeError, match="frame_latents must be"):
        replace(clip, frame_latents=torch.zeros(L - 1, C, 4, 6))
    short = replace(clip, latents=clip.latents[:5], depth=clip.depth[:5], mask=clip.mask[:5],
                    T_world_cam=clip.T_world_cam[:5], frame_latents=None)
    assert trainable_chunks(short) == 0


@pytest.mark.parametrize("chunks", ["all", "first"])
def test_training_draws_later_chunks_when_clips_have_them(tiny_weights, tmp_path, chunks):
    import json

    from mirage_core.train import TrainConfig, synthetic_clips, train

    clips = synthetic_clips(2, 17, (H, W), text_dim=32, seed=2)  # 2 chunks per clip
    models = load_models(tiny_weights, side_branch="zero", device="cpu", load_text_encoder=False)
    cfg = TrainConfig(stage=1, lr=1e-3, steps=8, text_dropout=0.0, log_every=1, save_every=8,
                      progress=False, tensorboard=False, chunks=chunks,
                      out_dir=str(tmp_path / chunks))
    res = train(cfg, clips, models)
    assert res.step == 8 and all(np.isfinite(res.losses))
    rows = [json.loads(x) for x in (tmp_path / chunks / "metrics.jsonl").read_text().splitlines()]
    seen = {r["chunk"] for r in rows}
    assert seen == ({0, 1} if chunks == "all" else {0})
    with pytest.raises(MirageInputError, match="chunks"):
        TrainConfig(chunks="last")
