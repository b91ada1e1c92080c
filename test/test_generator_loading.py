"""Loading the generator from local files, prompts, chunk planning and input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError
from mirage_core.generator.loading import (
    SIDE_BRANCH_FILENAME,
    build_tiny_weights,
    check_weights_dir,
    load_models,
)
from mirage_core.generator.side_branch import SideBranchMismatchError
from mirage_core.generator.text import (
    check_prompt,
    load_prompt_embeddings,
    save_prompt_embeddings,
)
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.rollout.inputs import check_camera, check_image, load_image
from mirage_core.rollout.schedule import plan_chunks, pose_frame_of_latent
from mirage_core.trajectory import make_trajectory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_weights(tmp_path_factory.mktemp("tiny") / "w")


def test_tiny_weights_load_through_the_real_loader(tiny_dir):
    m = load_models(tiny_dir, device="cpu")
    assert "RANDOM tiny" in m.source and m.side_branch_source.endswith(SIDE_BRANCH_FILENAME)
    counts = m.parameter_counts()
    assert all(counts[k] > 0 for k in ("transformer", "side_branch", "vae", "text_encoder"))
    assert m.transformer.side_branch.config.layers == (0, 4)
    assert not m.transformer.side_branch.is_zero()
    states = m.encode_prompt("a small room")
    assert states.shape == (1, 512, m.text_dim)
    n = int((states.abs().sum(-1) > 0).sum())
    assert 0 < n < 512  # real tokens, then zeroed padding
    zero = load_models(tiny_dir, side_branch="zero", device="cpu", load_text_encoder=False)
    assert zero.side_branch_source == "zero" and zero.transformer.side_branch.is_zero()
    assert zero.prompt_encoder is None
    with pytest.raises(MirageInputError, match="precomputed"):
        zero.encode_prompt("x")


def test_build_tiny_weights_is_idempotent(tiny_dir):
    before = (tiny_dir / SIDE_BRANCH_FILENAME).stat().st_mtime_ns
    build_tiny_weights(tiny_dir)
    assert (tiny_dir / SIDE_BRANCH_FILENAME).stat().st_mtime_ns == before


def test_missing_weights_name_the_directory_and_how_to_get_them(tmp_path, tiny_dir):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        check_weights_dir(tmp_path / "absent")
    (tmp_path / "w" / "transformer").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError) as e:
        check_weights_dir(tmp_path / "w")
    msg = str(e.value)
    assert "vae/" in msg and "transformer/config.json" in msg and str(tmp_path / "w") in msg
    with pytest.raises(WeightsNotFoundError, match="--side-branch zero"):
        load_models(tiny_dir, side_branch=tmp_path / "none.safetensors", device="cpu")


def test_side_branch_for_another_backbone_is_rejected(tmp_path, tiny_dir):
    import shutil

    from diffusers import WanTransformer3DModel

    from mirage_core.generator.configs import transformer_config
    from mirage_core.generator.side_branch import MemorySideBranch, SideBranchConfig

    cfg = transformer_config("tiny")
    cfg["num_layers"] = 12  # -> side layers (0, 4, 8): does not fit the 8-block backbone
    other = MemorySideBranch(SideBranchConfig.for_backbone(WanTransformer3DModel(**cfg)))
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(SideBranchMismatchError, match="layers"):
        load_models(tiny_dir, side_branch=tmp_path / "other.safetensors", device="cpu")
    # A transformer that is not TI2V (16 latent channels, Wan2.1) is refused by name.
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    conf = json.loads((bad / "transformer" / "config.json").read_text())
    conf["in_channels"] = conf["out_channels"] = 16
    (bad / "transformer" / "config.json").write_text(json.dumps(conf))
    with pytest.raises((MirageInputError, RuntimeError, ValueError)):
        load_models(bad, side_branch="zero", device="cpu")


def test_prompts_and_precomputed_embeddings(tmp_path):
    assert check_prompt("  a   room \n") == "a room"
    for bad in ("", "   \n", None):
        with pytest.raises(MirageInputError):
            check_prompt(bad)
    states = torch.randn(1, 512, 32)
    save_prompt_embeddings(tmp_path / "p.safetensors", states, "a room")
    torch.testing.assert_close(load_prompt_embeddings(tmp_path / "p.safetensors", dim=32), states)
    with pytest.raises(ShapeError, match="text_dim"):
        load_prompt_embeddings(tmp_path / "p.safetensors", dim=4096)
    with pytest.raises(MirageInputError, match="does not exist"):
        load_prompt_embeddings(tmp_path / "q.safetensors")


def test_chunk_plan_and_pose_rule():
    plans = plan_chunks(1 + 32 * 3)
    assert [p.latent_indices for p in plans] == [
        tuple(range(1, 9)), tuple(range(9, 17)), tuple(range(17, 25))
    ]
    assert plans[1].pose_frames == (36, 40, 44, 48, 52, 56, 60, 64)
    assert plans[2].rgb_frames == (65, 96)
    assert pose_frame_of_latent(0) == 0 and pose_frame_of_latent(5) == 20
    assert len(plan_chunks(100)) == 3  # the 3 extra poses are unused
    with pytest.raises(MirageInputError, match="need 33"):
        plan_chunks(32)
    with pytest.raises(MirageInputError, match="need 97"):
        plan_chunks(70, num_chunks=3)


def test_image_checks(tmp_path):
    from PIL import Image

    ok = np.zeros((64, 96, 3), np.uint8)
    assert check_image(ok).shape == (3, 64, 96)
    with pytest.raises(ShapeError, match="multiples of 32"):
        check_image(np.zeros((60, 96, 3), np.uint8))
    with pytest.raises(ShapeError, match=r"\[H, W, 3\]"):
        check_image(np.zeros((64, 96), np.uint8))
    with pytest.raises(MirageInputError, match=r"\[0, 1\]"):
        check_image(torch.full((3, 64, 96), 2.0))
    Image.fromarray(np.zeros((64, 96, 4), np.uint8), "RGBA").save(tmp_path / "a.png")
    with pytest.raises(MirageInputError, match="mode 'RGBA'"):
        load_image(tmp_path / "a.png")
    Image.fromarray(np.zeros((64, 96), np.uint8), "L").save(tmp_path / "g.png")
    with pytest.raises(MirageInputError, match="mode 'L'"):
        load_image(tmp_path / "g.png")
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(MirageInputError, match="cannot read"):
        load_image(tmp_path / "x.png")
    Image.fromarray(ok).save(tmp_path / "ok.png")
    assert torch.equal(load_image(tmp_path / "ok.png"), check_image(ok))


def test_camera_checks():
    K = intrinsics_from_fov(96, 64, 60.0)
    traj = make_trajectory("pan_left", 5, K=K, image_hw=(64, 96))
    torch.testing.assert_close(check_camera(traj, (64, 96)), K)
    with pytest.raises(ShapeError, match="64x96 images but the image is 128x128"):
        check_camera(traj, (128, 128))  # another aspect ratio (a resize to 128x192 is scaled)
    far = K.clone()
    far[0, 2] = 500.0
    with pytest.raises(MirageInputError, match="principal point"):
        check_camera(traj, (64, 96), far)
    with pytest.raises(MirageInputError, match="no intrinsics"):
        check_camera(make_trajectory("pan_left", 5), (64, 96))


# ----------------------------------------------------------------------------- precision
def _check_branch_dtypes_follow_backbone(tr, dtype):
    """Every side-branch block tensor has the dtype of the backbone block it was copied from:
    norms and scale_shift_table float32 (diffusers' _keep_in_fp32_modules), the rest dtype."""
    bb, sb = tr.backbone, tr.side_branch
    for i, layer in enumerate(sb.config.layers):
        ref = dict(bb.blocks[layer].named_parameters())
        for name, p in sb.blocks[i].named_parameters():
            assert p.dtype == ref[name].dtype, (name, p.dtype, ref[name].dtype)
    kept = {n for n, p in sb.named_parameters() if p.dtype == torch.float32}
    want = {n for n, _ in sb.named_parameters()
            if {"scale_shift_table", "norm2"} & set(n.split("."))}
    assert want and kept == want
    assert sb.blocks[0].attn1.to_q.weight.dtype == dtype
    assert sb.proj_out[0].weight.dtype == dtype


def test_bf16_load_keeps_the_vae_and_the_norms_in_float32(tiny_dir):
    """Wan2.2 builds its VAE in float32 (wan/modules/vae2_2.py: Wan2_2_VAE(dtype=torch.float),
    used so by wan/textimage2video.py); norms and modulation stay float32 as in the backbone."""
    from mirage_core.generator.loading import random_models

    bf = torch.bfloat16
    m = load_models(tiny_dir, device="cpu", dtype=bf, load_text_encoder=False)
    assert {p.dtype for p in m.vae.vae.parameters()} == {torch.float32}
    assert m.vae.dtype == torch.float32
    assert m.transformer.dtype == bf
    _check_branch_dtypes_follow_backbone(m.transformer, bf)
    # the untrained branch and the in-memory random models follow the same rule
    zero = load_models(tiny_dir, side_branch="zero", device="cpu", dtype=bf,
                       load_text_encoder=False)
    _check_branch_dtypes_follow_backbone(zero.transformer, bf)
    rnd = random_models("tiny", device="cpu", dtype=bf)
    _check_branch_dtypes_follow_backbone(rnd.transformer, bf)
    assert {p.dtype for p in rnd.vae.vae.parameters()} == {torch.float32}
    # vae_dtype trades precision for memory when asked
    small = load_models(tiny_dir, device="cpu", dtype=bf, load_text_encoder=False,
                        vae_dtype=bf)
    assert small.vae.dtype == bf
    # the mixed-dtype branch runs, and agrees with the float32 model to bf16 precision
    f32 = load_models(tiny_dir, device="cpu", load_text_encoder=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 48, 3, 4, 6), generator=g)
    text = torch.randn((1, 7, f32.text_dim), generator=g)
    ro = torch.randn((1, 48, 3, 4, 6), generator=g)
    mask = torch.ones(1, 3, 4, 6)
    labels = [0, 1, 2]
    with torch.no_grad():
        a = m.transformer(x, 500.0, labels, text, ro, mask).float()
        b = f32.transformer(x, 500.0, labels, text, ro, mask)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() < 0.05 * b.abs().max()


# ----------------------------------------------------------------------------- configs
def _full_transformer_json():
    from mirage_core.generator.configs import transformer_config

    conf = dict(transformer_config("full"), _class_name="WanTransformer3DModel",
                _diffusers_version="0.35.0")
    conf["patch_size"] = list(conf["patch_size"])
    return conf


@pytest.mark.parametrize("key,value", [
    ("image_dim", 1280),  # Wan2.1 I2V image encoder
    ("added_kv_proj_dim", 5120),  # Wan2.1 I2V added K/V projections
    ("pos_embed_seq_len", 514),  # Wan2.1 FLF2V learned positions
    ("in_channels", 36),
    ("out_channels", 16),
    ("patch_size", [1, 4, 4]),
    ("qk_norm", "rms_norm"),
    ("cross_attn_norm", False),
    ("eps", 1e-5),
    ("rope_max_seq_len", 512),
    ("text_dim", 768),
    ("num_layers", 40),
    ("num_attention_heads", 40),
    ("ffn_dim", 13824),
    ("_class_name", "WanVACETransformer3DModel"),
])
def test_transformer_configs_that_are_not_ti2v_5b_are_refused_by_key(key, value):
    from mirage_core.generator.configs import TI2V_SIZE_KEYS, check_transformer_config

    check_transformer_config(_full_transformer_json())  # the real 5B config passes
    conf = _full_transformer_json()
    conf[key] = value
    with pytest.raises(MirageInputError, match=key):
        check_transformer_config(conf, "DIR/transformer")
    # a tiny directory may differ in size keys only
    if key in TI2V_SIZE_KEYS:
        check_transformer_config(conf, tiny=True)
    else:
        with pytest.raises(MirageInputError, match=key):
            check_transformer_config(conf, tiny=True)


def test_missing_config_keys_take_diffusers_defaults():
    """A key left out means diffusers' default (16 channels: Wan2.1), so it is refused too."""
    from mirage_core.generator.configs import check_transformer_config, check_vae_config

    conf = _full_transformer_json()
    del conf["in_channels"]
    with pytest.raises(MirageInputError, match="in_channels"):
        check_transformer_config(conf)
    conf = _full_transformer_json()
    del conf["out_channels"]
    conf["out_channels"] = None  # diffusers: out_channels or in_channels -> 48
    check_transformer_config(conf)
    with pytest.raises(MirageInputError, match="z_dim"):
        check_vae_config({"_class_name": "AutoencoderKLWan"})  # Wan2.1's VAE defaults


@pytest.mark.parametrize("key,value", [
    ("z_dim", 16), ("is_residual", False), ("in_channels", 3), ("patch_size", None),
    ("scale_factor_spatial", 8), ("scale_factor_temporal", 8),
    ("temperal_downsample", [False, True, False]), ("dim_mult", [1, 2, 4]),
    ("latents_std", [1.0] * 48), ("base_dim", 96),
])
def test_vae_configs_that_are_not_wan22_are_refused_by_key(key, value):
    from mirage_core.codecs import WAN22_VAE_CONFIG
    from mirage_core.generator.configs import VAE_SIZE_KEYS, check_vae_config

    base = dict(WAN22_VAE_CONFIG, _class_name="AutoencoderKLWan", clip_output=False)
    check_vae_config(base)
    conf = dict(base, **{key: value})
    with pytest.raises(MirageInputError, match=key):
        check_vae_config(conf, "DIR/vae")
    if key in VAE_SIZE_KEYS:
        check_vae_config(conf, tiny=True)


def test_load_models_refuses_third_party_configs_before_loading(tmp_path, tiny_dir):
    import shutil

    bad = tmp_path / "i2v"
    shutil.copytree(tiny_dir, bad)
    path = bad / "transformer" / "config.json"
    conf = json.loads(path.read_text())
    conf["image_dim"] = 32
    path.write_text(json.dumps(conf))
    with pytest.raises(MirageInputError, match="'image_dim' is 32, expected None"):
        load_models(bad, side_branch="zero", device="cpu", load_text_encoder=False)
    conf["image_dim"] = None
    conf["added_kv_proj_dim"] = 48
    path.write_text(json.dumps(conf))
    with pytest.raises(MirageInputError, match="added_kv_proj_dim"):
        load_models(bad, side_branch="zero", device="cpu", load_text_encoder=False)
    conf["added_kv_proj_dim"] = None
    path.write_text(json.dumps(conf))
    # a Wan2.1 VAE config beside the transformer
    vpath = bad / "vae" / "config.json"
    vconf = json.loads(vpath.read_text())
    vpath.write_text(json.dumps(dict(vconf, z_dim=16)))
    with pytest.raises(MirageInputError, match="z_dim"):
        load_models(bad, side_branch="zero", device="cpu", load_text_encoder=False)
    vpath.write_text(json.dumps(vconf))
    load_models(bad, side_branch="zero", device="cpu", load_text_encoder=False)
    # without the tiny marker the directory is third-party: tiny sizes are refused
    (bad / "mirage_tiny.json").unlink()
    with pytest.raises(MirageInputError, match=r"num_attention_heads.*build_tiny_weights"):
        load_models(bad, side_branch="zero", device="cpu", load_text_encoder=False)
    path.write_text("{not json")
    with pytest.raises(WeightsNotFoundError, match=r"config\.json"):
        load_models(bad, side_branch="zero", device="cpu", load_text_encoder=False)
