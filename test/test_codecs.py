"""Tests for mirage_core.codecs: the analytic codec and the Wan2.2 VAE wrapper.

All models have random weights (nothing is downloaded). The full-size VAE test is ``slow``.
"""

from __future__ import annotations

import json

import pytest
import torch

from mirage_core.codecs import (
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    WAN22_VAE_CONFIG,
    LatentCodec,
    SpaceToDepthCodec,
    WanVAECodec,
    make_codec,
)
from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError


@pytest.fixture(scope="module")
def wan_tiny() -> WanVAECodec:
    return WanVAECodec.from_config("tiny", seed=0)


def _rand_images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


# --- SpaceToDepthCodec ------------------------------------------------------------------------
def test_space_to_depth_shapes_and_channels():
    c = SpaceToDepthCodec()
    assert isinstance(c, LatentCodec)
    assert (c.stride, c.channels, c.name) == (4, 48, "space_to_depth")
    assert "NOT a learned VAE" in c.label
    z = c.encode(_rand_images(2, 64, 96))
    assert z.shape == (2, 48, 16, 24) and z.dtype == torch.float32
    assert c.latent_hw((64, 96)) == (16, 24)
    assert c.image_hw((16, 24)) == (64, 96)
    assert float(z.min()) >= -1.0 and float(z.max()) <= 1.0


def test_space_to_depth_round_trip_exact():
    c = SpaceToDepthCodec()
    x = _rand_images(2, 32, 48)
    y = c.decode(c.encode(x))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float((y - x).abs().max()) < 1e-7
    # 8-bit images survive bit-exactly.
    x8 = torch.randint(0, 256, (1, 3, 16, 16), generator=torch.Generator().manual_seed(1))
    y8 = torch.round(c.decode(c.encode(x8.float() / 255.0)) * 255.0).to(torch.int64)
    assert torch.equal(y8, x8)


def test_space_to_depth_channel_layout():
    c = SpaceToDepthCodec(stride=2)
    x = torch.zeros(1, 3, 4, 4)
    x[0, 1, 2 * 1 + 1, 2 * 0 + 0] = 1.0  # colour 1, pixel row 3 col 0 -> cell (u=0, v=1)
    z = c.encode(x)
    assert z.shape == (1, 12, 2, 2)
    # channel c*s*s + i*s + j = 1*4 + 1*2 + 0 = 6
    assert float(z[0, 6, 1, 0]) == 1.0
    assert float(z.sum()) == 1.0 - (z.numel() - 1)


@pytest.mark.parametrize(
    ("images", "err"),
    [
        (torch.rand(3, 32, 32), ShapeError),  # no batch dim
        (torch.rand(1, 4, 32, 32), ShapeError),  # 4 channels
        (torch.rand(1, 3, 30, 32), ShapeError),  # not divisible by 4
        (torch.rand(1, 3, 32, 32) * 255, MirageInputError),  # 0..255
        (torch.rand(1, 3, 32, 32) * 2 - 1, MirageInputError),  # [-1, 1]
        (torch.full((1, 3, 32, 32), float("nan")), MirageInputError),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), MirageInputError),
    ],
)
def test_space_to_depth_rejects_bad_images(images, err):
    with pytest.raises(err):
        SpaceToDepthCodec().encode(images)


def test_errors_are_value_errors_and_latent_checks():
    c = SpaceToDepthCodec()
    with pytest.raises(ValueError, match="multiples"):
        c.latent_hw((33, 32))
    with pytest.raises(ShapeError, match="C = 48"):
        c.decode(torch.zeros(1, 47, 4, 4))
    with pytest.raises(ShapeError):
        c.decode(torch.zeros(48, 4, 4))
    with pytest.raises(MirageInputError):
        c.encode([[0.0]])


# --- WanVAECodec (tiny, random weights) -------------------------------------------------------
def test_wan_config_constants():
    assert WAN22_VAE_CONFIG["z_dim"] == 48
    assert WAN22_VAE_CONFIG["scale_factor_spatial"] == 16
    assert len(WAN22_LATENTS_MEAN) == len(WAN22_LATENTS_STD) == 48
    assert WAN22_LATENTS_MEAN[0] == -0.2289 and WAN22_LATENTS_STD[-1] == 0.7744
    assert min(WAN22_LATENTS_STD) > 0


def test_wan_tiny_encode_decode_shapes(wan_tiny):
    c = wan_tiny
    assert (c.channels, c.stride, c.temporal_stride, c.name) == (48, 16, 4, "wan_tiny")
    assert "RANDOM" in c.label
    assert not c.vae.training
    assert all(not p.requires_grad for p in c.vae.parameters())
    x = _rand_images(1, 64, 96)
    z = c.encode(x)
    assert z.shape == (1, 48, 4, 6) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert not z.requires_grad
    assert torch.equal(c.encode(x), z)  # posterior mode: deterministic
    y = c.decode(z)
    assert y.shape == (1, 3, 64, 96) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_wan_tiny_normalisation(wan_tiny):
    c = wan_tiny
    x = _rand_images(2, 32, 32, seed=3)
    with torch.no_grad():
        raw = c.vae.encode(x.unsqueeze(2) * 2 - 1).latent_dist.mode().squeeze(2)
    mean = torch.tensor(WAN22_LATENTS_MEAN).view(1, 48, 1, 1)
    std = torch.tensor(WAN22_LATENTS_STD).view(1, 48, 1, 1)
    torch.testing.assert_close(c.encode(x), (raw - mean) / std)


def test_wan_tiny_video(wan_tiny):
    c = wan_tiny
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 5, 32, 48, generator=g)
    z = c.encode_video(video)
    assert z.shape == (1, 48, 2, 2, 3)
    assert c.num_latent_frames(5) == 2
    # causal: latent frame 0 is the single-image encoding of frame 0
    torch.testing.assert_close(z[:, :, 0], c.encode(video[:, :, 0]), atol=1e-5, rtol=1e-5)
    y = c.decode_video(z)
    assert y.shape == (1, 3, 5, 32, 48)
    for t in (2, 4, 6):
        with pytest.raises(ShapeError, match="4k\\+1"):
            c.encode_video(torch.rand(1, 3, t, 32, 32))
    with pytest.raises(ShapeError):
        c.encode_video(torch.rand(1, 3, 32, 32))
    with pytest.raises(ShapeError):
        c.decode_video(torch.zeros(1, 48, 2, 2))


def test_wan_tiny_rejects_bad_input(wan_tiny):
    with pytest.raises(ShapeError, match="16"):
        wan_tiny.encode(torch.rand(1, 3, 40, 32))  # 40 % 16 != 0
    with pytest.raises(ShapeError):
        wan_tiny.latent_hw((64, 100))
    with pytest.raises(MirageInputError):
        wan_tiny.encode(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ShapeError):
        wan_tiny.decode(torch.zeros(1, 16, 2, 2))


def test_wan_tiny_seed_determinism():
    a = WanVAECodec.from_config("tiny", seed=5)
    b = WanVAECodec.from_config("tiny", seed=5)
    state = torch.random.get_rng_state()
    c = WanVAECodec.from_config("tiny", seed=6)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    x = _rand_images(1, 32, 32)
    assert torch.equal(a.encode(x), b.encode(x))
    assert not torch.equal(a.encode(x), c.encode(x))


def test_wan_tiny_tiling_shape():
    c = WanVAECodec.from_config("tiny", seed=0, tiling=True)
    c.vae.enable_tiling(64, 64, 48, 48)
    z = c.encode(_rand_images(1, 96, 160))
    assert z.shape == (1, 48, 6, 10)
    assert c.decode(z).shape == (1, 3, 96, 160)


def test_wan_tiny_bfloat16_outputs_float32():
    c = WanVAECodec.from_config("tiny", seed=0, dtype=torch.bfloat16)
    assert next(c.vae.parameters()).dtype == torch.bfloat16
    z = c.encode(_rand_images(1, 32, 32))
    assert z.dtype == torch.float32 and z.shape == (1, 48, 2, 2)
    assert c.decode(z).dtype == torch.float32


# --- loading ----------------------------------------------------------------------------------
def test_from_pretrained_missing_dir(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(WeightsNotFoundError, match="no_such_dir") as ei:
        WanVAECodec.from_pretrained(missing)
    assert "huggingface-cli download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in str(ei.value)
    with pytest.raises(WeightsNotFoundError, match=r"config\.json"):
        WanVAECodec.from_pretrained(tmp_path)  # exists but empty


def test_from_pretrained_config_without_weights(tmp_path):
    (tmp_path / "vae").mkdir()
    cfg = {"_class_name": "AutoencoderKLWan", **WAN22_VAE_CONFIG}
    (tmp_path / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsNotFoundError, match="no weights") as ei:
        WanVAECodec.from_pretrained(tmp_path)
    assert str(tmp_path / "vae") in str(ei.value)


def test_save_then_from_pretrained_round_trip(tmp_path, wan_tiny):
    wan_tiny.vae.save_pretrained(tmp_path / "vae")
    x = _rand_images(1, 32, 48, seed=7)
    ref = wan_tiny.encode(x)
    for path in (tmp_path, tmp_path / "vae"):  # pipeline root and VAE folder
        loaded = WanVAECodec.from_pretrained(path)
        assert loaded.name == "wan" and "pretrained weights from" in loaded.label
        assert torch.equal(loaded.encode(x), ref)
    codec = make_codec("wan", weights=tmp_path)
    assert isinstance(codec, WanVAECodec)
    assert torch.equal(codec.encode(x), ref)


# --- factory ----------------------------------------------------------------------------------
def test_make_codec():
    c = make_codec("space_to_depth", stride=2)
    assert isinstance(c, SpaceToDepthCodec) and c.channels == 12
    t = make_codec("wan_tiny", seed=1)
    assert isinstance(t, WanVAECodec) and t.name == "wan_tiny" and t.channels == 48
    with pytest.raises(ValueError, match="weights"):
        make_codec("wan")
    with pytest.raises(ValueError, match="unknown codec"):
        make_codec("sd_vae")
    with pytest.raises(ValueError, match="takes no weights"):
        make_codec("space_to_depth", weights="/tmp")
    with pytest.raises(WeightsNotFoundError):
        make_codec("wan", weights="/nonexistent/wan22")


# --- full size --------------------------------------------------------------------------------
@pytest.mark.slow
def test_wan_full_config_builds():
    c = WanVAECodec.from_config("full", seed=0)
    n = c.num_parameters()
    assert 700e6 < n < 710e6, n
    assert (c.channels, c.stride) == (48, 16)
    z = c.encode(_rand_images(1, 32, 32))
    assert z.shape == (1, 48, 2, 2)
