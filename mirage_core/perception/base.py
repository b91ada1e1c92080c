"""Perception interfaces: depth (with an optional sky mask) and dynamic-object masks.

Algorithm 1 needs, for every frame it writes into the memory, a depth map ``D_t`` and a mask
``M_t = Segment(I_t) U Sky(I_t)``. Both come from small providers behind the two interfaces
here, so the rollout never knows whether depth comes from a network, a simulator or a dataset.

Conventions (``docs/conventions.md``): depth is camera z (not ray length) in the world's units,
``0`` = no measurement; masks are ``True`` on pixels that must not enter the memory. Frames are
``[N, 3, H, W]`` float32 RGB in ``[0, 1]``; ``K`` is the ``[3, 3]`` pixel intrinsics of the
``H x W`` frames; ``T_world_cam`` ``[N, 4, 4]`` maps camera to world (OpenCV camera).

Nothing in this module imports an optional dependency; see ``docs/perception.md``.
"""

from __future__ import annotations

import abc
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mirage_core.errors import DepthError, MirageInputError, ShapeError
from mirage_core.geometry import check_intrinsics, check_se3

__all__ = [
    "FRAME_RANGE_TOL",
    "DepthEstimate",
    "DepthProvider",
    "MaskProvider",
    "MissingDependencyError",
    "check_depth_maps",
    "check_frame_indices",
    "check_frames",
    "check_perception_inputs",
    "check_reference_depth",
]

#: Frames may exceed ``[0, 1]`` by this much (decoder overshoot) before they are rejected;
#: values inside the tolerance are clamped. Catches ``[0, 255]`` and ``[-1, 1]`` inputs.
FRAME_RANGE_TOL = 1e-2


class MissingDependencyError(ImportError):
    """An optional package a provider needs is not installed; the message says how to install it.

    An ``ImportError`` (not a ``MirageInputError``): the input was fine, the environment lacks
    a package. ``import mirage_core`` never raises it; only constructing the provider does.
    """


@dataclass
class DepthEstimate:
    """Depth (and sky) for ``N`` frames.

    Attributes:
        depth: ``[N, H, W]`` float32 z-depth in the world's metric units; ``0`` = no measurement.
            Finite and ``>= 0`` (providers map sky and invalid pixels to 0).
        sky: ``[N, H, W]`` bool, ``True`` on sky, or ``None`` when the provider has no sky.
        source: human-readable: which provider/model, metric or scaled how.
        scale: per-frame scale factor applied to the provider's raw output (1.0 for metric/GT).
    """

    depth: torch.Tensor
    sky: torch.Tensor | None
    source: str
    scale: list[float]


class DepthProvider(abc.ABC):
    """Depth for rendered/generated frames at known cameras.

    Subclasses set :attr:`name` and implement :meth:`estimate`; they validate their inputs with
    :func:`check_perception_inputs`.
    """

    name: str = "depth"

    @abc.abstractmethod
    def estimate(
        self,
        frames: torch.Tensor,
        K: torch.Tensor,
        T_world_cam: torch.Tensor,
        frame_indices: Sequence[int],
        reference_depth: torch.Tensor | None = None,
    ) -> DepthEstimate:
        """Depth of ``frames``.

        Args:
            frames: ``[N, 3, H, W]`` float32 RGB in ``[0, 1]``.
            K: ``[3, 3]`` pixel intrinsics of the ``H x W`` frames (float64 ok).
            T_world_cam: ``[N, 4, 4]`` camera-to-world poses (OpenCV camera).
            frame_indices: the RGB frame index of each frame in the rollout (frame 0 = the
                input image).
            reference_depth: optional ``[N, h, w]`` float32 depth read out of the memory at the
                latent grid (``0`` = unknown). Relative-depth providers use it to align their
                scale to what the memory already holds; others ignore it.
        Returns:
            :class:`DepthEstimate` with ``[N, H, W]`` maps.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class MaskProvider(abc.ABC):
    """Dynamic-object masks (pixels that must not enter the memory). Sky comes with depth."""

    name: str = "masks"

    @abc.abstractmethod
    def masks(
        self,
        frames: torch.Tensor,
        K: torch.Tensor,
        T_world_cam: torch.Tensor,
        frame_indices: Sequence[int],
    ) -> torch.Tensor:
        """``[N, H, W]`` bool, ``True`` on dynamic objects. Arguments as in
        :meth:`DepthProvider.estimate`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --------------------------------------------------------------------------- validation


def check_frames(frames, name: str = "frames") -> torch.Tensor:
    """Validate ``[N, 3, H, W]`` floating RGB in ``[0, 1]``; return it float32, clamped to [0, 1].

    Raises:
        ShapeError: not a tensor, wrong rank/channels, empty, or not floating point.
        MirageInputError: NaN/inf, or values outside ``[0, 1]`` by more than
            :data:`FRAME_RANGE_TOL` (e.g. ``[0, 255]`` or ``[-1, 1]`` frames).
    """
    if not isinstance(frames, torch.Tensor):
        raise ShapeError(
            f"{name} must be a torch.Tensor [N, 3, H, W], got {type(frames).__name__}"
        )
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.numel() == 0:
        raise ShapeError(
            f"{name} must be a non-empty [N, 3, H, W] tensor, got {tuple(frames.shape)}"
        )
    if not frames.is_floating_point():
        raise ShapeError(
            f"{name} must be floating point RGB in [0, 1], got {frames.dtype} "
            f"(convert uint8 with frames.float() / 255)"
        )
    if not torch.isfinite(frames).all():
        raise MirageInputError(f"{name} contains NaN or inf")
    lo, hi = float(frames.min()), float(frames.max())
    if lo < -FRAME_RANGE_TOL or hi > 1.0 + FRAME_RANGE_TOL:
        raise MirageInputError(
            f"{name} must be RGB in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
            f"(divide [0, 255] frames by 255; map [-1, 1] frames with (x + 1) / 2)"
        )
    return frames.to(torch.float32).clamp(0.0, 1.0)


def check_frame_indices(frame_indices, n: int) -> list[int]:
    """``n`` non-negative integer frame indices as a list of ints."""
    if isinstance(frame_indices, torch.Tensor):
        frame_indices = frame_indices.tolist()
    try:
        idx = list(frame_indices)
    except TypeError as e:
        raise MirageInputError(
            f"frame_indices must be a sequence of {n} ints, got {type(frame_indices).__name__}"
        ) from e
    if len(idx) != n:
        raise ShapeError(f"frame_indices has {len(idx)} entries for {n} frames")
    out = []
    for i in idx:
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)
        except TypeError as e:
            raise MirageInputError(f"frame_indices must be ints, got {i!r}") from e
        if i < 0:
            raise MirageInputError(f"frame_indices must be >= 0, got {i}")
        out.append(i)
    return out


def check_reference_depth(reference_depth, n: int) -> torch.Tensor | None:
    """``None`` or ``[n, h, w]`` float depth (finite, ``>= 0``; 0 = unknown), as float32."""
    if reference_depth is None:
        return None
    if not isinstance(reference_depth, torch.Tensor):
        raise ShapeError(
            f"reference_depth must be a torch.Tensor [N, h, w] or None, "
            f"got {type(reference_depth).__name__}"
        )
    if reference_depth.ndim != 3 or reference_depth.shape[0] != n or reference_depth.numel() == 0:
        raise ShapeError(
            f"reference_depth must be [N={n}, h, w], got {tuple(reference_depth.shape)}"
        )
    if not reference_depth.is_floating_point():
        raise ShapeError(f"reference_depth must be floating point, got {reference_depth.dtype}")
    bad = ~torch.isfinite(reference_depth) | (reference_depth < 0)
    if bad.any():
        raise DepthError(
            f"reference_depth has {int(bad.sum())} NaN/inf/negative values; use 0 for unknown"
        )
    return reference_depth.to(torch.float32)


def check_perception_inputs(
    frames, K, T_world_cam, frame_indices
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Validate the common arguments of :meth:`DepthProvider.estimate` / :meth:`MaskProvider.masks`.

    Returns:
        ``(frames [N, 3, H, W] float32, K [3, 3] float64, T_world_cam [N, 4, 4] float64,
        frame_indices list[int])``.
    Raises:
        ShapeError / MirageInputError / PoseError (all ``MirageInputError``).
    """
    frames = check_frames(frames)
    n = frames.shape[0]
    K = check_intrinsics(K)
    if K.shape != (3, 3):
        raise ShapeError(f"K must be one [3, 3] matrix for all frames, got {tuple(K.shape)}")
    T = check_se3(T_world_cam, "T_world_cam")
    if T.ndim != 3 or T.shape[0] != n:
        raise ShapeError(f"T_world_cam must be [N={n}, 4, 4], got {tuple(T.shape)}")
    return frames, K, T, check_frame_indices(frame_indices, n)


def check_depth_maps(depth, name: str = "depth", invalid: str = "raise") -> torch.Tensor:
    """Validate ``[N, H, W]`` (or ``[H, W]``) depth; return float32.

    Args:
        invalid: ``"raise"``: NaN/inf/negative values raise :class:`DepthError`; ``"zero"``:
            they become 0 ("no measurement").
    """
    if invalid not in ("raise", "zero"):
        raise ValueError(f"invalid must be 'raise' or 'zero', got {invalid!r}")
    d = torch.as_tensor(depth)
    if d.numel() == 0 or d.ndim not in (2, 3):
        raise ShapeError(
            f"{name} must be a non-empty [H, W] or [N, H, W] array, got {tuple(d.shape)}"
        )
    if not d.is_floating_point():
        d = d.to(torch.float32)
    d = d.to(torch.float32)
    bad = ~torch.isfinite(d) | (d < 0)
    if bad.any():
        if invalid == "raise":
            n_nan = int(torch.isnan(d).sum())
            n_inf = int(torch.isinf(d).sum())
            raise DepthError(
                f"{name} has {n_nan} NaN, {n_inf} inf and {int((d < 0).sum())} negative values; "
                f"depth must be finite and >= 0 (0 = no measurement), or pass invalid='zero'"
            )
        d = torch.where(bad, torch.zeros((), dtype=d.dtype), d)
    return d


def _finite_positive(x: float, name: str) -> float:
    x = float(x)
    if not math.isfinite(x) or x <= 0:
        raise MirageInputError(f"{name} must be finite and > 0, got {x!r}")
    return x
