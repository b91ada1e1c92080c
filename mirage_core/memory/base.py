"""What every spatial memory (latent or RGB baseline) takes and returns."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mirage_core.errors import ShapeError


@dataclass
class Observation:
    """One frame to write into a memory.

    Fields:
        depth: ``[H, W]`` z-depth at pixel resolution, or ``[h, w]`` at latent resolution.
            ``0`` = no measurement. NaN/inf/negative values are rejected (see ``invalid_depth``).
        K: ``[3, 3]`` pixel intrinsics of the ``H x W = (h s) x (w s)`` image.
        T_cam_world: ``[4, 4]`` world-to-camera pose of this frame (the paper's ``E_t``).
        mask: optional ``[H, W]`` or ``[h, w]`` bool, True on dynamic objects and sky (never
            written to memory, Eq. 6).
        latent: ``[C, h, w]`` VAE latent of the frame (latent memory).
        image: ``[3, H, W]`` RGB in [0, 1] float or uint8 (RGB baseline; or encoded by the
            latent memory's codec when ``latent`` is None).
    """

    depth: torch.Tensor
    K: torch.Tensor
    T_cam_world: torch.Tensor
    mask: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    image: torch.Tensor | None = None


@dataclass
class Readout:
    """Memory read from one or more target views (Eq. 5).

    Fields (``[V, ...]`` for a batch of views; the leading ``V`` is dropped when a single
    ``[4, 4]`` pose was asked for):
        zhat: ``[V, C, h, w]`` latent conditioning (0 where nothing projects).
        mask: ``[V, h, w]`` bool visibility mask ``m_t``.
        depth: ``[V, h, w]`` float32 depth of the frontmost point (0 where empty).
        image: ``[V, 3, H, W]`` rasterised RGB (RGB baseline only).
        filled: ``[V, h, w]`` bool, cells set by the latent memory's opt-in hole fill
            (``MemoryConfig.hole_fill``; ``mask`` includes them), else ``None``.
    """

    zhat: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    image: torch.Tensor | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    filled: torch.Tensor | None = None

    @property
    def hole_rate(self) -> float:
        """Fraction of latent cells left empty (``1 - mean(mask)``; filled cells count as
        covered)."""
        return 1.0 - float(self.mask.to(torch.float32).mean())


@dataclass
class UpdateResult:
    """What one update did."""

    added: int  # new points stored
    replaced: int  # existing points whose feature was overwritten (voxel policy)
    admissible: int  # cells in Lambda_t (Eq. 6)
    masked: int  # cells excluded by the dynamic/sky mask
    invalid_depth: int  # cells excluded for depth 0 / too few valid pixels
    evicted: int  # points removed to respect the memory budget
    bytes_added: int  # change in stored bytes (may be negative after eviction)


class SpatialMemory(abc.ABC):
    """Interface shared by :class:`LatentSpatialMemory` and :class:`RGBPointCache`."""

    @abc.abstractmethod
    def update(self, obs: Observation) -> UpdateResult:
        """Write one frame. Raises ``ValueError`` subclasses on bad input, leaving the memory
        unchanged."""

    @abc.abstractmethod
    def readout(
        self, T_cam_world: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]
    ) -> Readout:
        """Read target view(s): ``T_cam_world`` ``[4, 4]`` or ``[V, 4, 4]``; ``K`` ``[3, 3]`` or
        ``[V, 3, 3]`` pixel intrinsics of an ``image_hw = (H, W)`` image."""

    @property
    @abc.abstractmethod
    def num_points(self) -> int: ...

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes of stored point data (positions + features/colours)."""

    @abc.abstractmethod
    def clear(self) -> None: ...

    @abc.abstractmethod
    def save(self, path: str | Path) -> None: ...


def check_image_hw(image_hw, stride: int) -> tuple[int, int]:
    """Validate ``(H, W)`` against the codec stride; returns ``(h, w)``."""
    try:
        H, W = (int(x) for x in image_hw)
    except (TypeError, ValueError):
        raise ShapeError(f"image_hw must be (H, W), got {image_hw!r}") from None
    if H <= 0 or W <= 0 or H % stride or W % stride:
        raise ShapeError(
            f"image size {H}x{W} must be positive multiples of the VAE stride {stride}"
        )
    return H // stride, W // stride
