"""Per-image PSNR and SSIM for batches of images.

Layout (one, everywhere): torch ``[N, C, H, W]`` floating tensors with values in
``[0, max_val]`` (default ``max_val = 1``), ``a`` and ``b`` of the same shape. Results are
``[N]`` float64, one value per image. Computation is in float64 on the inputs' device.
:func:`uint8_to_float` turns uint8 numpy frames ``[N, H, W, C]`` (what the rollout writes and
what bags hold) into this layout.

PSNR: ``10 log10(max_val**2 / MSE)`` with the MSE over all ``C * H * W`` values of an image.
Identical images give ``+inf`` (the MSE is 0); callers that average PSNRs must decide what to
do with it (:mod:`mirage_ros.replay_report` reports such frames separately).

SSIM (Wang, Bovik, Sheikh, Simoncelli 2004): an 11 x 11 Gaussian window with sigma 1.5
(normalised to sum 1), ``K1 = 0.01``, ``K2 = 0.03``, ``L = max_val``, population (biased)
variances, i.e. the weights are used as-is. Convention: the SSIM map is evaluated only where the
window fits entirely inside the image (**'valid'**: ``(H - 10) x (W - 10)`` positions, no
padding), averaged over those positions, computed on each channel separately and averaged over
the channels. This is Wang's reference MATLAB ``ssim_index.m`` and equals scikit-image's
``structural_similarity(a, b, channel_axis=..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=max_val)`` (which filters with padding, then crops the
5-pixel border before averaging). Images must be at least 11 x 11.

:func:`ssim` is the fast path (separable convolution); :func:`ssim_reference` loops explicitly
over windows and is for tests on small images. They are tested against each other.

LPIPS is in :mod:`mirage_core.eval.lpips` (it needs local weights; docs/evaluation.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mirage_core.errors import MirageInputError, ShapeError

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "gaussian_window",
    "psnr",
    "ssim",
    "ssim_reference",
    "uint8_to_float",
]

SSIM_WINDOW = 11  # window side in pixels
SSIM_SIGMA = 1.5  # Gaussian standard deviation in pixels
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_BATCH = 8  # images per convolution call in ssim() (bounds memory for large frames)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """1-D Gaussian weights ``[size]`` float64, centred, summing to 1 (2-D window = outer)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def uint8_to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 numpy ``[N, H, W, C]`` -> torch ``[N, C, H, W]`` float64 in ``[0, 1]`` (``/ 255``)."""
    a = np.asarray(frames)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ShapeError(f"expected uint8 frames [N, H, W, C], got {a.dtype} {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(torch.float64) / 255.0


def _check_pair(a, b, max_val: float, min_hw: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``a``, ``b`` ``[N, C, H, W]`` in ``[0, max_val]``; return them as float64."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor):
            raise MirageInputError(
                f"{name} must be a torch tensor [N, C, H, W], got {type(x).__name__}; "
                "convert uint8 [N, H, W, C] arrays with uint8_to_float()"
            )
        if not x.is_floating_point():
            raise MirageInputError(
                f"{name} must be floating point in [0, max_val], got {x.dtype}; "
                "convert uint8 [N, H, W, C] arrays with uint8_to_float()"
            )
        if x.ndim != 4 or min(x.shape) < 1:
            raise ShapeError(f"{name} must have shape [N, C, H, W], got {tuple(x.shape)}")
    if a.shape != b.shape:
        raise ShapeError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    _, c, h, w = a.shape
    if c > 4 and w in (1, 3, 4):
        raise ShapeError(f"shape {tuple(a.shape)} looks like [N, H, W, C]; the layout is "
                         "[N, C, H, W] (use x.permute(0, 3, 1, 2))")
    if h < min_hw or w < min_hw:
        raise ShapeError(f"images must be at least {min_hw} x {min_hw}, got H x W = {h} x {w}")
    if not (math.isfinite(max_val) and max_val > 0):
        raise MirageInputError(f"max_val must be finite and > 0, got {max_val!r}")
    out = []
    for name, x in (("a", a), ("b", b)):
        x = x.detach().to(torch.float64)
        bad = ~torch.isfinite(x).flatten(1).all(dim=1)
        if bad.any():
            raise MirageInputError(
                f"{name} has NaN or inf values in image(s) {bad.nonzero().flatten().tolist()}"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > max_val:
            raise MirageInputError(
                f"{name} has values in [{lo:.6g}, {hi:.6g}], outside [0, max_val = {max_val}]; "
                "clamp first or pass the right max_val"
            )
        out.append(x)
    return out[0], out[1]


def psnr(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB.

    Args:
        a, b: ``[N, C, H, W]`` floating tensors in ``[0, max_val]``.
        max_val: the peak value (1 for ``[0, 1]`` images, 255 for ``[0, 255]``).
    Returns:
        ``[N]`` float64; ``+inf`` where an image pair is identical.
    Raises:
        ShapeError: shapes differ or are not ``[N, C, H, W]``.
        MirageInputError: not a float tensor, NaN/inf, values outside ``[0, max_val]``.
    """
    a, b = _check_pair(a, b, max_val)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)  # [N]
    out = 10.0 * torch.log10(max_val**2 / mse.clamp_min(torch.finfo(torch.float64).tiny))
    return torch.where(mse == 0, torch.full_like(mse, math.inf), out)


def _ssim_from_moments(mu_x, mu_y, e_xx, e_yy, e_xy, max_val: float) -> torch.Tensor:
    """SSIM map from weighted means ``E[x], E[y], E[x^2], E[y^2], E[xy]`` (same shapes)."""
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    var_x, var_y = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (conventions in the module docstring), by separable convolution.

    Args:
        a, b: ``[N, C, H, W]`` floating tensors in ``[0, max_val]``, ``H, W >= 11``.
        max_val: the dynamic range ``L``.
    Returns:
        ``[N]`` float64, the mean over channels of each channel's mean 'valid' SSIM map.
    Raises:
        as :func:`psnr`, and :class:`ShapeError` for images smaller than 11 x 11.
    """
    a, b = _check_pair(a, b, max_val, min_hw=SSIM_WINDOW)
    n, c, h, w = a.shape
    g = gaussian_window().to(a.device)
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    out = []
    for s in range(0, n, _BATCH):
        x, y = a[s:s + _BATCH], b[s:s + _BATCH]  # [n_b, C, H, W]
        z = torch.stack([x, y, x * x, y * y, x * y], dim=2)  # [n_b, C, 5, H, W]
        m = F.conv2d(F.conv2d(z.reshape(-1, 1, h, w), gx), gy)  # [n_b*C*5, 1, H-10, W-10]
        m = m.view(x.shape[0], c, 5, h - SSIM_WINDOW + 1, w - SSIM_WINDOW + 1)
        smap = _ssim_from_moments(*m.unbind(dim=2), max_val=max_val)  # [n_b, C, H', W']
        out.append(smap.flatten(2).mean(dim=2).mean(dim=1))
    return torch.cat(out)


def ssim_reference(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Slow, obvious SSIM: an explicit loop over every image, channel and window position.

    For each 11 x 11 window fully inside the image, with 2-D Gaussian weights ``w`` (sum 1):
    ``mu = sum(w x)``, ``var = sum(w (x - mu)^2)``, ``cov = sum(w (x - mu_x)(y - mu_y))``, then
    Wang et al.'s formula; mean over windows, then over channels. Same arguments and result as
    :func:`ssim`; use only on small images (tests).
    """
    a, b = _check_pair(a, b, max_val, min_hw=SSIM_WINDOW)
    n, c, h, w = a.shape
    k = SSIM_WINDOW
    g = gaussian_window().to(a.device)
    w2 = torch.outer(g, g)  # [11, 11]
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    result = torch.zeros(n, dtype=torch.float64, device=a.device)
    for i in range(n):
        per_channel = []
        for ch in range(c):
            values = []
            for r in range(h - k + 1):
                for q in range(w - k + 1):
                    px, py = a[i, ch, r:r + k, q:q + k], b[i, ch, r:r + k, q:q + k]
                    mx, my = (w2 * px).sum(), (w2 * py).sum()
                    vx, vy = (w2 * (px - mx) ** 2).sum(), (w2 * (py - my) ** 2).sum()
                    cov = (w2 * (px - mx) * (py - my)).sum()
                    values.append(((2 * mx * my + c1) * (2 * cov + c2))
                                  / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
            per_channel.append(torch.stack(values).mean())
        result[i] = torch.stack(per_channel).mean()
    return result
