"""The RGB point-cloud baseline Mirage is measured against (method.md section 7).

What Spatia/GEN3C-style systems do: store coloured points at full pixel resolution; for every
conditioning step rasterise the cloud at ``H x W`` with a z-buffer, then VAE-encode the rendered
frame. Same back-projection, same masks and the same z-buffer code as the latent memory: the
only difference is where the memory lives (pixels vs latents).

Merge policy: union (what those systems do). Storage: positions ``[3, N]`` float32 and colours
``[N, 3]`` uint8, ``15`` bytes per point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mirage_core.errors import MemoryFileError, MirageInputError, ShapeError
from mirage_core.geometry import backproject, check_intrinsics, check_se3, se3_inverse
from mirage_core.memory.base import (
    Observation,
    Readout,
    SpatialMemory,
    UpdateResult,
    check_image_hw,
)
from mirage_core.memory.depth_downsample import check_depth
from mirage_core.memory.zbuffer import ZBufferWorkspace, decode_keys, zbuffer_keys


@dataclass
class RGBCacheConfig:
    """Configuration of an :class:`RGBPointCache`."""

    device: str = "cpu"
    coverage_threshold: float = 0.5  # cell visible when >= this fraction of its pixels is hit
    initial_capacity: int = 1 << 20  # preallocated points; doubles when full


class RGBPointCache(SpatialMemory):
    """Coloured point cloud at pixel resolution, read out by rasterise-then-encode.

    Args:
        codec: the :class:`~mirage_core.codecs.LatentCodec` that encodes rendered frames.
        config: an :class:`RGBCacheConfig`.
    """

    def __init__(self, codec, config: RGBCacheConfig | None = None) -> None:
        self.codec = codec
        self.config = config or RGBCacheConfig()
        self.device = torch.device(self.config.device)
        self._workspace = ZBufferWorkspace(self.device)
        self.clear()

    def clear(self) -> None:
        cap = self.config.initial_capacity
        self._xyz = torch.empty((3, cap), dtype=torch.float32, device=self.device)
        self._rgb = torch.empty((cap, 3), dtype=torch.uint8, device=self.device)
        self._n = 0

    @property
    def num_points(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._n * (3 * 4 + 3)

    @property
    def xyz(self) -> torch.Tensor:
        return self._xyz[:, : self._n]

    def update(self, obs: Observation) -> UpdateResult:
        """Back-project every admissible *pixel* of ``obs.image`` (``[3, H, W]``)."""
        img = obs.image
        if img is None or not isinstance(img, torch.Tensor) or img.ndim != 3 or img.shape[0] != 3:
            raise ShapeError(
                f"the RGB cache needs image [3, H, W], got {getattr(img, 'shape', None)}"
            )
        H, W = img.shape[1:]
        if img.dtype == torch.uint8:
            rgb = img
        elif img.is_floating_point():
            if not torch.isfinite(img).all() or img.min() < 0 or img.max() > 1:
                raise MirageInputError("float image must be finite and in [0, 1]")
            rgb = (img * 255.0).round().to(torch.uint8)
        else:
            raise ShapeError(f"image must be uint8 or float in [0, 1], got {img.dtype}")
        depth = check_depth(obs.depth)
        if tuple(depth.shape) != (H, W):
            raise ShapeError(f"depth {tuple(depth.shape)} must match the image ({H}, {W})")
        admissible = depth > 0
        if obs.mask is not None:
            if tuple(obs.mask.shape) != (H, W) or obs.mask.dtype != torch.bool:
                raise ShapeError(
                    f"mask must be bool ({H}, {W}), got {obs.mask.dtype} {tuple(obs.mask.shape)}"
                )
            admissible &= ~obs.mask
        K = check_intrinsics(obs.K)
        T_world_cam = se3_inverse(check_se3(obs.T_cam_world, "T_cam_world"))
        sel = admissible.flatten().nonzero().squeeze(1)
        pts = (
            backproject(depth.to(torch.float32), K, T_world_cam).reshape(-1, 3).index_select(0, sel)
        )
        cols = rgb.reshape(3, -1).index_select(1, sel).T
        before = self.nbytes
        self._append(pts, cols)
        return UpdateResult(
            added=len(sel),
            replaced=0,
            admissible=len(sel),
            masked=0 if obs.mask is None else int((obs.mask & (depth > 0)).sum()),
            invalid_depth=int((depth <= 0).sum()),
            evicted=0,
            bytes_added=self.nbytes - before,
        )

    def _append(self, pts: torch.Tensor, cols: torch.Tensor) -> None:
        need = self._n + pts.shape[0]
        if need > self._xyz.shape[1]:
            cap = max(need, 2 * self._xyz.shape[1])
            xyz = torch.empty((3, cap), dtype=torch.float32, device=self.device)
            rgb = torch.empty((cap, 3), dtype=torch.uint8, device=self.device)
            xyz[:, : self._n] = self.xyz
            rgb[: self._n] = self._rgb[: self._n]
            self._xyz, self._rgb = xyz, rgb
        self._xyz[:, self._n : need] = pts.T.to(self.device)
        self._rgb[self._n : need] = cols.to(self.device)
        self._n = need

    def rasterize(
        self, T_cam_world: torch.Tensor, K: torch.Tensor, image_hw
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Z-buffer the cloud at pixel resolution.

        Returns ``image`` ``[V, 3, H, W]`` float32 in [0, 1] (0 where empty) and pixel
        ``coverage`` ``[V, H, W]`` bool.
        """
        H, W = (int(x) for x in image_hw)
        T = check_se3(T_cam_world, "T_cam_world")
        T = T[None] if T.ndim == 2 else T
        keys = zbuffer_keys(self.xyz, T, K, H, W, self._workspace)
        idx, _ = decode_keys(keys)
        hit = idx >= 0
        cols = self._rgb.index_select(0, idx.clamp(min=0).flatten()).view(T.shape[0], H * W, 3)
        cols = cols.masked_fill(~hit[..., None], 0)
        image = cols.permute(0, 2, 1).reshape(T.shape[0], 3, H, W).to(torch.float32) / 255.0
        return image, hit.view(T.shape[0], H, W)

    def readout(
        self, T_cam_world: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]
    ) -> Readout:
        """Rasterise at ``H x W`` then encode with the codec: ``zhat`` ``[V, C, h, w]``."""
        h, w = check_image_hw(image_hw, self.codec.stride)
        single = check_se3(T_cam_world).ndim == 2
        t0 = time.perf_counter()
        image, coverage = self.rasterize(T_cam_world, K, image_hw)
        t1 = time.perf_counter()
        zhat = self.codec.encode(image)
        t2 = time.perf_counter()
        frac = F.adaptive_avg_pool2d(coverage[:, None].to(torch.float32), (h, w))[:, 0]
        mask = frac >= self.config.coverage_threshold
        depth = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        out = Readout(
            zhat=zhat,
            mask=mask,
            depth=depth,
            image=image,
            timings_ms={"rasterize": (t1 - t0) * 1e3, "encode": (t2 - t1) * 1e3},
        )
        if single:
            return Readout(out.zhat[0], out.mask[0], out.depth[0], out.image[0], out.timings_ms)
        return out

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {"xyz": self.xyz.contiguous().cpu(), "rgb": self._rgb[: self._n].contiguous().cpu()},
            str(path),
            metadata={"format": "mirage-rgb-cache", "version": "1"},
        )

    @classmethod
    def load(cls, path: str | Path, codec, config: RGBCacheConfig | None = None) -> RGBPointCache:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                xyz, rgb = f.get_tensor("xyz"), f.get_tensor("rgb")
        except Exception as e:
            raise MemoryFileError(
                f"{path}: not a readable RGB cache ({type(e).__name__}: {e})"
            ) from None
        if (
            meta.get("format") != "mirage-rgb-cache"
            or xyz.shape[0] != 3
            or rgb.shape != (xyz.shape[1], 3)
        ):
            raise MemoryFileError(f"{path}: not a Mirage RGB cache file or inconsistent shapes")
        cache = cls(codec, config)
        cache._append(xyz.T, rgb)
        return cache
