"""The small learned codec (issue 12): `mirage codec train`, its loading, `mirage data
reencode`, and a small model built on it.

A 2-clip lossless store at 32x48 and a VAE of width 8 keep this to seconds; the code paths
(diffusers AutoencoderKLWan, WanVAECodec.from_pretrained, the ClipStore) are the real ones.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_lossless_store

from mirage_core.codecs import (
    SMALL_VAE_MARKER,
    WAN22_SMALL_VAE_CONFIG,
    SpaceTimeToDepthCodec,
    WanVAECodec,
    check_codec_spec,
)
from mirage_core.errors import MirageInputError
from mirage_core.generator.configs import check_vae_config

HW = (32, 48)


@pytest.fixture(scope="module")
def lossless_store(tmp_path_factory):
    return make_lossless_store(tmp_path_factory.mktemp("codec") / "lossless", HW)


def _cfg(store, out, **kw):
    from mirage_core.train.codec import CodecTrainConfig

    base = dict(data=str(store), out_dir=str(out), steps=4, batch_size=1, window=5,
                base_dim=8, decoder_base_dim=8, stats_clips=2, save_every=2, log_every=1,
                warmup_steps=1, progress=False)
    base.update(kw)
    return CodecTrainConfig(**base)


@pytest.fixture(scope="module")
def trained(lossless_store, tmp_path_factory):
    from mirage_core.train.codec import train_codec

    out = tmp_path_factory.mktemp("codec") / "run"
    report = train_codec(_cfg(lossless_store, out, heldout=str(lossless_store)))
    return out, report


def test_small_vae_config_checked_by_its_own_layout():
    cfg = {"_class_name": "AutoencoderKLWan", **WAN22_SMALL_VAE_CONFIG}
    check_vae_config(cfg, "small", small=True)
    with pytest.raises(MirageInputError, match="scale_factor_spatial"):
        check_vae_config(cfg, "small")  # not the 5B layout without the marker
    with pytest.raises(MirageInputError, match="dim_mult"):
        check_vae_config({**cfg, "dim_mult": [1, 2, 4, 4]}, "small", small=True)
    with pytest.raises(MirageInputError, match="latents_std"):
        check_vae_config({**cfg, "latents_std": [0.0] * 48}, "small", small=True)
    with pytest.raises(MirageInputError, match="latents_mean"):
        check_vae_config({**cfg, "latents_mean": [0.0] * 16}, "small", small=True)


def test_train_codec_writes_a_loadable_vae_and_a_report(trained):
    out, report = trained
    vae_dir = out / "vae"
    marker = json.loads((vae_dir / SMALL_VAE_MARKER).read_text())
    assert marker["small_vae"] and marker["steps"] == 4
    cfg = json.loads((vae_dir / "config.json").read_text())
    assert len(cfg["latents_mean"]) == 48 and min(cfg["latents_std"]) > 0
    codec = WanVAECodec.from_pretrained(vae_dir)
    assert (codec.stride, codec.temporal_stride, codec.channels) == (8, 4, 48)
    assert "sha256" in codec.label and "mirage codec train" in codec.label
    video = torch.rand(1, 3, 5, *HW)
    z = codec.encode_video(video)
    assert z.shape == (1, 48, 2, HW[0] // 8, HW[1] // 8)
    assert codec.decode_video(z).shape == video.shape
    held = report["heldout"]
    assert held["clips"] == 2 and len(held["psnr_db_per_clip"]) == 2
    assert all(torch.isfinite(torch.tensor(held["psnr_db_per_clip"])))
    assert (out / "recon.png").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]


def test_train_codec_resumes_and_refuses_another_config(trained, lossless_store):
    from mirage_core.train.codec import train_codec

    out, _ = trained
    train_codec(_cfg(lossless_store, out, steps=6))  # resumes at step 4
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    with pytest.raises(MirageInputError, match="lr"):
        train_codec(_cfg(lossless_store, out, steps=8, lr=2e-3))


def test_train_codec_stops_on_nan_naming_the_step(lossless_store, tmp_path, monkeypatch):
    import mirage_core.train.codec as codec_train

    real = codec_train._windows
    calls = []

    def poisoned(*a):
        calls.append(1)
        x = real(*a)
        return x * float("nan") if len(calls) == 3 else x

    monkeypatch.setattr(codec_train, "_windows", poisoned)
    with pytest.raises(MirageInputError, match="diverged at step 3"):
        codec_train.train_codec(_cfg(lossless_store, tmp_path / "nan"))
    ckpt = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2  # the last good checkpoint is kept


def test_codec_trainer_refuses_a_lossy_store(trained, lossless_store, tmp_path):
    from mirage_core.data.reencode import reencode_store
    from mirage_core.train.codec import load_store_frames

    out, _ = trained
    lossy = tmp_path / "lossy"
    reencode_store(lossless_store, WanVAECodec.from_pretrained(out / "vae"),
                   lossy, progress=False)
    with pytest.raises(MirageInputError, match="lossless"):
        load_store_frames(lossy)


def test_reencode_keeps_everything_but_the_latents(trained, lossless_store, tmp_path):
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.reencode import reencode_store

    codec = WanVAECodec.from_pretrained(trained[0] / "vae")
    out = tmp_path / "re"
    assert reencode_store(lossless_store, codec, out, progress=False) == 2
    assert reencode_store(lossless_store, codec, out, progress=False) == 0  # resumes
    with ClipStore(lossless_store) as a, ClipStore(out) as b:
        assert b.meta.spatial_stride == 8 and b.meta.vae_source == codec.label
        assert a.keys() == b.keys()
        for key in a.keys():
            ca, cb = a.get(key), b.get(key)
            assert cb.latents.shape == (3, 48, HW[0] // 8, HW[1] // 8)
            assert cb.frame_latents.shape == cb.latents.shape
            assert torch.equal(ca.depth, cb.depth) and torch.equal(ca.T_world_cam, cb.T_world_cam)
            frames = SpaceTimeToDepthCodec(2).decode_video(
                ca.latents.permute(1, 0, 2, 3)[None])[0].permute(1, 0, 2, 3).clamp(0, 1)
            want = codec.encode_video(frames.permute(1, 0, 2, 3)[None])[0].permute(1, 0, 2, 3)
            torch.testing.assert_close(cb.latents, want)
    with pytest.raises(MirageInputError, match="differ"):
        reencode_store(lossless_store, codec, lossless_store, progress=False)


def test_codec_spec_names_a_small_vae_folder(trained, tmp_path):
    out, _ = trained
    assert check_codec_spec("space_time_to_depth:2") is None
    assert check_codec_spec(str(out)) == out / "vae"  # the run's --out
    assert check_codec_spec(str(out / "vae")) == out / "vae"
    with pytest.raises(MirageInputError, match="neither"):
        check_codec_spec(str(tmp_path / "missing"))
    tiny = tmp_path / "tiny_vae"
    WanVAECodec.from_config("tiny").vae.save_pretrained(str(tiny))
    with pytest.raises(MirageInputError):
        check_codec_spec(str(tiny))


def test_small_weights_on_a_trained_vae_and_the_store_check(trained, lossless_store, tmp_path):
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.reencode import reencode_store
    from mirage_core.generator.loading import build_small_weights, load_models
    from mirage_core.train.codec import train_codec
    from mirage_core.train.main import _check_store_codec

    out, _ = trained
    root = build_small_weights(tmp_path / "w", codec=str(out))
    models = load_models(root, device="cpu")
    assert models.vae.stride == 8 and "sha256" in models.vae.label
    store = tmp_path / "re"
    reencode_store(lossless_store, WanVAECodec.from_pretrained(out / "vae"), store,
                   progress=False)
    with ClipStore(store) as st:
        _check_store_codec(st, models, store)  # same weights: accepted
    other = tmp_path / "other"
    train_codec(_cfg(lossless_store, other, steps=1, seed=1))
    store2 = tmp_path / "re2"
    reencode_store(lossless_store, WanVAECodec.from_pretrained(other / "vae"), store2,
                   progress=False)
    with ClipStore(store2) as st, pytest.raises(MirageInputError, match="encoded by"):
        _check_store_codec(st, models, store2)


# ------------------------------------------------------------------------------ PCA codec
def _frames(store):
    from mirage_core.train.codec import load_store_frames

    return load_store_frames(store, progress=False)[0]


def test_pca_codec_with_every_component_is_the_lossless_codec(lossless_store):
    """The slow, obvious reference: a PCA codec that keeps all D = 48 components of stride-2
    blocks is an orthonormal change of basis, so it reconstructs exactly."""
    from mirage_core.codecs import fit_pca_codec

    frames = _frames(lossless_store)
    codec = fit_pca_codec(frames, channels=48, stride=2)
    video = frames[0].permute(1, 0, 2, 3).unsqueeze(0).float() / 255.0
    z = codec.encode_video(video)
    assert z.shape == (1, 48, 3, HW[0] // 2, HW[1] // 2)
    torch.testing.assert_close(codec.decode_video(z), video, atol=1e-4, rtol=0)
    basis = codec.basis
    torch.testing.assert_close(basis @ basis.T, torch.eye(48), atol=1e-4, rtol=0)


def test_pca_codec_fit_save_load_and_errors(lossless_store, tmp_path):
    from mirage_core.codecs import PCA_CODEC_FILE, PCAVideoCodec, fit_pca_codec
    from mirage_core.errors import ShapeError, WeightsNotFoundError

    frames = _frames(lossless_store)

    def latents(codec):  # every block it was fitted to (both clips)
        return torch.cat([codec.encode_video(f.permute(1, 0, 2, 3)[None].float() / 255.0)
                          for f in frames], dim=2)

    per_channel = fit_pca_codec(frames, channels=48, stride=8, normalise="channel")
    torch.testing.assert_close(latents(per_channel).std(dim=(0, 2, 3, 4)), torch.ones(48),
                               atol=0.05, rtol=0)
    codec = fit_pca_codec(frames, channels=48, stride=8)  # "global": one scale
    assert torch.equal(codec.scale, codec.scale[:1].expand(48))
    std = latents(codec).std(dim=(0, 2, 3, 4))
    assert abs(float(std.pow(2).mean()) - 1.0) < 0.05  # unit variance on average
    assert float(std[0]) > float(std[-1])  # the leading component keeps its larger share
    with pytest.raises(MirageInputError, match="normalise"):
        fit_pca_codec(frames, normalise="pixel")
    video = frames[1].permute(1, 0, 2, 3).unsqueeze(0).float() / 255.0
    z = codec.encode_video(video)
    assert z.shape == (1, 48, 3, HW[0] // 8, HW[1] // 8)
    image = video[:, :, 0]  # an image encoded alone fills all 4 slots and decodes back
    assert codec.decode(codec.encode(image)).shape == image.shape
    codec.save(tmp_path / "pca", {"trained_on": "test"})
    again = PCAVideoCodec.from_dir(tmp_path / "pca")
    assert torch.equal(again.encode_video(video), z) and "sha256" in again.label
    assert check_codec_spec(str(tmp_path / "pca")) == tmp_path / "pca"
    (tmp_path / "pca" / PCA_CODEC_FILE).write_bytes(b"garbage")
    with pytest.raises(WeightsNotFoundError, match="fit-pca"):
        PCAVideoCodec.from_dir(tmp_path / "pca", rebuild_hint="")
    with pytest.raises(WeightsNotFoundError, match="not a PCA codec folder"):
        PCAVideoCodec.from_dir(tmp_path)
    with pytest.raises(ShapeError):
        PCAVideoCodec(codec.mean[:10], codec.basis, codec.scale)
    with pytest.raises(MirageInputError, match="scale"):
        PCAVideoCodec(codec.mean, codec.basis, torch.zeros(48))


def test_small_weights_on_a_pca_codec_load_and_train_on_its_store(lossless_store, tmp_path):
    from mirage_core.codecs import PCAVideoCodec
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.reencode import reencode_store
    from mirage_core.generator.loading import build_small_weights, load_models
    from mirage_core.train.codec import fit_pca_codec_on_store
    from mirage_core.train.main import _check_store_codec

    report = fit_pca_codec_on_store(lossless_store, tmp_path / "pca", heldout=lossless_store,
                                    progress=False)
    assert report["heldout"]["clips"] == 2 and (tmp_path / "pca" / "recon.png").is_file()
    root = build_small_weights(tmp_path / "w", codec=str(tmp_path / "pca"))
    models = load_models(root, device="cpu")
    assert isinstance(models.vae, PCAVideoCodec) and models.vae.stride == 8
    store = tmp_path / "re"
    reencode_store(lossless_store, PCAVideoCodec.from_dir(tmp_path / "pca"), store,
                   progress=False)
    with ClipStore(store) as st:
        _check_store_codec(st, models, store)
        assert st.get(st.keys()[0]).latents.shape == (3, 48, HW[0] // 8, HW[1] // 8)
    (root / "vae" / "pca_codec.safetensors").unlink()
    from mirage_core.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"pca_codec\.safetensors"):
        load_models(root, device="cpu")
