"""Depth and mask downsampling from pixel resolution ``H x W`` to the latent grid ``h x w``.

The paper compares bilinear, nearest, area and median downsampling and adopts bilinear (lowest
hole rate). All four are here; each treats invalid pixels (depth 0, "no measurement") the same
way: a cell is valid when at least half of the weight its mode gives to pixels falls on valid
pixels, and its depth is then the mode's estimate over the valid pixels only (normalised
convolution), so missing pixels never drag a depth towards 0. **(ours)**

Sampling positions follow the +1/2 pixel-centre rule. Cell ``(u, v)`` of stride ``s`` has its
centre at pixel coordinate ``((u + 1/2) s, (v + 1/2) s)``:

* ``bilinear``: interpolates at the cell centre, i.e. the mean of the 2x2 pixels around it
  (even ``s``); ``F.interpolate(..., align_corners=False)`` samples exactly there.
* ``nearest``: the pixel containing the cell centre, pixel ``(u s + s/2, v s + s/2)``
  (``nearest-exact``; plain ``nearest`` would take the block's top-left pixel).
* ``area``: the mean over the cell's ``s x s`` block.
* ``median``: the (lower) median of the valid pixels of the block.

Masks (dynamic objects, sky) are downsampled conservatively: a cell is masked when the fraction
of masked pixels in its block exceeds ``mask_threshold`` (default 0: any masked pixel masks
the cell), so that moving content never leaks into the memory. **(ours)**
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from mirage_core.errors import DepthError, ShapeError

DepthDownsample = Literal["bilinear", "nearest", "area", "median"]
DEPTH_DOWNSAMPLE_MODES: tuple[str, ...] = ("bilinear", "nearest", "area", "median")


def _stride(hw_in: tuple[int, int], hw_out: tuple[int, int]) -> int:
    H, W = hw_in
    h, w = hw_out
    if H % h or W % w or H // h != W // w:
        raise ShapeError(
            f"cannot downsample {H}x{W} to {h}x{w}: the image must be an integer multiple "
            f"(the same stride in both axes) of the latent grid"
        )
    return H // h


def check_depth(depth: torch.Tensor, name: str = "depth") -> torch.Tensor:
    """Reject NaN/inf/negative depth; ``0`` means "no measurement" and is allowed.

    Args:
        depth: ``[H, W]`` floating tensor.
    Raises:
        DepthError naming how many values were bad.
    """
    if not isinstance(depth, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(depth).__name__}")
    if depth.ndim != 2 or depth.numel() == 0:
        raise ShapeError(f"{name} must be a non-empty [H, W] tensor, got {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ShapeError(f"{name} must be floating point, got {depth.dtype}")
    n_nan = int(torch.isnan(depth).sum())
    n_inf = int(torch.isinf(depth).sum())
    n_neg = int((depth < 0).sum())
    if n_nan or n_inf or n_neg:
        raise DepthError(
            f"{name} has {n_nan} NaN, {n_inf} inf and {n_neg} negative values; depth must be "
            f"finite and >= 0 (use 0 for 'no measurement', or set invalid_depth='mask')"
        )
    return depth


def downsample_depth(
    depth: torch.Tensor, hw: tuple[int, int], mode: DepthDownsample = "bilinear"
) -> torch.Tensor:
    """Downsample a validated depth map to the latent grid.

    Args:
        depth: ``[H, W]`` depth (>= 0, 0 = invalid). Returned as-is if already ``hw``.
        hw: ``(h, w)`` latent grid.
        mode: one of :data:`DEPTH_DOWNSAMPLE_MODES`.
    Returns:
        ``[h, w]`` float32 depth, 0 where the cell has too few valid pixels.
    """
    if mode not in DEPTH_DOWNSAMPLE_MODES:
        raise ValueError(
            f"depth downsample mode must be one of {DEPTH_DOWNSAMPLE_MODES}, got {mode!r}"
        )
    h, w = hw
    d = depth.to(torch.float32)
    if tuple(d.shape) == (h, w):
        return d
    s = _stride(tuple(d.shape), (h, w))
    valid = (d > 0).to(torch.float32)
    if mode == "median":
        blocks = F.unfold(d[None, None], kernel_size=s, stride=s)[0]  # [s*s, h*w]
        vblocks = blocks > 0
        nvalid = vblocks.sum(0)
        # Invalid pixels sort last (inf); take the lower median of the valid ones.
        srt = torch.where(vblocks, blocks, torch.inf).sort(dim=0).values
        k = ((nvalid - 1).clamp(min=0) // 2)[None]
        med = srt.gather(0, k)[0]
        out = torch.where(nvalid * 2 >= s * s, med, 0.0)
        return out.view(h, w)
    if mode == "nearest":
        return F.interpolate(d[None, None], size=(h, w), mode="nearest-exact")[0, 0]
    kw = {"mode": "bilinear", "align_corners": False} if mode == "bilinear" else {"mode": "area"}
    num = F.interpolate((d * valid)[None, None], size=(h, w), **kw)[0, 0]
    den = F.interpolate(valid[None, None], size=(h, w), **kw)[0, 0]
    return torch.where(den >= 0.5, num / den.clamp(min=1e-12), 0.0)


def downsample_mask(
    mask: torch.Tensor, hw: tuple[int, int], threshold: float = 0.0
) -> torch.Tensor:
    """``[H, W]`` bool mask -> ``[h, w]`` bool: a cell is masked when more than ``threshold`` of
    its block's pixels are masked (``threshold=0``: any pixel)."""
    if mask.ndim != 2 or mask.numel() == 0:
        raise ShapeError(f"mask must be a non-empty [H, W] tensor, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ShapeError(f"mask must be bool (True = dynamic object or sky), got {mask.dtype}")
    h, w = hw
    if tuple(mask.shape) == (h, w):
        return mask
    _stride(tuple(mask.shape), (h, w))
    frac = F.adaptive_avg_pool2d(mask.to(torch.float32)[None, None], (h, w))[0, 0]
    return frac > threshold
