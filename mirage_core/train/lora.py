"""Minimal LoRA for the backbone's self-attentions (stage 2; no ``peft`` dependency).

``y = W x + b + (alpha / r) * B(A(dropout(x)))`` with ``A: [r, in]`` Kaiming-uniform and
``B: [out, r]`` zero, so a freshly wrapped model computes exactly what it computed before
(tested). Targets: ``to_q``, ``to_k``, ``to_v`` and ``to_out.0`` of ``attn1`` (the
self-attention) of every backbone block. The frozen base weights are untouched; only ``A`` and
``B`` train. The adapters are saved on their own (:func:`lora_state_dict`), keyed by the
wrapped module's name inside the backbone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mirage_core.errors import MirageInputError
from mirage_core.safetensors_io import state_dict_mismatch

__all__ = [
    "LORA_FORMAT",
    "LoRALinear",
    "apply_lora",
    "load_lora_state_dict",
    "lora_modules",
    "lora_state_dict",
    "merge_lora",
]

#: ``format`` metadata of an adapter file written by training (``lora.safetensors``).
LORA_FORMAT = "mirage-lora"

#: Projection names inside a diffusers ``WanAttention`` that get an adapter.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the linear layer ``[out, in]`` to adapt (its parameters are frozen).
        rank: ``r``; alpha: scale numerator (scale = ``alpha / r``); dropout: on the input of A.
    Shapes: ``x [..., in] -> [..., out]``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise MirageInputError(f"LoRA wraps nn.Linear, got {type(base).__name__}")
        self.base = base.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha) / float(rank)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32,
                                               device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32,
                                               device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:  # diffusers code sometimes reads .weight.dtype
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        d = self.dropout(x).to(self.lora_A.dtype)
        upd = (d @ self.lora_A.t()) @ self.lora_B.t()
        return y + (self.scale * upd).to(y.dtype)


def _self_attentions(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for i, block in enumerate(backbone.blocks):
        attn = block.attn1
        if getattr(attn, "fused_projections", False):
            raise MirageInputError(f"blocks.{i}.attn1 has fused QKV projections; unfuse first")
        out.append((f"blocks.{i}.attn1", attn))
    return out


def apply_lora(backbone: nn.Module, rank: int = 64, alpha: float = 64.0,
               dropout: float = 0.05) -> list[str]:
    """Wrap q, k, v, o of every self-attention in ``backbone`` (in place).

    Returns the wrapped modules' names (``"blocks.3.attn1.to_q"``, ...). Idempotence is
    refused: wrapping twice raises ``MirageInputError``.
    """
    names = []
    for prefix, attn in _self_attentions(backbone):
        for t in LORA_TARGETS:
            if t == "to_out.0":
                parent, key, base = attn.to_out, 0, attn.to_out[0]
            else:
                parent, key, base = attn, t, getattr(attn, t)
            if isinstance(base, LoRALinear):
                raise MirageInputError(f"{prefix}.{t} already has a LoRA adapter")
            wrapped = LoRALinear(base, rank, alpha, dropout)
            if isinstance(key, int):
                parent[key] = wrapped
            else:
                setattr(parent, key, wrapped)
            names.append(f"{prefix}.{t}")
    return names


def lora_modules(root: nn.Module) -> dict[str, LoRALinear]:
    """``{name: LoRALinear}`` for every adapter under ``root`` (names relative to ``root``)."""
    return {n: m for n, m in root.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(root: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors only: ``{"<module>.lora_A": [r, in], "<module>.lora_B": [out, r]}``."""
    out = {}
    for n, m in lora_modules(root).items():
        out[f"{n}.lora_A"] = m.lora_A.detach()
        out[f"{n}.lora_B"] = m.lora_B.detach()
    return out


def load_lora_state_dict(root: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into the adapters under ``root``; names and shapes must match."""
    own = lora_state_dict(root)
    diff = state_dict_mismatch(own, tensors, shown=4)
    if diff:
        raise MirageInputError(f"LoRA tensors do not match the model: {diff}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(tensors[k])


def merge_lora(backbone: nn.Module, tensors: dict[str, torch.Tensor], scale: float) -> list[str]:
    """Fold trained adapters into the plain linear layers of ``backbone`` (inference).

    ``W <- W + scale * B @ A`` for every ``"<module>.lora_A" [r, in]`` / ``"<module>.lora_B"
    [out, r]`` pair, computed in float32 and cast back to ``W``'s dtype, so the merged layer
    computes what :class:`LoRALinear` computes in eval mode (tested against it), with no
    per-step cost. ``backbone`` must be unwrapped (no :class:`LoRALinear`); the adapters must
    cover exactly the modules :func:`apply_lora` targets.

    Returns the merged modules' names. Raises ``MirageInputError`` on unpaired, unknown or
    mis-shaped tensors, with nothing modified.
    """
    if lora_modules(backbone):
        raise MirageInputError("merge_lora needs a backbone without LoRA wrappers")
    expected = {f"{prefix}.{t}" for prefix, _ in _self_attentions(backbone) for t in LORA_TARGETS}
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    suffix_bad = [k for k in tensors if not k.endswith((".lora_A", ".lora_B"))]
    unpaired = [n for n in names if f"{n}.lora_A" not in tensors or f"{n}.lora_B" not in tensors]
    unknown = sorted(set(names) - expected)
    missing = sorted(expected - set(names))
    if suffix_bad or unpaired or unknown or missing:
        raise MirageInputError(
            "LoRA tensors do not fit this backbone: unexpected keys "
            f"{(suffix_bad + unknown)[:4]}, unpaired {unpaired[:4]}, missing {missing[:4]}"
        )
    layers = dict(backbone.named_modules())
    plan = []
    for n in names:
        lin, a, b = layers[n], tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"]
        r = a.shape[0]
        if a.shape != (r, lin.in_features) or b.shape != (lin.out_features, r):
            raise MirageInputError(
                f"LoRA {n}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit a linear layer "
                f"[{lin.out_features}, {lin.in_features}]"
            )
        plan.append((lin, a, b))
    with torch.no_grad():
        for lin, a, b in plan:
            w = lin.weight
            delta = float(scale) * (b.to(w.device, torch.float32) @ a.to(w.device, torch.float32))
            w.copy_((w.float() + delta).to(w.dtype))
    return names
