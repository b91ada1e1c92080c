"""Scale policies for depth networks, and the scale alignment to the memory.

A metric network returns depth in metres; a relative one returns depth up to an unknown
per-image scale. Mirage's memory needs one consistent scale across a whole rollout (the
trajectory's translations are in that unit), so every depth provider states a policy:

``"metric"``
    Use the network's metric output (with its focal-length conversion where the model needs
    one). Requires a metric model; anything else is an error at construction.
``"align_to_memory"``
    Relative model. Frame ``i``'s scale is ``s_i = median(reference / predicted)`` over the
    latent cells where both are valid, computed at latent resolution after downsampling the
    prediction (sky pixels excluded) with the memory's own depth downsampling. ``reference``
    is the memory's readout depth at that view (the depth of what the memory already holds).
    With too little overlap (fewer than ``min_cells`` cells) the most recent scale of the
    same provider is reused, and ``initial_scale`` before any alignment (the first frame:
    it fixes the world unit of a rollout that starts from a relative model).
``"none"``
    The raw network output (relative, arbitrary scale). A warning says so; for debugging.
``"auto"``
    ``"metric"`` for a metric model, ``"align_to_memory"`` otherwise.

This module holds the pure functions; :mod:`mirage_core.perception.da3` applies them.
"""

from __future__ import annotations

import math

import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.memory.depth_downsample import DEPTH_DOWNSAMPLE_MODES, downsample_depth

__all__ = ["SCALE_POLICIES", "ScaleAligner", "align_scale_to_reference"]

SCALE_POLICIES: tuple[str, ...] = ("auto", "metric", "align_to_memory", "none")


def align_scale_to_reference(
    predicted: torch.Tensor,
    reference: torch.Tensor,
    exclude: torch.Tensor | None = None,
    mode: str = "bilinear",
    min_cells: int = 16,
) -> tuple[float | None, int]:
    """Scale ``s`` such that ``s * predicted`` matches ``reference``: the median of ratios.

    Args:
        predicted: ``[H, W]`` relative depth at pixel resolution (``0`` = invalid).
        reference: ``[h, w]`` depth at the latent grid (``0`` = unknown); ``H x W`` must be an
            integer multiple (same stride both axes) of ``h x w``, or equal to it.
        exclude: optional ``[H, W]`` bool, pixels to ignore in ``predicted`` (sky, dynamic).
        mode: depth downsampling, one of :data:`~mirage_core.memory.depth_downsample.
            DEPTH_DOWNSAMPLE_MODES` (default bilinear, as the memory's default).
        min_cells: fewest latent cells valid in both maps for an estimate.
    Returns:
        ``(scale, n_cells)``: ``scale`` is ``None`` when fewer than ``min_cells`` cells overlap.
        ``median`` is the lower median (``torch.median``), exact for any constant ratio.
    """
    if predicted.ndim != 2 or reference.ndim != 2:
        raise ShapeError(
            f"predicted must be [H, W] and reference [h, w], got {tuple(predicted.shape)} and "
            f"{tuple(reference.shape)}"
        )
    if mode not in DEPTH_DOWNSAMPLE_MODES:
        raise MirageInputError(f"mode must be one of {DEPTH_DOWNSAMPLE_MODES}, got {mode!r}")
    pred = predicted.to(torch.float32)
    if exclude is not None:
        if exclude.shape != pred.shape:
            raise ShapeError(
                f"exclude must match predicted {tuple(pred.shape)}, got {tuple(exclude.shape)}"
            )
        pred = torch.where(exclude.to(pred.device), torch.zeros((), dtype=pred.dtype), pred)
    ref = reference.to(device=pred.device, dtype=torch.float32)
    pred_l = downsample_depth(pred, (ref.shape[0], ref.shape[1]), mode)
    valid = (ref > 0) & (pred_l > 0) & torch.isfinite(ref) & torch.isfinite(pred_l)
    n = int(valid.sum())
    if n < max(1, int(min_cells)):
        return None, n
    ratio = ref[valid] / pred_l[valid]
    return float(ratio.median()), n


class ScaleAligner:
    """Stateful ``align_to_memory`` policy for one provider over one rollout.

    Args:
        initial_scale: scale before any alignment succeeded (the first frame of a rollout).
        min_cells: fewest overlapping latent cells for an alignment.
        mode: depth downsampling mode used to bring the prediction to the latent grid.
    """

    def __init__(self, initial_scale: float = 1.0, min_cells: int = 16, mode: str = "bilinear"):
        initial_scale = float(initial_scale)
        if not math.isfinite(initial_scale) or initial_scale <= 0:
            raise MirageInputError(f"initial_scale must be finite and > 0, got {initial_scale!r}")
        if int(min_cells) < 1:
            raise MirageInputError(f"min_cells must be >= 1, got {min_cells!r}")
        if mode not in DEPTH_DOWNSAMPLE_MODES:
            raise MirageInputError(f"mode must be one of {DEPTH_DOWNSAMPLE_MODES}, got {mode!r}")
        self.initial_scale = initial_scale
        self.min_cells = int(min_cells)
        self.mode = mode
        self.last_scale: float | None = None

    def reset(self) -> None:
        """Forget the carried scale (start of a new rollout)."""
        self.last_scale = None

    def scale_for(
        self,
        predicted: torch.Tensor,
        reference: torch.Tensor | None,
        exclude: torch.Tensor | None = None,
    ) -> tuple[float, str]:
        """Scale for one frame and how it was obtained (``"aligned (n cells)"``, ``"carried"``,
        ``"initial"``)."""
        if reference is not None:
            s, n = align_scale_to_reference(
                predicted, reference, exclude, self.mode, self.min_cells
            )
            if s is not None and math.isfinite(s) and s > 0:
                self.last_scale = s
                return s, f"aligned ({n} cells)"
        if self.last_scale is not None:
            return self.last_scale, "carried"
        return self.initial_scale, "initial"
