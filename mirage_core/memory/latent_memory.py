"""The latent spatial memory ``M = {(p_i, f_i)}`` (method.md section 2).

* **Initialize / update** (Eq. 4, 6): depth-guided back-projection of the latent cells of a
  frame, over the admissible cells (finite positive depth, not dynamic, not sky).
* **Readout** (Eq. 5): latent-resolution projection with a frontmost choice; returns ``zhat``
  and the visibility mask. Fast scatter-min z-buffer; a slow reference sits beside it.
* **Merge policies** (the paper leaves this open; all but ``union`` are ours):

  - ``union``: Algorithm 1 literally, ``M <- M U new``: every admissible cell becomes a point.
    Grows by ``|Lambda_t|`` points per frame, also on an exact revisit.
  - ``fill_empty`` (default): before writing, read the memory out from the frame's own view;
    add a cell only where that readout is empty, or where the stored frontmost point lies
    behind the new surface by more than ``occlusion_tolerance`` (relative), i.e. the frame
    sees something the memory does not have in front of it. An exact revisit adds nothing.
  - ``voxel``: points are keyed by a world voxel of edge ``voxel_size``; a new point whose voxel
    already holds a point overwrites that point's feature (latest observation wins) and adds
    nothing; within one frame the first cell (row-major) of a voxel wins.

* **Hole fill** (ours, opt-in, ``hole_fill`` passes; default 0 = Eq. 5 as written): the
  readout's uncovered cells next to covered ones take their neighbours' mean latent and depth
  and are marked visible (:mod:`mirage_core.memory.hole_fill`); ``Readout.filled`` says which.
  Only what :meth:`LatentSpatialMemory.readout` returns is filled; the memory and the
  ``fill_empty`` merge's own readout are not.
* **Budget** (ours): ``max_points``. Points live in *blocks*, one per update. A block is *seen*
  when it is written and whenever one of its points wins a readout cell. When an update would
  exceed the budget, whole blocks are evicted, least recently seen first (ties: the older
  block), until the new points fit. An update whose own admissible points exceed the budget is
  rejected.
* **Storage**: positions ``[3, N]`` float32 (structure of arrays for the projection), features
  ``[N, C]`` in float32 or bfloat16. ``nbytes = N * (12 + C * itemsize)``.
* **Save/load**: safetensors with a format tag, the config, and a SHA-256 of the payload;
  corrupt or mismatched files raise :class:`MemoryFileError`.

Every update validates all input before touching the memory: a rejected update leaves it
exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from mirage_core.errors import DepthError, MemoryFileError, MirageInputError, ShapeError
from mirage_core.geometry import (
    backproject,
    check_intrinsics,
    check_se3,
    latent_intrinsics,
    se3_inverse,
)
from mirage_core.memory.base import (
    Observation,
    Readout,
    SpatialMemory,
    UpdateResult,
    check_image_hw,
)
from mirage_core.memory.depth_downsample import (
    DEPTH_DOWNSAMPLE_MODES,
    check_depth,
    downsample_depth,
    downsample_mask,
)
from mirage_core.memory.hole_fill import fill_holes, fill_holes_reference, is_pass_count
from mirage_core.memory.zbuffer import (
    ZBufferWorkspace,
    decode_keys,
    zbuffer_keys,
    zbuffer_select_reference,
)

MergePolicy = Literal["union", "fill_empty", "voxel"]
MERGE_POLICIES: tuple[str, ...] = ("union", "fill_empty", "voxel")
FEATURE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FILE_FORMAT = "mirage-latent-memory"
FILE_VERSION = "1"


@dataclass
class MemoryConfig:
    """Configuration of a :class:`LatentSpatialMemory`."""

    channels: int = 48  # C, latent channels (Wan2.2-TI2V-5B VAE: 48)
    stride: int = 16  # VAE spatial stride s (Wan2.2: 16); image H x W <-> latent (H/s) x (W/s)
    feature_dtype: str = "bfloat16"  # "float32" or "bfloat16": storage dtype of the features
    device: str = "cpu"  # where points and features live ("cpu", "cuda", "cuda:1", ...)
    merge_policy: str = "fill_empty"  # "union" (paper, literal), "fill_empty", "voxel"
    depth_downsample: str = "bilinear"  # "bilinear" (paper default), "nearest", "area", "median"
    mask_threshold: float = 0.0  # cell excluded when > this fraction of its pixels is masked
    occlusion_tolerance: float = 0.1  # fill_empty: re-add a cell when new depth < (1-tol) * stored
    voxel_size: float = 0.05  # voxel policy: voxel edge in world units (metres)
    max_points: int | None = None  # memory budget in points (None: unbounded)
    invalid_depth: str = "raise"  # NaN/inf/negative depth: "raise" a DepthError, or "mask" it out
    initial_capacity: int = 1 << 16  # preallocated points; storage doubles when full
    hole_fill: int = 0  # readout hole-fill passes (0: off, Eq. 5 as written; memory/hole_fill.py)

    def __post_init__(self) -> None:
        if self.channels <= 0 or self.stride <= 0:
            raise ValueError(
                f"channels and stride must be positive, got {self.channels}, {self.stride}"
            )
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"feature_dtype must be one of {list(FEATURE_DTYPES)}, got {self.feature_dtype!r}"
            )
        if self.merge_policy not in MERGE_POLICIES:
            raise ValueError(
                f"merge_policy must be one of {MERGE_POLICIES}, got {self.merge_policy!r}"
            )
        if self.depth_downsample not in DEPTH_DOWNSAMPLE_MODES:
            raise ValueError(
                f"depth_downsample must be one of {DEPTH_DOWNSAMPLE_MODES}, "
                f"got {self.depth_downsample!r}"
            )
        if not 0.0 <= self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1), got {self.mask_threshold}")
        if not 0.0 <= self.occlusion_tolerance < 1.0:
            raise ValueError(
                f"occlusion_tolerance must be in [0, 1), got {self.occlusion_tolerance}"
            )
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.max_points is not None and self.max_points <= 0:
            raise ValueError(f"max_points must be positive or None, got {self.max_points}")
        if not is_pass_count(self.hole_fill):
            raise ValueError(f"hole_fill must be an integer >= 0, got {self.hole_fill!r}")
        if self.invalid_depth not in ("raise", "mask"):
            raise ValueError(f"invalid_depth must be 'raise' or 'mask', got {self.invalid_depth!r}")

    @property
    def torch_feature_dtype(self) -> torch.dtype:
        return FEATURE_DTYPES[self.feature_dtype]


@dataclass
class MemoryStats:
    """A snapshot of the memory's size and history."""

    num_points: int
    bytes: int  # stored point data: N * (12 + C * itemsize)
    bytes_per_point: int
    allocated_bytes: int  # preallocated capacity (>= bytes)
    num_blocks: int
    updates: int
    growth_bytes: list[int]  # bytes added by each update, in order (negative after eviction)
    evicted_points: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Prepared:
    """Validated, downsampled inputs of one update (nothing stored yet)."""

    points: torch.Tensor  # [h, w, 3] world points of every cell
    depth: torch.Tensor  # [h, w] latent-resolution depth
    admissible: torch.Tensor  # [h, w] bool, Eq. 6
    latent: torch.Tensor  # [C, h, w] on device, feature dtype
    K_l: torch.Tensor  # [3, 3] latent intrinsics
    T_cam_world: torch.Tensor  # [4, 4]
    masked: int
    invalid: int


class LatentSpatialMemory(SpatialMemory):
    """Mirage's latent spatial memory. See the module docstring for the rules it follows.

    Args:
        config: a :class:`MemoryConfig`.
        codec: optional :class:`~mirage_core.codecs.LatentCodec` used to encode
            ``Observation.image`` when ``Observation.latent`` is None.
    """

    def __init__(self, config: MemoryConfig | None = None, codec=None) -> None:
        self.config = config or MemoryConfig()
        self.codec = codec
        if codec is not None and (
            codec.channels != self.config.channels or codec.stride != self.config.stride
        ):
            raise ValueError(
                f"codec {codec.name} has C={codec.channels}, stride={codec.stride}; "
                "memory config has "
                f"C={self.config.channels}, stride={self.config.stride}"
            )
        self.device = torch.device(self.config.device)
        self._workspace = ZBufferWorkspace(self.device)  # readout scratch, reused
        self.clear()

    # ------------------------------------------------------------------ state

    def clear(self) -> None:
        """Drop every point and the history."""
        cap = max(1, self.config.initial_capacity)
        self._xyz = torch.empty((3, cap), dtype=torch.float32, device=self.device)
        self._feat = torch.empty(
            (cap, self.config.channels), dtype=self.config.torch_feature_dtype, device=self.device
        )
        self._n = 0
        # Blocks: one per update that stored points; parallel Python lists (few hundred entries).
        self._block_start: list[int] = []
        self._block_len: list[int] = []
        self._block_seen: list[int] = []
        self._clock = 0  # increments on every update and readout
        self._voxels: dict[int, int] = {}  # voxel key -> point index (voxel policy)
        self._growth: list[int] = []
        self._evicted = 0

    @property
    def num_points(self) -> int:
        return self._n

    @property
    def bytes_per_point(self) -> int:
        return 3 * 4 + self.config.channels * self._feat.element_size()

    @property
    def nbytes(self) -> int:
        return self._n * self.bytes_per_point

    @property
    def xyz(self) -> torch.Tensor:
        """``[3, N]`` float32 world positions (a view; do not modify)."""
        return self._xyz[:, : self._n]

    @property
    def features(self) -> torch.Tensor:
        """``[N, C]`` stored latent features (a view; do not modify)."""
        return self._feat[: self._n]

    def stats(self) -> MemoryStats:
        cap = self._xyz.shape[1]
        return MemoryStats(
            num_points=self._n,
            bytes=self.nbytes,
            bytes_per_point=self.bytes_per_point,
            allocated_bytes=cap * self.bytes_per_point,
            num_blocks=len(self._block_start),
            updates=len(self._growth),
            growth_bytes=list(self._growth),
            evicted_points=self._evicted,
        )

    # ------------------------------------------------------------------ update

    def _prepare(self, obs: Observation) -> _Prepared:
        """Validate and downsample everything; raises before any state changes."""
        cfg = self.config
        latent = obs.latent
        if latent is None:
            if obs.image is None or self.codec is None:
                raise MirageInputError(
                    "Observation needs a latent [C, h, w] (or an image and a memory codec)"
                )
            image = (
                obs.image.to(torch.float32) / 255.0 if obs.image.dtype == torch.uint8 else obs.image
            )
            latent = self.codec.encode(image[None])[0]
        if not isinstance(latent, torch.Tensor) or latent.ndim != 3:
            raise ShapeError(
                f"latent must be a [C, h, w] tensor, got {getattr(latent, 'shape', type(latent))}"
            )
        if latent.numel() == 0:
            raise ShapeError(f"latent is empty: {tuple(latent.shape)}")
        if latent.shape[0] != cfg.channels:
            raise ShapeError(
                f"latent has {latent.shape[0]} channels, memory expects C={cfg.channels}"
            )
        if not latent.is_floating_point():
            raise ShapeError(f"latent must be floating point, got {latent.dtype}")
        if not torch.isfinite(latent).all():
            raise MirageInputError("latent contains NaN or inf")
        _, h, w = latent.shape
        H, W = h * cfg.stride, w * cfg.stride

        depth = obs.depth
        if not isinstance(depth, torch.Tensor):
            raise ShapeError(f"depth must be a torch.Tensor, got {type(depth).__name__}")
        if tuple(depth.shape) not in ((H, W), (h, w)):
            raise ShapeError(
                f"depth is {tuple(depth.shape)}; for a {h}x{w} latent (stride {cfg.stride}) "
                "it must be "
                f"pixel resolution ({H}, {W}) or latent resolution ({h}, {w})"
            )
        if cfg.invalid_depth == "mask" and depth.is_floating_point():
            depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))
        depth = check_depth(depth).to(self.device)

        mask = obs.mask
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) not in ((H, W), (h, w)):
                raise ShapeError(
                    f"mask is {tuple(getattr(mask, 'shape', ()))}; "
                    f"expected ({H}, {W}) or ({h}, {w})"
                )
        K = check_intrinsics(obs.K, "K")
        if K.ndim != 2:
            raise ShapeError(f"K must be [3, 3], got {tuple(K.shape)}")
        T_cam_world = check_se3(obs.T_cam_world, "T_cam_world")
        if T_cam_world.ndim != 2:
            raise ShapeError(
                f"T_cam_world must be [4, 4] for one frame, got {tuple(T_cam_world.shape)}"
            )

        d_l = downsample_depth(depth, (h, w), cfg.depth_downsample)
        valid = d_l > 0
        if mask is not None:
            m_l = downsample_mask(mask.to(self.device), (h, w), cfg.mask_threshold)
        else:
            m_l = torch.zeros((h, w), dtype=torch.bool, device=self.device)
        admissible = valid & ~m_l
        n_adm = int(admissible.sum())
        if cfg.max_points is not None and n_adm > cfg.max_points:
            raise MirageInputError(
                f"one frame has {n_adm} admissible cells, more than the memory budget "
                f"max_points={cfg.max_points}"
            )
        K_l = latent_intrinsics(K, (H, W), (h, w))
        points = backproject(d_l, K_l, se3_inverse(T_cam_world))
        return _Prepared(
            points=points,
            depth=d_l,
            admissible=admissible,
            latent=latent.to(device=self.device, dtype=cfg.torch_feature_dtype),
            K_l=K_l,
            T_cam_world=T_cam_world,
            masked=int((valid & m_l).sum()),
            invalid=int((~valid).sum()),
        )

    def update(self, obs: Observation) -> UpdateResult:
        """Back-project one frame (Eq. 4) and merge it under the configured policy."""
        return self._apply(self._prepare(obs))

    def _apply(self, prep: _Prepared) -> UpdateResult:
        """Merge an already validated frame (nothing can fail from here on)."""
        before = self.nbytes
        self._clock += 1
        policy = self.config.merge_policy
        replaced = 0
        if policy == "union":
            take = prep.admissible
        elif policy == "fill_empty":
            take = prep.admissible & self._uncovered(prep)
        else:  # voxel
            take, replaced = self._voxel_merge(prep)
        sel = take.flatten().nonzero().squeeze(1)  # row-major cell order
        pts = prep.points.reshape(-1, 3).index_select(0, sel)
        feats = prep.latent.flatten(1).index_select(1, sel).T
        evicted = self._append(pts, feats)
        if policy == "voxel" and len(sel):
            keys = self._voxel_keys(pts).tolist()
            start = self._n - len(sel)
            self._voxels.update({k: start + i for i, k in enumerate(keys)})
        added = len(sel)
        self._growth.append(self.nbytes - before)
        return UpdateResult(
            added=added,
            replaced=replaced,
            admissible=int(prep.admissible.sum()),
            masked=prep.masked,
            invalid_depth=prep.invalid,
            evicted=evicted,
            bytes_added=self.nbytes - before,
        )

    def initialize(self, obs: Observation, *, require_points: bool = False) -> UpdateResult:
        """Clear the memory and write the first frame (Algorithm 1, line 4).

        ``require_points``: refuse a frame with no cell to store (every cell without valid
        depth or masked out) with a :class:`~mirage_core.errors.MirageInputError`, before
        clearing, so the memory keeps what it held (the memory service's reset; a rollout
        may start from an empty memory, e.g. a first frame of sky).
        """
        prep = self._prepare(obs)  # validate before clearing
        if require_points and not bool(prep.admissible.any()):
            raise MirageInputError(
                f"the first frame has no cell to store ({prep.invalid} of "
                f"{prep.admissible.numel()} latent cells without valid depth, {prep.masked} "
                "masked out): send a frame with depth (> 0, finite); the memory is unchanged"
            )
        self.clear()
        return self._apply(prep)

    def _uncovered(self, prep: _Prepared) -> torch.Tensor:
        """``[h, w]`` bool: cells the memory leaves empty from this view, or where the stored
        frontmost point is behind the new depth by more than the tolerance."""
        h, w = prep.depth.shape
        if self._n == 0:
            return torch.ones((h, w), dtype=torch.bool, device=self.device)
        idx, z = decode_keys(
            zbuffer_keys(self.xyz, prep.T_cam_world, prep.K_l, h, w, self._workspace)[0]
        )
        idx, z = idx.view(h, w), z.view(h, w)
        tol = self.config.occlusion_tolerance
        return (idx < 0) | (prep.depth < (1.0 - tol) * z)

    def _voxel_keys(self, pts: torch.Tensor) -> torch.Tensor:
        """``[M, 3]`` world points -> ``[M]`` int64 voxel keys (21 bits per axis, wrapping)."""
        v = torch.floor(pts / self.config.voxel_size).to(torch.int64) & 0x1FFFFF
        return (v[:, 0] << 42) | (v[:, 1] << 21) | v[:, 2]

    def _voxel_merge(self, prep: _Prepared) -> tuple[torch.Tensor, int]:
        """Voxel policy: overwrite features of occupied voxels, return the cells to add."""
        flat_adm = prep.admissible.flatten()
        cells = flat_adm.nonzero().squeeze(1)
        pts = prep.points.reshape(-1, 3).index_select(0, cells)
        keys = self._voxel_keys(pts).tolist()
        take = torch.zeros_like(flat_adm)
        seen: set[int] = set()
        upd_cells, upd_points, new_cells = [], [], []
        for c, k in zip(cells.tolist(), keys, strict=True):
            if k in seen:
                continue
            seen.add(k)
            j = self._voxels.get(k)
            if j is None:
                new_cells.append(c)
            else:
                upd_cells.append(c)
                upd_points.append(j)
        if upd_cells:
            src = prep.latent.flatten(1)[:, torch.tensor(upd_cells, device=self.device)].T
            self._feat[torch.tensor(upd_points, device=self.device)] = src
            self._mark_seen(torch.tensor(upd_points, device=self.device))
        if new_cells:
            take[torch.tensor(new_cells, device=self.device)] = True
        return take.view_as(prep.admissible), len(upd_cells)

    def _append(self, pts: torch.Tensor, feats: torch.Tensor) -> int:
        """Store ``pts`` ``[M, 3]`` and ``feats`` ``[M, C]`` as a new block; evict first if the
        budget requires. Returns the number of evicted points."""
        m = pts.shape[0]
        if m == 0:
            return 0
        evicted = 0
        if self.config.max_points is not None and self._n + m > self.config.max_points:
            evicted = self._evict(self._n + m - self.config.max_points)
        need = self._n + m
        if need > self._xyz.shape[1]:
            cap = max(need, 2 * self._xyz.shape[1])
            xyz = torch.empty((3, cap), dtype=torch.float32, device=self.device)
            feat = torch.empty(
                (cap, self.config.channels), dtype=self._feat.dtype, device=self.device
            )
            xyz[:, : self._n] = self.xyz
            feat[: self._n] = self.features
            self._xyz, self._feat = xyz, feat
        self._xyz[:, self._n : need] = pts.T.to(torch.float32)
        self._feat[self._n : need] = feats
        self._block_start.append(self._n)
        self._block_len.append(m)
        self._block_seen.append(self._clock)
        self._n = need
        return evicted

    def _evict(self, at_least: int) -> int:
        """Remove whole blocks, least recently seen first (ties: oldest), until ``at_least``
        points are gone. Keeps the relative order of surviving points."""
        order = sorted(range(len(self._block_start)), key=lambda b: (self._block_seen[b], b))
        drop, removed = set(), 0
        for b in order:
            if removed >= at_least:
                break
            drop.add(b)
            removed += self._block_len[b]
        keep = torch.ones(self._n, dtype=torch.bool, device=self.device)
        for b in drop:
            keep[self._block_start[b] : self._block_start[b] + self._block_len[b]] = False
        idx = keep.nonzero().squeeze(1)
        n_new = len(idx)
        self._xyz[:, :n_new] = self.xyz.index_select(1, idx)
        self._feat[:n_new] = self.features.index_select(0, idx)
        starts, lens, seen, s = [], [], [], 0
        for b in range(len(self._block_start)):
            if b in drop:
                continue
            starts.append(s)
            lens.append(self._block_len[b])
            seen.append(self._block_seen[b])
            s += self._block_len[b]
        self._block_start, self._block_len, self._block_seen = starts, lens, seen
        self._n = n_new
        self._evicted += removed
        if self.config.merge_policy == "voxel":
            self._rebuild_voxels()
        return removed

    def _rebuild_voxels(self) -> None:
        keys = self._voxel_keys(self.xyz.T).tolist() if self._n else []
        self._voxels = {}
        for i, k in enumerate(keys):
            self._voxels.setdefault(k, i)

    def _mark_seen(self, point_index: torch.Tensor) -> None:
        """Stamp the blocks holding ``point_index`` (``[M]`` int64, -1 ignored) as seen now."""
        point_index = point_index[point_index >= 0]
        if not len(point_index) or not self._block_start:
            return
        starts = torch.tensor(self._block_start, device=point_index.device)
        blocks = torch.searchsorted(starts, point_index, right=True) - 1
        for b in torch.unique(blocks).tolist():
            self._block_seen[b] = self._clock

    # ------------------------------------------------------------------ readout

    def _readout_args(self, T_cam_world, K, image_hw):
        h, w = check_image_hw(image_hw, self.config.stride)
        T = check_se3(T_cam_world, "T_cam_world")
        single = T.ndim == 2
        if T.ndim not in (2, 3):
            raise ShapeError(f"T_cam_world must be [4, 4] or [V, 4, 4], got {tuple(T.shape)}")
        K_l = latent_intrinsics(K, image_hw, (h, w))
        return T, K_l, h, w, single

    def readout(
        self, T_cam_world: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]
    ) -> Readout:
        """Eq. 5 for one view (``T_cam_world`` ``[4, 4]`` -> ``zhat`` ``[C, h, w]``) or a chunk of
        views (``[V, 4, 4]`` -> ``[V, C, h, w]``). ``K`` is ``[3, 3]`` or ``[V, 3, 3]`` pixel
        intrinsics of an ``image_hw = (H, W)`` image; the grid is ``(H/s) x (W/s)``. With
        ``config.hole_fill > 0`` the holes are then filled (:mod:`~mirage_core.memory.hole_fill`)
        and ``Readout.filled`` marks the filled cells."""
        t0 = time.perf_counter()
        T, K_l, h, w, single = self._readout_args(T_cam_world, K, image_hw)
        self._clock += 1
        keys = zbuffer_keys(self.xyz, T, K_l, h, w, self._workspace)  # [V, h*w]
        idx, z = decode_keys(keys)
        out = self._fill(self._gather(idx, z, h, w), fill_holes)
        self._mark_seen(idx.flatten())
        out.timings_ms["readout"] = (time.perf_counter() - t0) * 1e3
        return _squeeze(out) if single else out

    def readout_reference(
        self, T_cam_world: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]
    ) -> Readout:
        """Same as :meth:`readout`, through the slow per-point reference z-buffer (for tests)."""
        T, K_l, h, w, single = self._readout_args(T_cam_world, K, image_hw)
        T = T[None] if single else T
        K_l = K_l.expand(T.shape[0], 3, 3) if K_l.ndim == 2 else K_l
        pts = self.xyz.T.cpu()
        pairs = [zbuffer_select_reference(pts, T[v], K_l[v], h, w) for v in range(T.shape[0])]
        idx = torch.stack([p[0] for p in pairs]).view(T.shape[0], -1).to(self.device)
        z = (
            torch.stack([p[1] for p in pairs])
            .view(T.shape[0], -1)
            .to(torch.float32)
            .to(self.device)
        )
        out = self._fill(self._gather(idx, z, h, w), fill_holes_reference)
        return _squeeze(out) if single else out

    def _fill(self, r: Readout, fill) -> Readout:
        """``r`` with ``config.hole_fill`` passes of ``fill`` applied (none when 0)."""
        if self.config.hole_fill == 0:
            return r
        r.zhat, r.mask, r.depth, r.filled = fill(r.zhat, r.mask, r.depth, self.config.hole_fill)
        return r

    def _gather(self, idx: torch.Tensor, z: torch.Tensor, h: int, w: int) -> Readout:
        """``idx``/``z`` ``[V, h*w]`` -> Readout with ``zhat`` ``[V, C, h, w]``."""
        V = idx.shape[0]
        hit = idx >= 0
        f = self._feat.index_select(0, idx.clamp(min=0).flatten()).view(V, h * w, -1)
        f = f * hit[..., None].to(f.dtype)
        zhat = f.transpose(1, 2).reshape(V, -1, h, w)
        return Readout(zhat=zhat, mask=hit.view(V, h, w), depth=z.view(V, h, w))

    # ------------------------------------------------------------------ persistence

    def _payload(self) -> dict[str, torch.Tensor]:
        return {
            "xyz": self.xyz.contiguous().cpu(),
            "features": self.features.contiguous().cpu(),
            "block_start": torch.tensor(self._block_start, dtype=torch.int64),
            "block_len": torch.tensor(self._block_len, dtype=torch.int64),
            "block_seen": torch.tensor(self._block_seen, dtype=torch.int64),
        }

    @staticmethod
    def _digest(tensors: dict[str, torch.Tensor]) -> str:
        h = hashlib.sha256()
        for name in sorted(tensors):
            t = tensors[name].contiguous()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the memory (points, features, blocks, config, history) to a safetensors file."""
        from safetensors.torch import save_file

        tensors = self._payload()
        meta = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "config": json.dumps(asdict(self.config)),
            "clock": str(self._clock),
            "growth": json.dumps(self._growth),
            "evicted": str(self._evicted),
            "sha256": self._digest(tensors),
        }
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)  # atomic: a crash mid-write never leaves a half file under `path`

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, codec=None) -> LatentSpatialMemory:
        """Build a memory from a file written by :meth:`save` (its stored config; ``device``
        overrides where it lives)."""
        tensors, meta = _read_file(path)
        try:
            cfg_dict = json.loads(meta["config"])
            known = {f.name for f in fields(MemoryConfig)}
            cfg = MemoryConfig(**{k: v for k, v in cfg_dict.items() if k in known})
        except (KeyError, TypeError, ValueError) as e:
            raise MemoryFileError(f"{path}: bad config metadata: {e}") from None
        if device is not None:
            cfg.device = device
        mem = cls(cfg, codec=codec)
        mem._restore(tensors, meta, path)
        return mem

    def load_state(self, path: str | Path) -> None:
        """Replace this memory's contents with a saved file, which must match its channels,
        stride and feature dtype. On any error the memory is unchanged."""
        tensors, meta = _read_file(path)
        try:
            other = json.loads(meta["config"])
        except (KeyError, ValueError) as e:
            raise MemoryFileError(f"{path}: bad config metadata: {e}") from None
        for key in ("channels", "stride", "feature_dtype"):
            if other.get(key) != getattr(self.config, key):
                raise MemoryFileError(
                    f"{path}: saved memory has {key}={other.get(key)!r}, this memory has "
                    f"{key}={getattr(self.config, key)!r}"
                )
        self._restore(tensors, meta, path)

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, str], path) -> None:
        cfg = self.config
        need = {"xyz", "features", "block_start", "block_len", "block_seen"}
        if set(tensors) != need:
            raise MemoryFileError(
                f"{path}: expected tensors {sorted(need)}, found {sorted(tensors)}"
            )
        if self._digest(tensors) != meta.get("sha256"):
            raise MemoryFileError(f"{path}: checksum mismatch: the file is corrupt")
        xyz, feat = tensors["xyz"], tensors["features"]
        starts, lens, seen = (tensors[k] for k in ("block_start", "block_len", "block_seen"))
        n = xyz.shape[1] if xyz.ndim == 2 else -1
        problems = []
        if xyz.ndim != 2 or xyz.shape[0] != 3 or xyz.dtype != torch.float32:
            problems.append(f"xyz must be [3, N] float32, got {tuple(xyz.shape)} {xyz.dtype}")
        if feat.ndim != 2 or feat.shape != (n, cfg.channels):
            problems.append(f"features must be [{n}, {cfg.channels}], got {tuple(feat.shape)}")
        if feat.dtype != cfg.torch_feature_dtype:
            problems.append(f"features dtype {feat.dtype} != config {cfg.feature_dtype}")
        if not (len(starts) == len(lens) == len(seen)) or int(lens.sum()) != n:
            problems.append("block table does not cover the points")
        elif len(starts) and not torch.equal(starts, torch.cumsum(lens, 0) - lens):
            problems.append("block table is not contiguous")
        if not problems and n and not torch.isfinite(xyz).all():
            problems.append("xyz holds NaN/inf")
        if problems:
            raise MemoryFileError(f"{path}: " + "; ".join(problems))
        try:
            clock = int(meta.get("clock", "0"))
            growth = [int(g) for g in json.loads(meta.get("growth", "[]"))]
            evicted = int(meta.get("evicted", "0"))
        except (TypeError, ValueError) as e:
            raise MemoryFileError(f"{path}: bad history metadata: {e}") from None
        self.clear()
        cap = max(n, self.config.initial_capacity)
        self._xyz = torch.empty((3, cap), dtype=torch.float32, device=self.device)
        self._feat = torch.empty(
            (cap, cfg.channels), dtype=cfg.torch_feature_dtype, device=self.device
        )
        self._xyz[:, :n] = xyz.to(self.device)
        self._feat[:n] = feat.to(self.device)
        self._n = n
        self._block_start, self._block_len = starts.tolist(), lens.tolist()
        self._block_seen = seen.tolist()
        self._clock, self._growth, self._evicted = clock, growth, evicted
        if cfg.merge_policy == "voxel":
            self._rebuild_voxels()


def _squeeze(r: Readout) -> Readout:
    return Readout(
        zhat=r.zhat[0],
        mask=r.mask[0],
        depth=r.depth[0],
        image=None if r.image is None else r.image[0],
        filled=None if r.filled is None else r.filled[0],
        timings_ms=r.timings_ms,
    )


def _read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Open a saved memory; any parse failure becomes a MemoryFileError."""
    from mirage_core.safetensors_io import read_safetensors

    path = Path(path)
    if not path.is_file():
        raise MemoryFileError(f"{path}: no such memory file")
    tensors, meta = read_safetensors(path, MemoryFileError)
    if meta.get("format") != FILE_FORMAT:
        raise MemoryFileError(
            f"{path}: not a Mirage latent memory file (format={meta.get('format')!r})"
        )
    if meta.get("version") != FILE_VERSION:
        raise MemoryFileError(
            f"{path}: unsupported version {meta.get('version')!r} (expected {FILE_VERSION})"
        )
    return tensors, meta


__all__ = [
    "MERGE_POLICIES",
    "DepthError",
    "LatentSpatialMemory",
    "MemoryConfig",
    "MemoryStats",
]
