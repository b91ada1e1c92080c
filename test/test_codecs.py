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


@pytest.mark.parametrize("key,value", [("z_dim", 16), ("is_residual", False),
                                       ("scale_factor_spatial", 8)])
def test_from_pretrained_refuses_a_vae_that_is_not_wan22(tmp_path, key, value):
    """A Wan2.1 VAE (z_dim 16, stride 8, not residual) beside our loader: refused by key,
    before any weights are read (issue 11 item 12, the VAE side)."""
    (tmp_path / "vae").mkdir()
    cfg = {"_class_name": "AutoencoderKLWan", **WAN22_VAE_CONFIG, key: value}
    (tmp_path / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MirageInputError, match=key):
        WanVAECodec.from_pretrained(tmp_path)


def test_from_pretrained_config_without_weights(tmp_path):
    (tmp_path / "vae").mkdir()
    cfg = {"_class_name": "AutoencoderKLWan", **WAN22_VAE_CONFIG}
    (tmp_path / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsNotFoundError, match="no weights") as ei:
        WanVAECodec.from_pretrained(tmp_path)
    assert str(tmp_path / "vae") in str(ei.value)


def test_save_then_from_pretrained_round_trip(tmp_path, wan_tiny):
    wan_tiny.vae.save_pretrained(tmp_path / "vae")
    # tiny sizes load only from a directory marked as build_tiny_weights marks it
    with pytest.raises(MirageInputError, match="base_dim"):
        WanVAECodec.from_pretrained(tmp_path)
    (tmp_path / "mirage_tiny.json").write_text(json.dumps({"tiny": True}))
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


# --- chunk-by-chunk decoding (issue 11, item 8: no seam at chunk boundaries) -------------------
def _rand_latents(b: int, t: int, h: int = 2, w: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 48, t, h, w, generator=torch.Generator().manual_seed(seed))


def _stream(codec, z: torch.Tensor, pieces, **kw) -> torch.Tensor:
    """Decode ``z`` as consecutive pieces ``(start, stop)`` through one stream decoder."""
    s = codec.stream_decoder(**kw)
    out, prev_stop = [], 0
    for a, b in pieces:
        out.append(s.decode(z[:, :, a:b], overlap=prev_stop - a))
        prev_stop = b
    assert s.latents_seen == z.shape[2]
    assert s.frames_emitted == sum(x.shape[2] for x in out)
    return torch.cat(out, dim=2)


# (start, stop) of each piece. The rollout's layout is [z0, 8 targets], then [last, 8 targets]
# with overlap 1; here with 3 targets per chunk to keep the tiny VAE quick.
_PIECES = {
    "rollout_overlap_1": [(0, 4), (3, 7), (6, 10)],
    "no_overlap": [(0, 1), (1, 4), (4, 10)],
    "overlap_2_and_single_latents": [(0, 3), (1, 5), (5, 6), (5, 7), (5, 10)],
}


@pytest.mark.parametrize("pieces", list(_PIECES.values()), ids=list(_PIECES))
def test_wan_stream_decode_equals_one_continuous_decode(wan_tiny, pieces):
    z = _rand_latents(1, 10)
    ref = wan_tiny.decode_video(z)  # the slow, obvious reference: everything in one call
    assert ref.shape[2] == 1 + 4 * 9
    got = _stream(wan_tiny, z, pieces)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_wan_tiny_shows_the_seam_that_chunk_decoding_had(wan_tiny):
    """Decoding chunk 1 = [overlap latent, 4 targets] on its own (a fresh causal cache) is what
    the rollout did: far from the continuous video in the tiny config too, so the tests above
    and test_rollout's seam test can fail."""
    z = _rand_latents(1, 9, seed=1)
    ref = wan_tiny.decode_video(z)
    fresh = wan_tiny.decode_video(z[:, :, 4:9])[:, :, 1:]  # drop the overlap's frame
    assert float((fresh - ref[:, :, 17:33]).abs().max()) > 0.1
    s = wan_tiny.stream_decoder()
    s.decode(z[:, :, :5])
    torch.testing.assert_close(s.decode(z[:, :, 4:9], overlap=1), ref[:, :, 17:33],
                               atol=1e-5, rtol=0)


def test_wan_stream_is_independent_of_other_calls_and_parks_its_cache(wan_tiny):
    z = _rand_latents(2, 5, seed=2)  # batch of 2
    ref = wan_tiny.decode_video(z)
    s = wan_tiny.stream_decoder(cache_device="cpu")
    a = s.decode(z[:, :, :3])
    # The model's own feature cache is cleared by these; the stream keeps its own.
    wan_tiny.encode(_rand_images(1, 32, 48))
    wan_tiny.decode_video(z[:, :, 1:3])
    b = s.decode(z[:, :, 2:5], overlap=1)
    torch.testing.assert_close(torch.cat([a, b], 2), ref, atol=1e-5, rtol=0)
    assert all(c.device.type == "cpu" for cache in s._caches.values() for c in cache
               if isinstance(c, torch.Tensor))
    # reset() starts a new video: the first latent is a first frame again.
    s.reset()
    torch.testing.assert_close(s.decode(z[:, :, 2:5]), wan_tiny.decode_video(z[:, :, 2:5]),
                               atol=1e-5, rtol=0)


def test_wan_stream_decode_with_spatial_tiling():
    c = WanVAECodec.from_config("tiny", seed=0, tiling=True)
    c.vae.enable_tiling(32, 32, 16, 16)  # 32x48 frames -> 2x3 overlapping tiles
    z = _rand_latents(1, 4, h=2, w=3, seed=3)
    ref = c.decode_video(z)
    c.vae.use_tiling = False
    assert float((c.decode_video(z) - ref).abs().max()) > 1e-3  # tiling does apply here
    c.vae.use_tiling = True
    got = _stream(c, z, [(0, 2), (1, 4)])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_stream_decode_rejects_what_does_not_continue_the_video(wan_tiny):
    z = _rand_latents(1, 4, seed=4)
    s = wan_tiny.stream_decoder()
    with pytest.raises(ShapeError, match="overlap"):
        s.decode(z[:, :, :2], overlap=1)  # nothing decoded yet
    s.decode(z[:, :, :2])
    with pytest.raises(MirageInputError, match="differ"):
        s.decode(z[:, :, 2:4], overlap=1)  # z[2] is not the last latent decoded (z[1])
    with pytest.raises(ShapeError, match="at least one new latent"):
        s.decode(z[:, :, 1:2], overlap=1)
    with pytest.raises(ShapeError, match="previous call passed 2"):
        s.decode(torch.cat([z[:, :, :1], z[:, :, :2], z[:, :, 2:]], 2), overlap=3)
    with pytest.raises(ShapeError, match="do not continue"):
        s.decode(_rand_latents(1, 2, h=3, w=3), overlap=0)
    with pytest.raises(ShapeError):
        s.decode(z[:, :, 0])  # [B, C, h, w]: not a video
    assert s.latents_seen == 2 and s.frames_emitted == 5  # failed calls changed nothing


def test_space_to_depth_stream_is_frame_wise():
    c = SpaceToDepthCodec()
    z = c.encode(_rand_images(3, 16, 24)).permute(1, 0, 2, 3)[None]  # [1, 48, 3, 4, 6]
    s = c.stream_decoder(cache_device="cpu")
    out = torch.cat([s.decode(z[:, :, :2]), s.decode(z[:, :, 1:3], overlap=1)], 2)
    assert out.shape == (1, 3, 3, 16, 24) and s.frames_emitted == 3 == s.latents_seen
    for i in range(3):
        torch.testing.assert_close(out[:, :, i], c.decode(z[:, :, i]), atol=0, rtol=0)


# --- space-time-to-depth: the lossless video codec with Wan2.2's latent layout ----------------
def test_space_time_to_depth_has_wans_layout_and_is_lossless():
    c = make_codec("space_time_to_depth")
    assert (c.channels, c.stride, c.temporal_stride) == (48, 2, 4)
    g = torch.Generator().manual_seed(3)
    video = (torch.randint(0, 256, (2, 3, 9, 8, 12), generator=g).float() / 255.0)
    z = c.encode_video(video)
    assert z.shape == (2, 48, 3, 4, 6) and c.num_latent_frames(9) == 3
    back = c.decode_video(z)
    assert back.shape == video.shape
    assert torch.equal((back * 255).round(), (video * 255).round())  # 8-bit exact
    # latent 0 = frame 0 alone, as an image encode (what the rollout writes to the memory)
    assert torch.equal(c.encode(video[:, :, 0]), z[:, :, 0])
    assert torch.allclose(c.decode(z[:, :, 0]), video[:, :, 0], atol=1e-6)
    # latent 1 packs frames 1..4: changing frame 5 leaves it alone, changing frame 4 does not
    v2 = video.clone()
    v2[:, :, 5] = 1 - v2[:, :, 5]
    assert torch.equal(c.encode_video(v2)[:, :, 1], z[:, :, 1])
    v2[:, :, 4] = 1 - v2[:, :, 4]
    assert not torch.equal(c.encode_video(v2)[:, :, 1], z[:, :, 1])


def test_space_time_to_depth_channel_order_is_documented():
    """Channel ((c * 4 + k) * s + i) * s + j = colour c of pixel (s v + i, s u + j), frame k."""
    c = make_codec("space_time_to_depth")
    video = torch.zeros(1, 3, 5, 4, 4)
    video[0, 2, 3, 1 * 2 + 1, 1 * 2 + 0] = 1.0  # colour 2, frame 3 (= latent 1 slot k=2)
    z = c.encode_video(video)
    ch = ((2 * 4 + 2) * 2 + 1) * 2 + 0
    hot = (z[0, :, 1] > 0).nonzero().tolist()
    assert hot == [[ch, 1, 1]]


def test_space_time_to_depth_streams_without_seams():
    c = make_codec("space_time_to_depth")
    video = torch.rand(1, 3, 1 + 4 * 6, 8, 8)
    z = c.encode_video(video)  # 7 latents
    s = c.stream_decoder()
    parts = [s.decode(z[:, :, :3]), s.decode(z[:, :, 2:5], overlap=1), s.decode(z[:, :, 5:])]
    assert [p.shape[2] for p in parts] == [9, 8, 8]
    assert torch.equal(torch.cat(parts, dim=2), c.decode_video(z))
