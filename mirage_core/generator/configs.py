"""Architecture constants of the Mirage generator: the Wan2.2-TI2V-5B DiT and its side branch.

The full transformer config is the one of ``transformer/config.json`` in
``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` (5.0B parameters; ml-stack-notes.md). The *tiny* config
keeps the layout (patch ``(1, 2, 2)``, 48 latent channels, RMS-norm on q/k across heads,
cross-attention norm, a side branch every 4 blocks) at a size that runs on a laptop CPU; it
exists for tests and ``--tiny`` rollouts, never for results. The *small* config is the same
layout at a size that can be trained from scratch on a CPU (``mirage train --size small``,
``config/train_small.yaml``): its hidden size (192) is at least a token's output
(48 channels x 2 x 2 patch), which the tiny one's (48) is not, so the tiny model can fill only
a quarter of each output token and its loss floors (issue 12).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LATENT_CHANNELS",
    "SIDE_BRANCH_EVERY",
    "SIZES",
    "SMALL_TRANSFORMER_OVERRIDES",
    "TEXT_MAX_TOKENS",
    "TI2V_SIZE_KEYS",
    "TI2V_STRUCTURAL_KEYS",
    "TINY_TEXT_ENCODER_CONFIG",
    "TINY_TRANSFORMER_OVERRIDES",
    "VAE_SIZE_KEYS",
    "VAE_STRUCTURAL_KEYS",
    "WAN22_TI2V_TRANSFORMER_CONFIG",
    "WAN22_TI2V_WEIGHTS_HINT",
    "check_transformer_config",
    "check_vae_config",
    "default_side_layers",
    "side_layers_for_size",
    "transformer_config",
]

LATENT_CHANNELS = 48
#: Wan pads/truncates prompts to 512 tokens of UMT5.
TEXT_MAX_TOKENS = 512

#: Keyword arguments of ``diffusers.WanTransformer3DModel`` for Wan2.2-TI2V-5B.
WAN22_TI2V_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 14336,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}

#: ``WanTransformer3DModel`` keys that make a config a Wan2.2-TI2V model at any size: the
#: 48-channel latent in and out, the (1, 2, 2) patch, no image encoder (``image_dim``) and no
#: added K/V projections (``added_kv_proj_dim``: the Wan2.1 image-to-video variant), no
#: learned position embedding (``pos_embed_seq_len``: Wan2.1 FLF2V), the RMS q/k norm across
#: heads, the cross-attention norm, the norm epsilon and the RoPE table length.
TI2V_STRUCTURAL_KEYS: tuple[str, ...] = (
    "patch_size", "in_channels", "out_channels", "image_dim", "added_kv_proj_dim",
    "pos_embed_seq_len", "qk_norm", "cross_attn_norm", "eps", "rope_max_seq_len",
)
#: Keys that only set the model's size: they must equal the 5B values except in a directory
#: written by ``build_tiny_weights`` or ``build_small_weights`` (marked ``mirage_tiny.json``).
#: ``text_dim`` is the UMT5-XXL width (4096); it is checked against the text encoder at load.
TI2V_SIZE_KEYS: tuple[str, ...] = (
    "num_attention_heads", "attention_head_dim", "text_dim", "freq_dim", "ffn_dim", "num_layers",
)

#: ``AutoencoderKLWan`` keys that make a VAE the Wan2.2 one at any size: 48 latent channels,
#: the residual (Wan2.2) blocks, 2x2 patchify of RGB (12 channels in and out), 4 levels with
#: temporal downsampling at the last two (spatial stride 16, temporal stride 4) and the
#: per-channel latent statistics the DiT was trained on. Values: ``mirage_core.codecs.
#: WAN22_VAE_CONFIG`` (diffusers' Wan2.2 conversion script).
VAE_STRUCTURAL_KEYS: tuple[str, ...] = (
    "z_dim", "is_residual", "in_channels", "out_channels", "patch_size",
    "scale_factor_spatial", "scale_factor_temporal", "temperal_downsample", "dim_mult",
    "attn_scales", "latents_mean", "latents_std",
)
#: VAE widths and depth; free in a ``build_tiny_weights`` directory, 5B values otherwise.
VAE_SIZE_KEYS: tuple[str, ...] = ("base_dim", "decoder_base_dim", "num_res_blocks")

#: Overrides for the tiny transformer (2 heads x 24 dims, 8 blocks -> side branch at {0, 4}).
TINY_TRANSFORMER_OVERRIDES: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 24,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 96,
    "num_layers": 8,
}

#: Overrides for the small transformer, trained from scratch on a CPU (issue 12): 3 heads x 64
#: dims = hidden 192 = a token's output (48 x 2 x 2), ffn 4x hidden, 8 blocks, the tiny text
#: encoder's width (32), the 5B model's timestep-embedding width. ~4.7M backbone parameters;
#: with the side branch on every 2nd block (:data:`SIDE_BRANCH_EVERY`) ~7.3M in all.
SMALL_TRANSFORMER_OVERRIDES: dict[str, Any] = {
    "num_attention_heads": 3,
    "attention_head_dim": 64,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 768,
    "num_layers": 8,
}

#: Transformer sizes: ``"full"`` (Wan2.2-TI2V-5B), ``"small"`` (trainable on a CPU), ``"tiny"``
#: (tests and smoke runs).
SIZES: tuple[str, ...] = ("full", "small", "tiny")

#: size -> the side branch feeds every N-th backbone block (the paper's every 4th at full size;
#: every 2nd in the 8-block small model, so 4 blocks see the memory).
SIDE_BRANCH_EVERY: dict[str, int] = {"full": 4, "small": 2, "tiny": 4}

#: ``transformers.UMT5Config`` of the tiny text encoder (Wan uses google/umt5-xxl's encoder).
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 384,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": True,
}

WAN22_TI2V_WEIGHTS_HINT = (
    "Mirage needs the diffusers-format Wan2.2-TI2V-5B weights in a local directory (it never "
    "downloads). On a machine with internet access run\n"
    "  huggingface-cli download Wan-AI/Wan2.2-TI2V-5B-Diffusers --local-dir DIR\n"
    "copy DIR to this machine and pass it with --weights DIR. It must hold transformer/, vae/, "
    "text_encoder/ and tokenizer/. The memory side branch is a separate safetensors file "
    "(--side-branch FILE; see `mirage train`). To check the pipeline without any weights, "
    "use --tiny."
)


def transformer_config(size: str = "full") -> dict[str, Any]:
    """``WanTransformer3DModel`` kwargs for ``size`` = ``"full"``, ``"small"`` or ``"tiny"``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    cfg = dict(WAN22_TI2V_TRANSFORMER_CONFIG)
    if size == "tiny":
        cfg.update(TINY_TRANSFORMER_OVERRIDES)
    elif size == "small":
        cfg.update(SMALL_TRANSFORMER_OVERRIDES)
    return cfg


def side_layers_for_size(size: str) -> tuple[int, ...]:
    """Backbone blocks the side branch feeds at ``size``: ``(0, 4, ..., 28)`` full,
    ``(0, 2, 4, 6)`` small, ``(0, 4)`` tiny."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return default_side_layers(int(transformer_config(size)["num_layers"]),
                               SIDE_BRANCH_EVERY[size])


def default_side_layers(num_layers: int, every: int = 4) -> tuple[int, ...]:
    """Backbone blocks the side branch feeds: ``{0, 4, ..., 28}`` for the 30-block backbone."""
    if num_layers < 1 or every < 1:
        raise ValueError(f"need num_layers >= 1 and every >= 1, got {num_layers}, {every}")
    return tuple(range(0, num_layers, every))


def _effective_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed with ``cls.__init__``'s defaults (what diffusers would build)."""
    params = inspect.signature(cls.__init__).parameters
    eff = {k: p.default for k, p in params.items()
           if k != "self" and p.default is not inspect.Parameter.empty}
    eff.update({k: v for k, v in config.items() if not k.startswith("_")})
    return eff


def _same(a: Any, b: Any) -> bool:
    """Config values equal, lists and tuples alike, floats to 1e-6 relative."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or (a == b and type(a) is type(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)
    return a == b


def _check_keys(eff: Mapping[str, Any], expected: Mapping[str, Any], keys: tuple[str, ...],
                where: str, what: str, note: str) -> None:
    from mirage_core.errors import MirageInputError

    for k in keys:
        if not _same(eff.get(k), expected[k]):
            raise MirageInputError(
                f"{where} is not a {what}: config key {k!r} is {eff.get(k)!r}, expected "
                f"{expected[k]!r}{note}"
            )


def check_transformer_config(config: Mapping[str, Any], where: str = "transformer config",
                             tiny: bool = False) -> None:
    """Refuse a ``WanTransformer3DModel`` config that is not Wan2.2-TI2V-5B-shaped.

    Args:
        config: the ``transformer/config.json`` dict (missing keys take diffusers' defaults,
            as ``from_pretrained`` would).
        where: what to call the config in the message (its path).
        tiny: the directory was written by ``build_tiny_weights`` or ``build_small_weights``;
            then only the :data:`TI2V_STRUCTURAL_KEYS` are checked, not the
            :data:`TI2V_SIZE_KEYS`.
    Raises:
        MirageInputError: naming the first key that differs, its value and the expected one
            (e.g. ``image_dim`` 1280 of a Wan2.1 image-to-video transformer).
    """
    from diffusers import WanTransformer3DModel

    from mirage_core.errors import MirageInputError

    cls_name = config.get("_class_name", "WanTransformer3DModel")
    if cls_name != "WanTransformer3DModel":
        raise MirageInputError(
            f"{where} is not a Wan2.2-TI2V-5B transformer: _class_name {cls_name!r}, expected "
            "'WanTransformer3DModel'"
        )
    eff = _effective_config(WanTransformer3DModel, config)
    if eff.get("out_channels") is None:  # diffusers: out_channels = out_channels or in_channels
        eff["out_channels"] = eff.get("in_channels")
    what = "Wan2.2-TI2V-5B transformer"
    _check_keys(eff, WAN22_TI2V_TRANSFORMER_CONFIG, TI2V_STRUCTURAL_KEYS, where, what, "")
    if not tiny:
        _check_keys(eff, WAN22_TI2V_TRANSFORMER_CONFIG, TI2V_SIZE_KEYS, where, what,
                    " (other sizes are accepted only in a build_tiny_weights directory)")


def check_vae_config(config: Mapping[str, Any], where: str = "VAE config",
                     tiny: bool = False, small: bool = False) -> None:
    """Refuse an ``AutoencoderKLWan`` config that is not the Wan2.2-TI2V-5B VAE.

    Same rules as :func:`check_transformer_config`, with :data:`VAE_STRUCTURAL_KEYS` and
    :data:`VAE_SIZE_KEYS` (a Wan2.1 VAE, z_dim 16 and stride 8, is refused by ``z_dim``).

    Args:
        small: the folder is a small VAE written by ``mirage codec train`` (it holds
            :data:`~mirage_core.codecs.SMALL_VAE_MARKER`): the structure must be
            :data:`~mirage_core.codecs.WAN22_SMALL_VAE_CONFIG`'s (stride 8), the sizes are
            free and ``latents_mean`` / ``latents_std`` are the ones measured after training
            (one value per latent channel).

    Raises:
        MirageInputError: naming the first key that differs.
    """
    from diffusers import AutoencoderKLWan

    from mirage_core.codecs import WAN22_SMALL_VAE_CONFIG, WAN22_VAE_CONFIG
    from mirage_core.errors import MirageInputError

    if small:
        eff = _effective_config(AutoencoderKLWan, config)
        what = "small Wan2.2-layout VAE (mirage codec train)"
        keys = tuple(k for k in VAE_STRUCTURAL_KEYS if k not in ("latents_mean", "latents_std"))
        _check_keys(eff, WAN22_SMALL_VAE_CONFIG, keys, where, what, "")
        for k in ("latents_mean", "latents_std"):
            v = eff.get(k)
            if not isinstance(v, (list, tuple)) or len(v) != int(eff["z_dim"]) or not all(
                isinstance(x, (int, float)) and math.isfinite(x) for x in v
            ) or (k == "latents_std" and min(v) <= 0):
                raise MirageInputError(
                    f"{where} is not a {what}: {k} must be {eff['z_dim']} finite numbers"
                    f"{' > 0' if k == 'latents_std' else ''}"
                )
        return

    cls_name = config.get("_class_name", "AutoencoderKLWan")
    if cls_name != "AutoencoderKLWan":
        raise MirageInputError(
            f"{where} is not a Wan2.2 VAE: _class_name {cls_name!r}, expected 'AutoencoderKLWan'"
        )
    eff = _effective_config(AutoencoderKLWan, config)
    what = "Wan2.2-TI2V-5B VAE"
    _check_keys(eff, WAN22_VAE_CONFIG, VAE_STRUCTURAL_KEYS, where, what, "")
    if not tiny:
        _check_keys(eff, WAN22_VAE_CONFIG, VAE_SIZE_KEYS, where, what,
                    " (other sizes are accepted only in a build_tiny_weights directory)")
