"""The memory side branch: a ControlNet/VACE-style branch that feeds the readout to the DiT.

Architecture (method.md section 4; the choices marked **ours** are documented in
``docs/generator.md``):

* **Input.** The memory readout ``zhat`` ``[B, 48, F, h, w]`` goes through the *backbone's own*
  patch embedding (the paper: "reuses the same patch embedding ... 48-channel input that
  matches the VAE latent"); the visibility mask ``m`` ``[B, F, h, w]`` goes through a small
  ``Conv3d(1 -> D)`` with the same patch size (``mask_embedding``, **ours**: the mask enters as
  its own embedding added to the readout's, so "no point here" is distinguishable from a
  stored feature that happens to be zero). Clean frames (reference, preceding) get a zero
  readout and a zero mask.
* **Blocks.** One ``diffusers`` ``WanTransformerBlock`` per attached backbone layer (the VACE
  layout: 8 blocks for layers ``{0, 4, ..., 28}``), so the branch takes the same per-token
  timestep modulation (TI2V's ``expand_timesteps``), the same text tokens and the same
  segment-aware RoPE as the backbone. Block ``i`` starts as a copy of backbone block
  ``layers[i]`` (VACE practice).
* **Wiring (VACE).** ``c = proj_in(readout_tokens) + x`` where ``x`` are the backbone's patch
  tokens; then for each block ``c = block(c)`` and ``hint_i = proj_out_i(c)``. The backbone adds
  ``scale * hint_i`` to its hidden states right *after* block ``layers[i]``.
* **Zero init.** ``proj_in``, every ``proj_out`` and ``mask_embedding`` start at zero, so an
  untrained branch leaves the backbone's output unchanged (tested to float tolerance).

Precision: :meth:`MemorySideBranch.cast` (used by every loader) stores the branch in the
compute dtype except its layer norms and modulation tables (``norm1/2/3``,
``scale_shift_table``), which stay float32 exactly as diffusers keeps the backbone's copies
(``WanTransformer3DModel._keep_in_fp32_modules``, applied by :func:`cast_keep_fp32`).

The branch is saved as one safetensors file whose metadata carries its config; loading checks
that config and every tensor shape against the backbone it is attached to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mirage_core.errors import MirageInputError, WeightsNotFoundError

__all__ = ["MemorySideBranch", "SideBranchConfig", "SideBranchMismatchError", "cast_keep_fp32"]

_FORMAT = "mirage-side-branch"
_VERSION = "1"


class SideBranchMismatchError(MirageInputError):
    """A side-branch file does not fit the backbone it is being attached to."""


def cast_keep_fp32(module: nn.Module, dtype: torch.dtype, keep: Iterable[str]) -> nn.Module:
    """Cast ``module``'s floating-point parameters and buffers to ``dtype`` in place, except
    those with a name component in ``keep``, which become float32.

    The rule is diffusers' own when it loads a model with ``torch_dtype``
    (``diffusers.models.model_loading_utils``: a tensor stays float32 when any entry of the
    model's ``_keep_in_fp32_modules`` is in ``name.split(".")``), so a module cast with the
    backbone's ``_keep_in_fp32_modules`` has the dtypes ``from_pretrained`` would give it.
    Returns ``module``.
    """
    keep = tuple(keep)
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if not t.is_floating_point():
            continue
        want = torch.float32 if any(k in name.split(".") for k in keep) else dtype
        if t.dtype != want:
            t.data = t.data.to(want)
    return module


@dataclass(frozen=True)
class SideBranchConfig:
    """Shape of a :class:`MemorySideBranch`; derived from the backbone with :meth:`for_backbone`.

    Attributes:
        inner_dim: backbone hidden size (3072 for Wan2.2-TI2V-5B).
        ffn_dim: feed-forward size of each block (14336).
        num_heads: attention heads (24).
        layers: backbone blocks whose output receives a hint (``(0, 4, ..., 28)``).
        patch_size: the backbone's ``(p_t, p_h, p_w)``.
        latent_channels: readout channels (48, the VAE latent).
        qk_norm, cross_attn_norm, eps: as the backbone's blocks.
    """

    inner_dim: int
    ffn_dim: int
    num_heads: int
    layers: tuple[int, ...]
    patch_size: tuple[int, int, int] = (1, 2, 2)
    latent_channels: int = 48
    qk_norm: str = "rms_norm_across_heads"
    cross_attn_norm: bool = True
    eps: float = 1e-6

    def __post_init__(self) -> None:
        layers = tuple(int(x) for x in self.layers)
        if not layers or sorted(set(layers)) != list(layers) or layers[0] < 0:
            raise MirageInputError(
                f"side-branch layers must be distinct, increasing and >= 0, got {self.layers}"
            )
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))

    @classmethod
    def for_backbone(cls, backbone, layers: Sequence[int] | None = None) -> SideBranchConfig:
        """Config matching a ``WanTransformer3DModel``; ``layers`` default every 4th block."""
        from mirage_core.generator.configs import default_side_layers

        c = backbone.config
        n = int(c.num_layers)
        layers = tuple(layers) if layers is not None else default_side_layers(n)
        if layers and layers[-1] >= n:
            raise MirageInputError(f"side-branch layer {layers[-1]} >= backbone depth {n}")
        return cls(
            inner_dim=int(c.num_attention_heads * c.attention_head_dim),
            ffn_dim=int(c.ffn_dim),
            num_heads=int(c.num_attention_heads),
            layers=layers,
            patch_size=tuple(c.patch_size),
            latent_channels=int(c.in_channels),
            qk_norm=str(c.qk_norm),
            cross_attn_norm=bool(c.cross_attn_norm),
            eps=float(c.eps),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SideBranchConfig:
        d = json.loads(text)
        d["layers"] = tuple(d["layers"])
        d["patch_size"] = tuple(d["patch_size"])
        return cls(**d)


class MemorySideBranch(nn.Module):
    """Readout + mask -> one hint per attached backbone layer (see the module docstring)."""

    def __init__(self, config: SideBranchConfig) -> None:
        super().__init__()
        from diffusers.models.transformers.transformer_wan import (
            WanTransformer3DModel,
            WanTransformerBlock,
        )

        self.config = config
        #: tensors kept float32 by :meth:`cast`: the backbone's list (its blocks' norms and
        #: ``scale_shift_table``), so branch block ``i`` has backbone block ``layers[i]``'s dtypes.
        self._keep_in_fp32_modules = tuple(WanTransformer3DModel._keep_in_fp32_modules or ())
        D = config.inner_dim
        self.mask_embedding = nn.Conv3d(
            1, D, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.proj_in = nn.Linear(D, D)
        self.blocks = nn.ModuleList(
            WanTransformerBlock(
                D, config.ffn_dim, config.num_heads, config.qk_norm, config.cross_attn_norm,
                config.eps,
            )
            for _ in config.layers
        )
        self.proj_out = nn.ModuleList(nn.Linear(D, D) for _ in config.layers)
        #: recompute each block in the backward pass (set by ``MirageTransformer``).
        self.gradient_checkpointing = False
        self.zero_init()

    # -- initialisation ----------------------------------------------------------------------
    def zero_init(self) -> None:
        """Zero ``mask_embedding``, ``proj_in`` and every ``proj_out`` (branch becomes a no-op)."""
        with torch.no_grad():
            for m in (self.mask_embedding, self.proj_in, *self.proj_out):
                m.weight.zero_()
                m.bias.zero_()

    def init_from_backbone(self, backbone) -> None:
        """Copy backbone block ``layers[i]`` into branch block ``i`` (shapes must match)."""
        for i, layer in enumerate(self.config.layers):
            self.blocks[i].load_state_dict(backbone.blocks[layer].state_dict())

    def cast(self, dtype: torch.dtype) -> MemorySideBranch:
        """Store the branch in ``dtype`` with norms and modulation tables in float32 (in place).

        Follows the backbone: diffusers loads ``WanTransformer3DModel`` with its
        ``_keep_in_fp32_modules`` (``norm1``, ``norm2``, ``norm3``, ``scale_shift_table``, ...)
        in float32 whatever ``torch_dtype`` is, and Wan2.2's own blocks add their modulation
        table in float32 (``WanAttentionBlock.forward`` in wan/modules/model.py). Returns
        ``self``.
        """
        return cast_keep_fp32(self, dtype, self._keep_in_fp32_modules)

    def is_zero(self) -> bool:
        """True when every hint is identically zero (all ``proj_out`` weights and biases 0)."""
        return all(
            not bool(p.weight.any()) and not bool(p.bias.any()) for p in self.proj_out
        )

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        control_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_proj: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
    ) -> list[torch.Tensor]:
        """Compute the hints.

        Args:
            hidden_states: ``[B, S, D]`` backbone patch tokens of the (noisy) input.
            control_states: ``[B, S, D]`` embedded readout + mask tokens.
            encoder_hidden_states: ``[B, L, D]`` text tokens after the backbone's text embedder.
            timestep_proj: ``[B, S, 6, D]`` per-token modulation from the backbone.
            rotary_emb: ``(cos, sin)`` ``[1, S, 1, head_dim]`` segment-aware RoPE tables.
        Returns:
            ``len(layers)`` tensors ``[B, S, D]``, hint ``i`` for backbone block ``layers[i]``.
        """
        c = self.proj_in(control_states) + hidden_states
        hints = []
        for block, proj in zip(self.blocks, self.proj_out, strict=True):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                c = torch.utils.checkpoint.checkpoint(
                    block, c, encoder_hidden_states, timestep_proj, rotary_emb,
                    use_reentrant=False,
                )
            else:
                c = block(c, encoder_hidden_states, timestep_proj, rotary_emb)
            hints.append(proj(c))
        return hints

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the weights (in their stored dtypes) and config as one safetensors file."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"format": _FORMAT, "version": _VERSION, "config": self.config.to_json()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)

    @classmethod
    def load(
        cls, path: str | Path, expected: SideBranchConfig, dtype: torch.dtype | None = None
    ) -> MemorySideBranch:
        """Load a side branch saved by :meth:`save` and check it fits ``expected``.

        ``dtype``: storage dtype (:meth:`cast`: norms and modulation stay float32); ``None``
        keeps float32.

        Raises:
            WeightsNotFoundError: the file does not exist or cannot be read.
            SideBranchMismatchError: not a Mirage side-branch file, a different config
                (hidden size, heads, attached layers, patch size, ...) or tensor shapes.
        """
        from mirage_core.safetensors_io import read_safetensors, state_dict_mismatch

        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"side-branch file {str(path)!r} does not exist. Train one with `mirage train` "
                "or pass --side-branch zero to run with an untrained (no-op) branch."
            )
        tensors, meta = read_safetensors(path, SideBranchMismatchError)
        if meta.get("format") != _FORMAT:
            raise SideBranchMismatchError(
                f"{str(path)!r} is not a Mirage side-branch file (metadata format "
                f"{meta.get('format')!r}, expected {_FORMAT!r})"
            )
        try:
            found = SideBranchConfig.from_json(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise SideBranchMismatchError(f"{str(path)!r}: unreadable config metadata: {e}") from e
        if found != expected:
            diffs = [
                f"{k}: file {getattr(found, k)!r} vs backbone {getattr(expected, k)!r}"
                for k in ("inner_dim", "ffn_dim", "num_heads", "layers", "patch_size",
                          "latent_channels", "qk_norm", "cross_attn_norm", "eps")
                if getattr(found, k) != getattr(expected, k)
            ]
            raise SideBranchMismatchError(
                f"side branch {str(path)!r} does not match the backbone: " + "; ".join(diffs)
            )
        branch = cls(expected)
        diff = state_dict_mismatch(branch.state_dict(), tensors)
        if diff:
            raise SideBranchMismatchError(
                f"side branch {str(path)!r} does not match the backbone: {diff}")
        branch.load_state_dict(tensors)
        if dtype is not None:
            branch.cast(dtype)
        return branch
