"""The Mirage DiT: Wan2.2-TI2V-5B (diffusers) + the memory side branch + segment-aware RoPE.

:class:`MirageTransformer` reuses every module of a ``diffusers.WanTransformer3DModel``
(patch embedding, condition embedder, blocks, output head) and re-implements only its
``forward``, in order to

1. take per-frame :class:`~mirage_core.generator.segment_rope.SegmentLabel`\\ s and turn them
   into segment-aware RoPE tables and per-token timesteps (clean frames get timestep 0, the
   TI2V ``expand_timesteps`` mechanism), and
2. add the side branch's hints after the attached blocks.

diffusers' ``WanVACETransformer3DModel`` cannot be used for this: it rejects the 2-D per-token
timesteps TI2V needs (ml-stack-notes.md). With labels ``[PRECEDING, TARGET, ...]`` the RoPE
positions are ``0..F-1`` and :meth:`MirageTransformer.forward` computes exactly what
``WanTransformer3DModel.forward`` computes with the same per-token timesteps, plus the hints;
``test/test_generator_model.py`` checks both against diffusers' own forward.

Shapes: latents and readouts are ``[B, C, F, h, w]`` (``C = 48``; ``h, w`` the latent grid,
divisible by the patch size 2); the mask is ``[B, F, h, w]``; text states ``[B, L, text_dim]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.segment_rope import (
    SegmentLabel,
    SegmentRoPE,
    SegmentRoPEConfig,
    _as_labels,
)
from mirage_core.generator.side_branch import MemorySideBranch

__all__ = ["MirageTransformer", "per_token_timesteps"]


def per_token_timesteps(
    timestep: torch.Tensor | float,
    labels: Sequence[int],
    tokens_per_frame: int,
    batch: int,
    device=None,
) -> torch.Tensor:
    """``[B, F * tokens_per_frame]`` float32: ``timestep`` on TARGET frames, 0 on clean ones.

    ``timestep`` is a scalar or ``[B]`` (the scheduler's value, 0..1000).
    """
    t = torch.as_tensor(timestep, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ShapeError(f"timestep must be a scalar or [B] = [{batch}], got {tuple(t.shape)}")
    is_target = torch.tensor(
        [lab == SegmentLabel.TARGET for lab in _as_labels(labels)], device=device
    )
    per_frame = t[:, None] * is_target[None, :].to(torch.float32)  # [B, F]
    return per_frame.repeat_interleave(tokens_per_frame, dim=1)


class MirageTransformer(nn.Module):
    """Wan2.2-TI2V DiT with the memory side branch (``side_branch=None``: the plain backbone).

    Args:
        backbone: a ``diffusers.WanTransformer3DModel`` (Wan2.2-TI2V-5B or a tiny variant).
        side_branch: a :class:`MemorySideBranch` built for this backbone, or ``None``.
        rope_config: segment positions on the temporal RoPE axis.
    """

    def __init__(
        self,
        backbone: nn.Module,
        side_branch: MemorySideBranch | None = None,
        rope_config: SegmentRoPEConfig | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.side_branch = side_branch
        c = backbone.config
        self.patch_size = tuple(int(p) for p in c.patch_size)
        self.in_channels = int(c.in_channels)
        self.rope = SegmentRoPE(int(c.attention_head_dim), self.patch_size, rope_config)
        if side_branch is not None:
            sc = side_branch.config
            want = int(c.num_attention_heads * c.attention_head_dim)
            if sc.inner_dim != want or (sc.layers and sc.layers[-1] >= c.num_layers):
                raise MirageInputError(
                    f"side branch (dim {sc.inner_dim}, layers {sc.layers}) does not fit a "
                    f"backbone of dim {want} and {c.num_layers} blocks"
                )
        self._gradient_checkpointing = False

    @property
    def gradient_checkpointing(self) -> bool:
        """Recompute the backbone's and the side branch's blocks in the backward pass."""
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        self._gradient_checkpointing = bool(on)
        if self.side_branch is not None:
            self.side_branch.gradient_checkpointing = bool(on)

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.patch_embedding.weight.device

    def _check(self, latents, labels, readout, mask):
        if latents.ndim != 5 or latents.shape[1] != self.in_channels:
            raise ShapeError(
                f"latents must be [B, {self.in_channels}, F, h, w], got {tuple(latents.shape)}"
            )
        B, _, F, h, w = latents.shape
        if len(labels) != F:
            raise ShapeError(f"{len(labels)} labels for {F} latent frames")
        _, ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ShapeError(f"latent grid {h}x{w} must be divisible by the patch {ph}x{pw}")
        if readout is not None and tuple(readout.shape) != tuple(latents.shape):
            raise ShapeError(
                f"readout must match latents {tuple(latents.shape)}, got {tuple(readout.shape)}"
            )
        if mask is not None and tuple(mask.shape) != (B, F, h, w):
            raise ShapeError(f"mask must be [B, F, h, w] = {(B, F, h, w)}, got {tuple(mask.shape)}")

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        labels: Sequence[int],
        encoder_hidden_states: torch.Tensor,
        readout: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        conditioning_scale: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Predict the flow ``eps - x0`` for every frame.

        Args:
            latents: ``[B, 48, F, h, w]`` noisy targets and clean preceding/reference frames.
            timestep: scalar or ``[B]`` sampler timestep (0..1000) of the TARGET frames.
            labels: ``[F]`` :class:`SegmentLabel` per frame.
            encoder_hidden_states: ``[B, L, text_dim]`` UMT5 states.
            readout: ``[B, 48, F, h, w]`` memory readout (zeros on clean frames), or ``None``
                to skip the side branch.
            mask: ``[B, F, h, w]`` visibility mask (bool or float), required with ``readout``.
            conditioning_scale: multiplier on the hints: a number, or ``[B]`` one per sample
                (training batches mixing samples with and without memory: 0 skips it).
        Returns:
            ``[B, 48, F, h, w]`` in the model's dtype.
        """
        labels = _as_labels(labels)
        self._check(latents, labels, readout, mask)
        if readout is not None and mask is None:
            raise MirageInputError("a readout needs its visibility mask")
        bb = self.backbone
        B, _, F, h, w = latents.shape
        _, ph, pw = self.patch_size
        hp, wp = h // ph, w // pw
        dtype = self.dtype

        rotary_emb = self.rope(labels, (h, w), device=latents.device)
        x = bb.patch_embedding(latents.to(dtype)).flatten(2).transpose(1, 2).contiguous()
        S = x.shape[1]
        t_tok = per_token_timesteps(timestep, labels, hp * wp, B, device=latents.device)
        temb, timestep_proj, text, _ = bb.condition_embedder(
            t_tok.flatten(), encoder_hidden_states.to(dtype), None, timestep_seq_len=S
        )
        timestep_proj = timestep_proj.unflatten(2, (6, -1))  # [B, S, 6, D]

        hints: dict[int, torch.Tensor] = {}
        if torch.is_tensor(conditioning_scale):
            if conditioning_scale.shape not in ((), (B,)):
                raise ShapeError(f"conditioning_scale must be a number or [B] = [{B}], got "
                                 f"{tuple(conditioning_scale.shape)}")
            conditioning_scale = conditioning_scale.to(latents.device).reshape(-1, 1, 1)
        if readout is not None and self.side_branch is not None:
            sb = self.side_branch
            r = bb.patch_embedding(readout.to(dtype))
            m = sb.mask_embedding(mask.to(dtype)[:, None])
            ctrl = (r + m).flatten(2).transpose(1, 2).contiguous()
            for layer, hint in zip(
                sb.config.layers, sb(x, ctrl, text, timestep_proj, rotary_emb), strict=True
            ):
                scale = (conditioning_scale.to(hint.dtype) if torch.is_tensor(conditioning_scale)
                         else conditioning_scale)
                hints[layer] = hint * scale

        for i, block in enumerate(bb.blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = torch.utils.checkpoint.checkpoint(
                    block, x, text, timestep_proj, rotary_emb, use_reentrant=False
                )
            else:
                x = block(x, text, timestep_proj, rotary_emb)
            if i in hints:
                x = x + hints[i]

        shift, scale = (bb.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        x = (bb.norm_out(x.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(x)
        x = bb.proj_out(x)
        pt = self.patch_size[0]
        x = x.reshape(B, F // pt, hp, wp, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
