"""Reading a whole safetensors file (tensors + metadata) with one error type for any failure."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["read_safetensors"]


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
