"""Segment-aware rotary position embedding (method.md section 4).

Every latent frame in one forward pass carries a :class:`SegmentLabel`:

* ``TARGET``    -- a noisy frame being generated in this chunk;
* ``PRECEDING`` -- a clean frame carried over from the previous chunk (the 1-frame overlap);
* ``REFERENCE`` -- the clean latent of the rollout's first frame ``I_0``.

How a label enters the model (**ours**; the paper names the labels but not the encoding):

1. **Temporal RoPE position.** Wan's 3-D RoPE splits each attention head into a temporal band
   (44 of 128 dims) and two spatial bands (42 + 42). The spatial positions are the token's
   row and column, as in Wan. The temporal position of a frame is a function of its label and
   its rank ``r`` (0-based, in sequence order) among the frames with the same label:

   ============  ==========================================  ==========================
   label         temporal position                           default
   ============  ==========================================  ==========================
   PRECEDING     ``r - (n_preceding - 1)``  (last one at 0)   0 for the 1-frame overlap
   TARGET        ``1 + r``                                   1, 2, ..., 8
   REFERENCE     ``reference_position + r``                  -9 (one chunk before)
   ============  ==========================================  ==========================

   So a chunk ``[PRECEDING, TARGET x 8]`` has positions ``0..8``: exactly Wan2.2-TI2V's own
   layout, where the clean conditioning frame sits at position 0 and the generated frames
   follow it. The reference frame is placed ``reference_position`` frames away from the
   overlap, a position the backbone never sees a neighbouring frame at, so attention can
   tell it apart from the continuous clip. Positions are relative to the chunk, never the
   global frame index, so they stay inside the range the backbone was trained on however
   long the rollout gets.
2. **Per-token timestep** (TI2V's ``expand_timesteps``): tokens of clean frames (PRECEDING,
   REFERENCE) get timestep 0, tokens of TARGET frames the sampler's current timestep. This is
   done by :class:`mirage_core.generator.transformer.MirageTransformer`, not here.

Nothing else depends on the label: frames are never reordered, and the order of the frames
in the sequence is the caller's.

Shapes: the tables returned are ``cos, sin`` of shape ``[1, F*hp*wp, 1, head_dim]`` in the
layout of diffusers' ``WanRotaryPosEmbed`` (real-valued, each frequency repeated twice), so
they plug into diffusers' ``WanAttnProcessor`` unchanged.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mirage_core.errors import MirageInputError

__all__ = [
    "SegmentLabel",
    "SegmentRoPE",
    "SegmentRoPEConfig",
    "rope_axis_dims",
    "segment_positions",
    "segment_rope_reference",
]


class SegmentLabel(enum.IntEnum):
    """Role of a latent frame in one forward pass."""

    TARGET = 0
    PRECEDING = 1
    REFERENCE = 2


@dataclass(frozen=True)
class SegmentRoPEConfig:
    """Where each segment sits on the temporal RoPE axis.

    Attributes:
        reference_position: temporal position of the first REFERENCE frame (default -9: one
            9-frame chunk before the overlap frame at 0).
        theta: RoPE base (Wan uses 10000).
    """

    reference_position: int = -9
    theta: float = 10000.0

    def __post_init__(self) -> None:
        if isinstance(self.reference_position, bool) or not isinstance(
            self.reference_position, int
        ):
            raise MirageInputError(
                f"reference_position must be an int, got {self.reference_position!r}"
            )
        if not (math.isfinite(self.theta) and self.theta > 1):
            raise MirageInputError(f"theta must be a finite number > 1, got {self.theta!r}")


def _as_labels(labels: Sequence[int] | torch.Tensor) -> list[SegmentLabel]:
    seq = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if not seq:
        raise MirageInputError("labels must name at least one frame")
    out = []
    for i, lab in enumerate(seq):
        try:
            out.append(SegmentLabel(int(lab)))
        except (ValueError, TypeError):
            raise MirageInputError(
                f"labels[{i}] = {lab!r} is not a SegmentLabel "
                f"({', '.join(f'{m.name}={m.value}' for m in SegmentLabel)})"
            ) from None
    return out


def segment_positions(
    labels: Sequence[int] | torch.Tensor, config: SegmentRoPEConfig | None = None
) -> torch.Tensor:
    """Temporal RoPE position of every frame, from its label (table in the module docstring).

    Args:
        labels: ``[F]`` :class:`SegmentLabel` values in sequence order.
        config: segment offsets; default :class:`SegmentRoPEConfig`.
    Returns:
        ``[F]`` int64 positions.
    """
    cfg = config or SegmentRoPEConfig()
    labs = _as_labels(labels)
    n_prec = sum(1 for lab in labs if lab == SegmentLabel.PRECEDING)
    rank = {lab: 0 for lab in SegmentLabel}
    pos = []
    for lab in labs:
        r = rank[lab]
        rank[lab] += 1
        if lab == SegmentLabel.PRECEDING:
            pos.append(r - (n_prec - 1))
        elif lab == SegmentLabel.TARGET:
            pos.append(1 + r)
        else:
            pos.append(cfg.reference_position + r)
    return torch.tensor(pos, dtype=torch.int64)


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of a head into (temporal, row, column) RoPE bands: ``(44, 42, 42)`` at 128."""
    if head_dim < 6 or head_dim % 2:
        raise MirageInputError(f"attention head_dim must be even and >= 6, got {head_dim}")
    h = w = 2 * (head_dim // 6)
    return head_dim - h - w, h, w


def _axis_angles(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """``[P, dim]`` float64 angles ``pos * theta^(-2i/dim)``, each frequency repeated twice."""
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
    ang = pos.to(torch.float64)[:, None] * inv[None, :]
    return ang.repeat_interleave(2, dim=1)


class SegmentRoPE(torch.nn.Module):
    """RoPE tables for a sequence of labelled latent frames (fast, vectorised).

    Args:
        head_dim: attention head dimension (128 for Wan2.2-TI2V-5B).
        patch_size: the DiT's ``(p_t, p_h, p_w)``; only ``p_t = 1`` is supported.
        config: :class:`SegmentRoPEConfig`.
    """

    def __init__(
        self,
        head_dim: int,
        patch_size: Sequence[int] = (1, 2, 2),
        config: SegmentRoPEConfig | None = None,
    ) -> None:
        super().__init__()
        if next(iter(patch_size)) != 1:
            raise MirageInputError(f"temporal patch size must be 1, got {tuple(patch_size)}")
        self.head_dim = int(head_dim)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.dims = rope_axis_dims(self.head_dim)
        self.config = config or SegmentRoPEConfig()

    def forward(
        self, labels: Sequence[int] | torch.Tensor, grid_hw: Sequence[int], device=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for ``F = len(labels)`` frames of ``grid_hw = (h, w)`` latent cells each.

        Returns:
            ``(cos, sin)``, each ``[1, F*hp*wp, 1, head_dim]`` float32 with
            ``hp, wp = h / p_h, w / p_w``; token order is frame-major, then row, then column
            (the order of ``patch_embedding(x).flatten(2)``).
        """
        _, p_h, p_w = self.patch_size
        h, w = (int(x) for x in grid_hw)
        if h % p_h or w % p_w:
            raise MirageInputError(f"latent grid {h}x{w} is not divisible by patch {p_h}x{p_w}")
        hp, wp = h // p_h, w // p_w
        pos_t = segment_positions(labels, self.config)
        F = pos_t.numel()
        dt, dh, dw = self.dims
        theta = self.config.theta
        a_t = _axis_angles(pos_t, dt, theta)  # [F, dt]
        a_h = _axis_angles(torch.arange(hp), dh, theta)  # [hp, dh]
        a_w = _axis_angles(torch.arange(wp), dw, theta)  # [wp, dw]
        ang = torch.cat(
            [
                a_t[:, None, None, :].expand(F, hp, wp, dt),
                a_h[None, :, None, :].expand(F, hp, wp, dh),
                a_w[None, None, :, :].expand(F, hp, wp, dw),
            ],
            dim=-1,
        ).reshape(1, F * hp * wp, 1, self.head_dim)
        cos = ang.cos().to(device=device, dtype=torch.float32)
        sin = ang.sin().to(device=device, dtype=torch.float32)
        return cos, sin


def segment_rope_reference(
    labels: Sequence[int],
    grid_hw: Sequence[int],
    head_dim: int,
    patch_size: Sequence[int] = (1, 2, 2),
    config: SegmentRoPEConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow, obvious reference for :class:`SegmentRoPE`: one token and one frequency at a time.

    Same arguments and outputs as ``SegmentRoPE(head_dim, patch_size, config)(labels,
    grid_hw)``.
    """
    cfg = config or SegmentRoPEConfig()
    labs = _as_labels(labels)
    # Positions written out again from the table, independently of segment_positions().
    n_prec = sum(1 for lab in labs if lab == SegmentLabel.PRECEDING)
    seen = {SegmentLabel.TARGET: 0, SegmentLabel.PRECEDING: 0, SegmentLabel.REFERENCE: 0}
    pos_t = []
    for lab in labs:
        r = seen[lab]
        seen[lab] += 1
        start = {
            SegmentLabel.TARGET: 1,
            SegmentLabel.PRECEDING: 1 - n_prec,
            SegmentLabel.REFERENCE: cfg.reference_position,
        }[lab]
        pos_t.append(start + r)
    hp, wp = int(grid_hw[0]) // patch_size[1], int(grid_hw[1]) // patch_size[2]
    dt, dh, dw = rope_axis_dims(head_dim)
    rows_cos, rows_sin = [], []
    for f in range(len(labs)):
        for y in range(hp):
            for x in range(wp):
                c, s = [], []
                for p, d in ((pos_t[f], dt), (y, dh), (x, dw)):
                    for i in range(d // 2):
                        a = p * cfg.theta ** (-(2.0 * i) / d)
                        c += [math.cos(a)] * 2
                        s += [math.sin(a)] * 2
                rows_cos.append(c)
                rows_sin.append(s)
    n = len(rows_cos)
    cos = torch.tensor(rows_cos, dtype=torch.float32).view(1, n, 1, head_dim)
    sin = torch.tensor(rows_sin, dtype=torch.float32).view(1, n, 1, head_dim)
    return cos, sin
