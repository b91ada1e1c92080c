"""Reading a whole safetensors file (tensors + metadata) with one error type for any failure."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["read_safetensors", "state_dict_mismatch"]


def read_safetensors(
    path: str | Path, error: type[Exception]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of ``path``.

    Any parse failure (truncated, garbled, not safetensors) raises ``error`` with the message
    ``"<path>: not a readable safetensors file (<type>: <reason>)"``; safetensors itself raises
    several unrelated exception types for those.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise error(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e})"
        ) from None
    return tensors, meta


def state_dict_mismatch(own: dict, tensors: dict, shown: int = 5) -> str | None:
    """``None`` when ``tensors`` has exactly ``own``'s names and shapes, else
    ``"missing [...], unexpected [...], wrong shape [...]"`` (the first ``shown`` of each)."""
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
    if not (missing or extra or bad):
        return None
    return (f"missing {missing[:shown]}, unexpected {extra[:shown]}, "
            f"wrong shape {bad[:shown]}")
