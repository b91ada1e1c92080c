"""Architecture constants of the Mirage generator: the Wan2.2-TI2V-5B DiT and its side branch.

The full transformer config is the one of ``transformer/config.json`` in
``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` (5.0B parameters; ml-stack-notes.md). The *tiny* config
keeps the layout (patch ``(1, 2, 2)``, 48 latent channels, RMS-norm on q/k across heads,
cross-attention norm, a side branch every 4 blocks) at a size that runs on a laptop CPU; it
exists for tests and ``--tiny`` rollouts, never for results.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LATENT_CHANNELS",
    "TEXT_MAX_TOKENS",
    "TINY_TEXT_ENCODER_CONFIG",
    "TINY_TRANSFORMER_OVERRIDES",
    "WAN22_TI2V_TRANSFORMER_CONFIG",
    "WAN22_TI2V_WEIGHTS_HINT",
    "default_side_layers",
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
}

#: Overrides for the tiny transformer (2 heads x 24 dims, 8 blocks -> side branch at {0, 4}).
TINY_TRANSFORMER_OVERRIDES: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 24,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 96,
    "num_layers": 8,
}

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
    """``WanTransformer3DModel`` kwargs for ``size`` = ``"full"`` or ``"tiny"``."""
    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    cfg = dict(WAN22_TI2V_TRANSFORMER_CONFIG)
    if size == "tiny":
        cfg.update(TINY_TRANSFORMER_OVERRIDES)
    return cfg


def default_side_layers(num_layers: int, every: int = 4) -> tuple[int, ...]:
    """Backbone blocks the side branch feeds: ``{0, 4, ..., 28}`` for the 30-block backbone."""
    if num_layers < 1 or every < 1:
        raise ValueError(f"need num_layers >= 1 and every >= 1, got {num_layers}, {every}")
    return tuple(range(0, num_layers, every))
