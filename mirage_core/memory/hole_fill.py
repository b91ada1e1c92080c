"""Readout hole fill: an opt-in post-process of the latent readout (ours, not the paper's).

The paper's readout (method.md section 2, Eq. 5) keeps one memory point per latent cell and
projects it to one cell of the target view. When the camera comes closer, or sees a surface
more obliquely, than when the memory was written, those points spread out and leave
uncovered cells between them ("splatting holes"): on held-out rooms with ground-truth
memories the latent readout covers 82 % of the cells where the RGB point cache, which splats
every pixel, covers 91 % (docs/model_card.md, ``scripts/readout_grid.py``).

One pass fills every uncovered cell that has at least one covered 4-neighbour (up, down,
left, right) with the mean latent and the mean depth of those neighbours, and marks it
visible. ``passes`` repeats this, each pass filling from the cells covered so far, so a hole
up to ``2 * passes`` cells wide closes. Cells with no covered neighbour stay empty (zero
latent, zero depth, not visible), so content spreads at most ``passes`` cells from what the
memory holds (many passes fill the whole view from one covered cell: the shipped model uses 1).

:func:`fill_holes` is the fast path (shifted-slice sums per pass: exact on every device, where
a cuDNN convolution may round in TF32); :func:`fill_holes_reference` is the slow per-cell loop
it is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirage_core.errors import ShapeError


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """``[..., h, w]`` -> the sum of each cell's 4-neighbours (zero outside the grid)."""
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def is_pass_count(value: object) -> bool:
    """Whether ``value`` is a valid number of fill passes: an ``int`` >= 0, not a ``bool``
    (the one check behind every ``hole_fill`` / ``readout_hole_fill`` setting)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check(zhat: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, passes: int) -> None:
    if zhat.ndim != 4 or mask.shape != (zhat.shape[0], *zhat.shape[2:]) \
            or depth.shape != mask.shape:
        raise ShapeError(
            f"fill_holes wants zhat [V, C, h, w], mask and depth [V, h, w], got "
            f"{tuple(zhat.shape)}, {tuple(mask.shape)}, {tuple(depth.shape)}"
        )
    if not is_pass_count(passes):
        raise ValueError(f"passes must be an integer >= 0, got {passes!r}")


def fill_holes(
    zhat: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, passes: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fill uncovered readout cells from their covered 4-neighbours, ``passes`` times.

    Args:
        zhat: ``[V, C, h, w]`` readout latents (any float dtype; 0 where uncovered).
        mask: ``[V, h, w]`` bool, True where the readout covers the cell.
        depth: ``[V, h, w]`` depth of the frontmost point, metres (0 where uncovered).
        passes: fill passes (``0`` returns the inputs unchanged).
    Returns:
        ``(zhat, mask, depth, filled)``: the filled readout in the inputs' dtypes, the new
        visibility mask (``mask | filled``) and ``filled`` ``[V, h, w]`` bool, the cells the
        fill set.
    Raises:
        ShapeError: the shapes do not agree; ValueError: ``passes`` is not an int >= 0.
    """
    _check(zhat, mask, depth, passes)
    C = zhat.shape[1]
    covered = mask.to(torch.bool)
    filled = torch.zeros_like(covered)
    if passes == 0 or covered.all() or not covered.any():
        return zhat, covered, depth, filled
    # channels and depth filled together: [V, C + 1, h, w] in float32
    vals = torch.cat([zhat.float(), depth.float()[:, None]], dim=1)
    for _ in range(passes):
        count = _neighbour_sum(covered.float())[:, None]  # [V, 1, h, w]
        # uncovered cells contribute exactly 0, whatever they hold (NaN included)
        total = _neighbour_sum(torch.where(covered[:, None], vals, 0.0))
        new = ~covered & (count[:, 0] > 0)  # [V, h, w]
        if not new.any():
            break
        mean = total / count.clamp(min=1)
        vals = torch.where(new[:, None], mean, vals)
        covered = covered | new
        filled = filled | new
    return vals[:, :C].to(zhat.dtype), covered, vals[:, C].to(depth.dtype), filled


def fill_holes_reference(
    zhat: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, passes: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fill_holes` cell by cell (slow; for tests). Same arguments and returns."""
    _check(zhat, mask, depth, passes)
    V, C, h, w = zhat.shape
    vals = torch.cat([zhat.double(), depth.double()[:, None]], dim=1).clone()
    covered = mask.to(torch.bool).clone()
    filled = torch.zeros_like(covered)
    for v in range(V):
        for _ in range(passes):
            before = covered[v].clone()
            src = vals[v].clone()
            for y in range(h):
                for x in range(w):
                    if before[y, x]:
                        continue
                    nbrs = [(y + dy, x + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                            if 0 <= y + dy < h and 0 <= x + dx < w and before[y + dy, x + dx]]
                    if nbrs:
                        vals[v, :, y, x] = sum(src[:, a, b] for a, b in nbrs) / len(nbrs)
                        covered[v, y, x] = True
                        filled[v, y, x] = True
    return vals[:, :C].to(zhat.dtype), covered, vals[:, C].to(depth.dtype), filled
