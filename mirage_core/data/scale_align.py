"""Align a depth network's scale to a dataset's own cameras by multi-view consistency.

Problem: a clip's camera translations come from the dataset (RealEstate10K: SLAM poses of an
unknown, per-sequence scale), its depth from a network (metric, or relative but consistent
across the clip's frames). Mirage back-projects depth with those poses (method.md Eq. 4), so
both must share one unit. We estimate one scalar ``s`` per clip such that ``s * depth`` is in
the unit of the translations. **(ours)**

Model. For a pair of frames ``(a, b)`` with ``T_b_a = T_cam_world[b] @ T_world_cam[a]``
(rotation ``R``, translation ``t``; OpenCV cameras, pixel centres at ``+1/2``), pixel ``x`` of
frame ``a`` with network depth ``d_a(x)`` lands in frame ``b`` at

    pi( R (s d_a(x) K^{-1} [x + 1/2, 1]) + t ) = pi( R d_a(x) K^{-1} [x + 1/2, 1] + u t ),
    u = 1 / s,

because ``pi`` (pinhole projection) ignores a common factor ``s > 0``. So the warp is linear
in the *inverse* scale ``u`` inside ``pi``: ``u = 0`` is the rotation-only warp (``s = inf``,
everything at infinity), and the parallax a candidate produces grows ~linearly with ``u``.

Cost of a candidate ``u`` (over all pairs): the mean over valid pixels of the truncated L1
photometric residual ``min(mean_c |I_a(x) - I_b(x')|, photo_cap)`` with ``I_b`` sampled
bilinearly at the landing point ``x'``, plus optionally ``geo_weight * min(|log z_b(x) -
log d_b(x')|, geo_cap)`` (the landing depth against frame b's own depth at ``x'``, nearest
sample; scale-free because both sides carry ``s``). A pixel is valid when its depth is
positive, it is not masked (sky/dynamic) in ``a``, its landing point has ``z > 0``, lies
inside frame b's pixel centres (``1/2 <= x' <= W - 1/2``, so all four bilinear neighbours
exist) and is not masked in ``b``. Candidates under which fewer than ``min_overlap`` of the
source pixels stay valid cost ``inf``.

Search. The work happens at a small working resolution (longest side ``max_side``; images
area-averaged, depth nearest-exact, masks "any masked pixel"). Candidates are ``u = 0`` and a
log-spaced grid (step ``grid_step`` in ``ln u``) that moves the median pixel of the pair with
the largest parallax rate from ``1/4`` pixel to ``max_parallax_px`` pixels; the grid minimum is
refined by golden-section search in ``ln u`` between its neighbours. Spacing the grid by the
parallax it produces (rather than by an a-priori depth/baseline guess) makes the search range
independent of the dataset's unit: the photometric basin has a width set in pixels.

Diagnostics and failure policy (:class:`ScaleFit`):

* ``baseline``: the largest pair translation ``|t|`` (dataset units). Zero -> ``status
  "zero_baseline"`` (pure rotation: the scale is unobservable).
* ``parallax_px``: median pixel displacement that the chosen scale's translation adds to the
  rotation-only warp, for the pair with the largest parallax (working-resolution pixels). Below
  ``min_parallax_px`` -> ``"low_parallax"`` (depth too large relative to the baseline).
* ``contrast = 1 - cost_min / cost_at_infinity``: how much better the best scale explains the
  images than "everything at infinity". Below ``min_contrast``, or a cost curve whose whole
  spread is below ``min_contrast`` of its maximum (textureless images) -> ``"flat"``. The
  rotation-only warp winning outright -> ``"low_parallax"``.
* ``sharpness``: mean cost at the grid points ``sharp_steps`` steps either side of the grid
  minimum over the minimum, minus one (reported, not thresholded).
* the minimum at the largest candidate -> ``"at_boundary"`` (the truth may lie beyond).

On any status other than ``"ok"``: ``on_failure="raise"`` raises
:class:`ScaleAlignmentError` naming the reason; ``"keep"`` returns ``scale = 1.0`` (depth as the
provider returned it), issues a :class:`ScaleAlignmentWarning` and keeps the status in the fit.

Assumption: the provider's depth has one scale for the whole clip (metric, or a multi-view
consistent relative model). Per-frame scale drift is not modelled.

:func:`consistency_cost` is the vectorised cost; :func:`consistency_cost_reference` the same
cost with explicit loops over pixels (slow, obvious; tests compare them).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.geometry import camera_rays, check_intrinsics, check_se3, se3_inverse

__all__ = [
    "FAILURE_POLICIES",
    "ScaleAlignConfig",
    "ScaleAlignmentError",
    "ScaleAlignmentWarning",
    "ScaleFit",
    "consistency_cost",
    "consistency_cost_reference",
    "default_pairs",
    "estimate_depth_scale",
    "to_working_resolution",
]

FAILURE_POLICIES: tuple[str, ...] = ("raise", "keep")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_ZERO_BASELINE = 1e-9  # pair translations at or below this (dataset units) count as zero
_COST_FLOOR = 1e-4  # costs below this are float noise (8-bit images quantise at 4e-3)


class ScaleAlignmentError(MirageInputError):
    """The depth scale is unobservable or ambiguous for this clip (the message says why)."""


class ScaleAlignmentWarning(UserWarning):
    """Alignment failed and ``on_failure="keep"`` kept the provider's scale (``s = 1``)."""


@dataclass
class ScaleAlignConfig:
    """Options of :func:`estimate_depth_scale` (module docstring for the method)."""

    max_side: int = 128  # working resolution: longest image side in pixels
    grid_step: float = 0.02  # spacing of candidate inverse scales in ln u (~2 % in s)
    max_parallax_px: float | None = None  # top of the search (working px); None = 0.75*max_side
    refine_iters: int = 30  # golden-section iterations between the grid minimum's neighbours
    photo_cap: float = 0.3  # truncation of the per-pixel photometric residual (RGB in [0, 1])
    geo_weight: float = 0.0  # weight of the depth-consistency term (0 = photometric only)
    geo_cap: float = 0.5  # truncation of |log z_b - log d_b|
    min_overlap: float = 0.2  # fewest valid pixels, as a fraction of the valid source pixels
    min_parallax_px: float = 1.0  # below: "low_parallax" (scale unobservable)
    min_contrast: float = 0.02  # below: "flat" (cost curve does not single out a scale)
    sharp_steps: int = 5  # grid steps either side of the minimum for ``sharpness``
    on_failure: str = "raise"  # "raise" (ScaleAlignmentError) or "keep" (s = 1, warning)

    def __post_init__(self) -> None:
        if self.max_side < 8:
            raise MirageInputError(f"max_side must be >= 8, got {self.max_side}")
        for name in ("grid_step", "photo_cap", "geo_cap"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise MirageInputError(f"{name} must be finite and > 0, got {v!r}")
        if self.max_parallax_px is not None and not self.max_parallax_px > 1.0:
            raise MirageInputError(f"max_parallax_px must be > 1, got {self.max_parallax_px!r}")
        if not (0.0 < self.min_overlap <= 1.0):
            raise MirageInputError(f"min_overlap must be in (0, 1], got {self.min_overlap!r}")
        if self.geo_weight < 0 or self.min_parallax_px < 0 or self.min_contrast < 0:
            raise MirageInputError("geo_weight, min_parallax_px and min_contrast must be >= 0")
        if self.refine_iters < 0 or self.sharp_steps < 1:
            raise MirageInputError("refine_iters must be >= 0 and sharp_steps >= 1")
        if self.on_failure not in FAILURE_POLICIES:
            raise MirageInputError(
                f"on_failure must be one of {FAILURE_POLICIES}, got {self.on_failure!r}"
            )


@dataclass
class ScaleFit:
    """Result of :func:`estimate_depth_scale`.

    Attributes:
        scale: the factor to multiply depth by (``1.0`` when ``status != "ok"`` and the policy
            kept the provider's scale).
        status: ``"ok"``, ``"zero_baseline"``, ``"low_parallax"``, ``"flat"``, ``"at_boundary"``.
        estimate: the best scale found (``inf``: rotation-only warp won; ``nan``: not searched).
        cost_min, cost_at_infinity: cost at ``estimate`` and at ``u = 0``.
        contrast: ``1 - cost_min / cost_at_infinity``.
        sharpness: mean cost ``sharp_steps`` grid steps either side of the grid minimum over
            the minimum, minus 1.
        parallax_px: median parallax of the widest pair at ``estimate`` (working pixels).
        baseline: largest pair translation (dataset units).
        median_depth: median valid depth of the first frame (provider units, before scaling).
        scale_range: ``(smallest, largest)`` finite scale searched.
        n_pairs: pairs used. working_hw: working resolution. message: why, when not ok.
    """

    scale: float
    status: str
    estimate: float
    cost_min: float
    cost_at_infinity: float
    contrast: float
    sharpness: float
    parallax_px: float
    baseline: float
    median_depth: float
    scale_range: tuple[float, float]
    n_pairs: int
    working_hw: tuple[int, int]
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """JSON-ready dict (non-finite floats as strings ``"inf"``/``"nan"``)."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            return v

        return {k: clean(v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- inputs


def _check_inputs(frames, depth, K, T_world_cam, mask):
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        raise ShapeError(f"frames must be a [N, 3, H, W] tensor, got "
                         f"{tuple(getattr(frames, 'shape', ()))}")
    if not frames.is_floating_point() or not torch.isfinite(frames).all():
        raise MirageInputError("frames must be finite floating RGB in [0, 1]")
    n, _, H, W = frames.shape
    if n < 2:
        raise ShapeError(f"depth scale alignment needs >= 2 frames, got {n}")
    if not isinstance(depth, torch.Tensor) or tuple(depth.shape) != (n, H, W):
        raise ShapeError(f"depth must be [N={n}, H={H}, W={W}], got "
                         f"{tuple(getattr(depth, 'shape', ()))}")
    if not torch.isfinite(depth).all() or (depth < 0).any():
        raise MirageInputError("depth must be finite and >= 0 (0 = unknown)")
    K = check_intrinsics(K)
    if tuple(K.shape) != (3, 3):
        raise ShapeError(f"K must be one [3, 3] matrix, got {tuple(K.shape)}")
    T = check_se3(T_world_cam, "T_world_cam")
    if tuple(T.shape) != (n, 4, 4):
        raise ShapeError(f"T_world_cam must be [N={n}, 4, 4], got {tuple(T.shape)}")
    if mask is None:
        mask = torch.zeros((n, H, W), dtype=torch.bool)
    elif not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (n, H, W):
        raise ShapeError(f"mask must be [N={n}, H={H}, W={W}] bool, got "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    return frames.to(torch.float32), depth.to(torch.float32), K, T, mask.to(torch.bool)


def _check_pairs(pairs, n: int) -> list[tuple[int, int]]:
    out = []
    for p in pairs:
        a, b = (int(v) for v in p)
        if not (0 <= a < n and 0 <= b < n) or a == b:
            raise MirageInputError(f"pair {tuple(p)} must be two different frames in [0, {n})")
        out.append((a, b))
    if not out:
        raise MirageInputError("no frame pairs")
    return out


def default_pairs(n: int) -> list[tuple[int, int]]:
    """``(0, k)`` for every later frame (growing baselines) and consecutive ``(k, k + 1)``."""
    pairs = [(0, k) for k in range(1, n)]
    pairs += [(k, k + 1) for k in range(1, n - 1)]
    return pairs


def to_working_resolution(frames, depth, K, mask, max_side: int):
    """Downsample to longest side ``max_side`` (never up): images by area, depth
    nearest-exact (no mixing across edges), masks by "any masked pixel"; ``K`` scaled by the
    actual size ratios (exact under the +1/2 pixel-centre rule). Returns the four."""
    H, W = frames.shape[-2:]
    r = min(1.0, max_side / max(H, W))
    h, w = max(2, round(H * r)), max(2, round(W * r))
    if (h, w) == (H, W):
        return frames, depth, K, mask
    frames = F.adaptive_avg_pool2d(frames, (h, w))
    depth = F.interpolate(depth[:, None], size=(h, w), mode="nearest-exact")[:, 0]
    mask = F.adaptive_max_pool2d(mask[:, None].float(), (h, w))[:, 0] > 0
    S = torch.diag(torch.tensor([w / W, h / H, 1.0], dtype=torch.float64))
    return frames, depth, S @ K, mask


# --------------------------------------------------------------------------- fast cost


@dataclass
class _Pair:
    a: int
    b: int
    P: torch.Tensor  # [M, 3] rotated rays * depth of valid source pixels, in camera b (float64)
    t: torch.Tensor  # [3] translation of T_b_a
    colour: torch.Tensor  # [M, 3] source colours (float32)


def _prepare_pairs(frames, depth, K, T, mask, pairs) -> tuple[list[_Pair], int]:
    h, w = frames.shape[-2:]
    rays = camera_rays(K, h, w, dtype=torch.float64).reshape(-1, 3)  # [h*w, 3], z = 1
    T_cam_world = se3_inverse(T)
    out = []
    n_src = 0
    for a, b in pairs:
        d = depth[a].reshape(-1).to(torch.float64)
        valid = (d > 0) & ~mask[a].reshape(-1)
        T_b_a = T_cam_world[b] @ T[a]
        P = (rays[valid] * d[valid, None]) @ T_b_a[:3, :3].T
        col = frames[a].reshape(3, -1).T[valid]
        out.append(_Pair(a, b, P, T_b_a[:3, 3].clone(), col))
        n_src += int(valid.sum())
    return out, n_src


def _bilinear(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample ``img [C, h, w]`` bilinearly at continuous ``(x, y)`` ``[B, M]`` (pixel centres at
    +1/2; ``grid_sample(align_corners=False)`` uses the same rule); returns ``[B, M, C]``."""
    h, w = img.shape[-2:]
    grid = torch.stack([2.0 * x / w - 1.0, 2.0 * y / h - 1.0], dim=-1)  # [B, M, 2]
    out = F.grid_sample(img[None], grid[None], mode="bilinear", padding_mode="border",
                        align_corners=False)  # [1, C, B, M]
    return out[0].permute(1, 2, 0)


def _pair_sums(pr: _Pair, u: torch.Tensor, frames, depth, mask, K, cfg):
    """Residual sums and valid counts of one pair for inverse scales ``u [B]`` (float32
    per-pixel arithmetic; poses were composed in float64)."""
    _, _, h, w = frames.shape
    P, t = pr.P.to(torch.float32), pr.t.to(torch.float32)
    X = P[None] + u.to(torch.float32)[:, None, None] * t  # [B, M, 3] camera b (up to s)
    z = X[..., 2]
    pos = z > 1e-12
    zs = torch.where(pos, z, torch.ones_like(z))
    q = X @ K.to(torch.float32).T
    x, y = q[..., 0] / zs, q[..., 1] / zs
    ok = pos & (x >= 0.5) & (x <= w - 0.5) & (y >= 0.5) & (y <= h - 0.5)
    x = torch.where(ok, x, torch.ones_like(x))
    y = torch.where(ok, y, torch.ones_like(y))
    cell = y.floor().long().clamp(0, h - 1) * w + x.floor().long().clamp(0, w - 1)
    ok &= ~mask[pr.b].reshape(-1)[cell]
    col_b = _bilinear(frames[pr.b], x, y)  # [B, M, 3]
    r = (col_b - pr.colour).abs().mean(-1).clamp(max=cfg.photo_cap)
    if cfg.geo_weight > 0:
        d_b = depth[pr.b].reshape(-1)[cell]
        ok &= d_b > 0
        g = (torch.log(zs) - torch.log(d_b.clamp(min=1e-12))).abs().clamp(max=cfg.geo_cap)
        r = r + cfg.geo_weight * g
    r = torch.where(ok, r, torch.zeros_like(r))
    return r.to(torch.float64).sum(-1), ok.sum(-1)


def _costs(prs, n_src, u, frames, depth, mask, K, cfg, chunk: int = 16) -> torch.Tensor:
    Kd = K.to(torch.float64)
    out = []
    for i in range(0, len(u), chunk):
        uu = u[i: i + chunk]
        tot = torch.zeros(len(uu), dtype=torch.float64)
        cnt = torch.zeros(len(uu), dtype=torch.int64)
        for pr in prs:
            s, c = _pair_sums(pr, uu, frames, depth, mask, Kd, cfg)
            tot += s
            cnt += c
        cost = tot / cnt.clamp(min=1)
        out.append(torch.where(cnt >= cfg.min_overlap * n_src, cost,
                               torch.full_like(cost, math.inf)))
    return torch.cat(out)


def consistency_cost(frames, depth, K, T_world_cam, inv_scales, pairs=None, mask=None,
                     cfg: ScaleAlignConfig | None = None) -> torch.Tensor:
    """Multi-view consistency cost of candidate inverse scales (vectorised).

    Args:
        frames: ``[N, 3, H, W]`` RGB in ``[0, 1]`` (used at this resolution, no resizing).
        depth: ``[N, H, W]`` provider depth (``0`` = unknown).
        K: ``[3, 3]`` pixel intrinsics. T_world_cam: ``[N, 4, 4]`` dataset poses.
        inv_scales: ``[B]`` candidate ``u = 1 / s`` (``u = 0``: rotation-only warp).
        pairs: ``(a, b)`` frame pairs (default :func:`default_pairs`).
        mask: optional ``[N, H, W]`` bool, pixels to ignore (sky, dynamic).
        cfg: :class:`ScaleAlignConfig` (``photo_cap``, ``geo_weight``, ``geo_cap``,
            ``min_overlap`` are used).
    Returns:
        ``[B]`` float64 costs (``inf`` where overlap is below ``min_overlap``).
    """
    cfg = cfg or ScaleAlignConfig()
    frames, depth, K, T, mask = _check_inputs(frames, depth, K, T_world_cam, mask)
    pairs = _check_pairs(default_pairs(len(frames)) if pairs is None else pairs, len(frames))
    u = torch.as_tensor(inv_scales, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(u).all() or (u < 0).any():
        raise MirageInputError("inv_scales must be finite and >= 0")
    prs, n_src = _prepare_pairs(frames, depth, K, T, mask, pairs)
    if n_src == 0:
        raise MirageInputError("no valid source pixels (all depth 0 or masked)")
    return _costs(prs, n_src, u, frames, depth, mask, K, cfg)


# --------------------------------------------------------------------------- reference


def consistency_cost_reference(frames, depth, K, T_world_cam, inv_scale: float, pairs=None,
                               mask=None, cfg: ScaleAlignConfig | None = None) -> float:
    """:func:`consistency_cost` for one ``u``, with explicit loops over pixels (numpy floats).

    Slow and obvious, for tiny images in tests. Same validity rules and residuals.
    """
    cfg = cfg or ScaleAlignConfig()
    frames, depth, K, T, mask = _check_inputs(frames, depth, K, T_world_cam, mask)
    n, _, h, w = frames.shape
    pairs = _check_pairs(default_pairs(n) if pairs is None else pairs, n)
    img = frames.double().numpy()
    dep = depth.double().numpy()
    msk = mask.numpy()
    Kn = K.numpy()
    Kinv = np.linalg.inv(Kn)
    Tn = T.numpy()
    total, count, n_src = 0.0, 0, 0

    def sample(c_img, x, y):  # bilinear, pixel centres at +1/2
        xs, ys = x - 0.5, y - 0.5
        x0 = min(max(math.floor(xs), 0), w - 2)
        y0 = min(max(math.floor(ys), 0), h - 2)
        fx, fy = xs - x0, ys - y0
        return ((1 - fy) * ((1 - fx) * c_img[y0, x0] + fx * c_img[y0, x0 + 1])
                + fy * ((1 - fx) * c_img[y0 + 1, x0] + fx * c_img[y0 + 1, x0 + 1]))

    for a, b in pairs:
        T_b_a = np.linalg.inv(Tn[b]) @ Tn[a]
        R, t = T_b_a[:3, :3], T_b_a[:3, 3]
        for v in range(h):
            for u in range(w):
                d = dep[a, v, u]
                if d <= 0 or msk[a, v, u]:
                    continue
                n_src += 1
                ray = Kinv @ np.array([u + 0.5, v + 0.5, 1.0])
                X = R @ (d * ray) + inv_scale * t
                if X[2] <= 1e-12:
                    continue
                q = Kn @ X
                x, y = q[0] / X[2], q[1] / X[2]
                if not (0.5 <= x <= w - 0.5 and 0.5 <= y <= h - 0.5):
                    continue
                xi, yi = min(math.floor(x), w - 1), min(math.floor(y), h - 1)
                if msk[b, yi, xi]:
                    continue
                if cfg.geo_weight > 0 and dep[b, yi, xi] <= 0:
                    continue
                diff = [abs(sample(img[b, c], x, y) - img[a, c, v, u]) for c in range(3)]
                r = min(sum(diff) / 3.0, cfg.photo_cap)
                if cfg.geo_weight > 0:
                    g = min(abs(math.log(X[2]) - math.log(dep[b, yi, xi])), cfg.geo_cap)
                    r += cfg.geo_weight * g
                total += r
                count += 1
    if n_src == 0:
        raise MirageInputError("no valid source pixels (all depth 0 or masked)")
    if count < cfg.min_overlap * n_src:
        return math.inf
    return total / max(count, 1)


# --------------------------------------------------------------------------- search


def _parallax_rate(pr: _Pair, K: torch.Tensor) -> float:
    """Median ``|d x' / d u|`` at ``u = 0`` (pixels per unit inverse scale)."""
    P = pr.P[pr.P[:, 2] > 1e-12]
    if len(P) == 0:
        return 0.0
    Kd = K.to(torch.float64)
    z = P[:, 2:3]
    Kt = Kd @ pr.t
    KP = P @ Kd.T
    dxy = Kt[:2] / z - KP[:, :2] * pr.t[2] / z**2
    return float(dxy.norm(dim=1).median())


def _parallax(pr: _Pair, u: float, K: torch.Tensor) -> float:
    """Median displacement (pixels) between the warp at ``u`` and the rotation-only warp."""
    Kd = K.to(torch.float64)
    X = pr.P + u * pr.t
    ok = (pr.P[:, 2] > 1e-12) & (X[:, 2] > 1e-12)
    if not ok.any():
        return math.inf
    p0 = (pr.P[ok] @ Kd.T)
    p1 = (X[ok] @ Kd.T)
    d = p1[:, :2] / p1[:, 2:] - p0[:, :2] / p0[:, 2:]
    return float(d.norm(dim=1).median())


def estimate_depth_scale(
    frames: torch.Tensor,
    depth: torch.Tensor,
    K: torch.Tensor,
    T_world_cam: torch.Tensor,
    mask: torch.Tensor | None = None,
    cfg: ScaleAlignConfig | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> ScaleFit:
    """One scale ``s`` per clip such that ``s * depth`` is in the unit of the translations.

    Args:
        frames: ``[N, 3, H, W]`` float RGB in ``[0, 1]`` (N >= 2).
        depth: ``[N, H, W]`` provider depth of those frames (``0`` = unknown).
        K: ``[3, 3]`` pixel intrinsics of ``H x W``.
        T_world_cam: ``[N, 4, 4]`` the dataset's camera-to-world poses (OpenCV).
        mask: optional ``[N, H, W]`` bool, True on sky/dynamic pixels (ignored).
        cfg: :class:`ScaleAlignConfig`.
        pairs: frame pairs ``(a, b)`` (default :func:`default_pairs`).
    Returns:
        :class:`ScaleFit`.
    Raises:
        ShapeError / MirageInputError: bad inputs. ScaleAlignmentError: ``status != "ok"``
        and ``cfg.on_failure == "raise"``.
    """
    cfg = cfg or ScaleAlignConfig()
    frames, depth, K, T, mask = _check_inputs(frames, depth, K, T_world_cam, mask)
    pairs = _check_pairs(default_pairs(len(frames)) if pairs is None else pairs, len(frames))
    frames, depth, K, mask = to_working_resolution(frames, depth, K, mask, cfg.max_side)
    h, w = frames.shape[-2:]
    valid0 = (depth[0] > 0) & ~mask[0]
    med_depth = float(depth[0][valid0].median()) if valid0.any() else math.nan
    prs, n_src = _prepare_pairs(frames, depth, K, T, mask, pairs)
    if n_src == 0:
        raise MirageInputError("no valid source pixels (all depth 0 or masked)")
    baselines = [float(pr.t.norm()) for pr in prs]
    baseline = max(baselines)
    prs = [pr for pr, bl in zip(prs, baselines, strict=True) if bl > _ZERO_BASELINE]
    n_src = sum(len(pr.P) for pr in prs)

    def fit(status, message, **kw) -> ScaleFit:
        d = dict(estimate=math.nan, cost_min=math.nan, cost_at_infinity=math.nan,
                 contrast=math.nan, sharpness=math.nan, parallax_px=math.nan,
                 scale_range=(math.nan, math.nan))
        d.update(kw)
        scale = d["estimate"] if status == "ok" else 1.0
        if status != "ok":
            text = f"depth scale unobservable ({status}): {message}"
            if cfg.on_failure == "raise":
                raise ScaleAlignmentError(text)
            warnings.warn(f"{text}; keeping the provider's scale (s = 1)",
                          ScaleAlignmentWarning, stacklevel=3)
        return ScaleFit(scale=float(scale), status=status, baseline=baseline,
                        median_depth=med_depth, n_pairs=len(prs), working_hw=(h, w),
                        message=message, **d)

    if not prs:
        return fit("zero_baseline", f"all {len(pairs)} frame pairs have zero translation "
                   "(pure rotation)")
    rates = [_parallax_rate(pr, K) for pr in prs]
    i_wide = int(np.argmax(rates))
    rate = rates[i_wide]
    if not rate > 0:
        return fit("zero_baseline", "the translations move no pixel")
    max_px = cfg.max_parallax_px or 0.75 * max(h, w)
    ln_lo, ln_hi = math.log(0.25 / rate), math.log(max_px / rate)
    n_grid = math.ceil((ln_hi - ln_lo) / cfg.grid_step) + 1
    ln_u = torch.linspace(ln_lo, ln_hi, n_grid, dtype=torch.float64)
    u = torch.cat([torch.zeros(1, dtype=torch.float64), ln_u.exp()])
    costs = _costs(prs, n_src, u, frames, depth, mask, K, cfg)
    c_inf = float(costs[0])
    k = int(torch.argmin(costs))
    srange = (float(1.0 / u[-1]), float(1.0 / u[1]))
    if not math.isfinite(float(costs[k])):
        return fit("flat", "no candidate keeps enough overlap", scale_range=srange)
    lo_k, hi_k = max(k - cfg.sharp_steps, 1), min(k + cfg.sharp_steps, len(u) - 1)
    neigh = costs[[lo_k, hi_k]]
    neigh = neigh[torch.isfinite(neigh)]
    sharp = float(neigh.mean() / costs[k] - 1.0) if len(neigh) and costs[k] > 0 else math.nan
    finite = costs[torch.isfinite(costs)]
    spread = float(finite.max() - finite.min())
    if not spread > cfg.min_contrast * max(float(finite.max()), _COST_FLOOR):
        return fit("flat", f"the cost varies by {spread:.3g} over all {len(finite)} candidates "
                   "(textureless, or the frames do not overlap)", cost_min=float(costs[k]),
                   cost_at_infinity=c_inf, contrast=0.0, sharpness=sharp, scale_range=srange)
    if k == 0:
        return fit("low_parallax", "the rotation-only warp (s = inf) explains the frames best",
                   estimate=math.inf, cost_min=c_inf, cost_at_infinity=c_inf, contrast=0.0,
                   sharpness=sharp, parallax_px=0.0, scale_range=srange)

    # golden-section refinement in ln u between the grid minimum's neighbours
    a_, b_ = float(ln_u[k - 1]) - cfg.grid_step, float(ln_u[k - 1]) + cfg.grid_step

    def c_at(lnu: float) -> float:
        return float(_costs(prs, n_src, torch.tensor([math.exp(lnu)], dtype=torch.float64),
                            frames, depth, mask, K, cfg)[0])

    best_ln, best_c = float(ln_u[k - 1]), float(costs[k])
    x1, x2 = b_ - _GOLDEN * (b_ - a_), a_ + _GOLDEN * (b_ - a_)
    f1, f2 = c_at(x1), c_at(x2)
    for _ in range(cfg.refine_iters):
        if f1 <= f2:
            b_, x2, f2 = x2, x1, f1
            x1 = b_ - _GOLDEN * (b_ - a_)
            f1 = c_at(x1)
        else:
            a_, x1, f1 = x1, x2, f2
            x2 = a_ + _GOLDEN * (b_ - a_)
            f2 = c_at(x2)
    for x_, f_ in ((x1, f1), (x2, f2)):
        if f_ < best_c:
            best_ln, best_c = x_, f_
    u_best = math.exp(best_ln)
    s_best = 1.0 / u_best
    contrast = 1.0 - best_c / c_inf if c_inf > 0 and math.isfinite(c_inf) else math.nan
    par = _parallax(prs[i_wide], u_best, K)
    kw = dict(estimate=s_best, cost_min=best_c, cost_at_infinity=c_inf, contrast=contrast,
              sharpness=sharp, parallax_px=par, scale_range=srange)
    if k == len(u) - 1:
        return fit("at_boundary", f"the best scale {s_best:.4g} is the smallest searched "
                   f"({max_px:.0f} px parallax); the truth may be smaller", **kw)
    if par < cfg.min_parallax_px:
        return fit("low_parallax", f"median parallax at the best scale is {par:.2f} px "
                   f"< {cfg.min_parallax_px} px (baseline {baseline:.3g} too small for the "
                   "depth)", **kw)
    if not contrast >= cfg.min_contrast:
        return fit("flat", f"cost contrast {contrast:.4f} < {cfg.min_contrast} (the images do "
                   "not single out a scale: textureless or inconsistent)", **kw)
    return fit("ok", "", **kw)
