"""`mirage bench memory`: latent spatial memory vs the RGB point-cloud cache, in one run.

Everything is measured on the same trajectory and the same depth: an analytic box room
(ray-box intersection, exact z-depth) seen along the closed-loop trajectory of
:func:`mirage_core.trajectory.make_trajectory`. Features are random (timing does not depend on
their values); the latent grid is the paper's 44 x 80 (704 x 1280 pixels, stride 16, C = 48).

Figures (all medians over repeated calls, milliseconds unless named otherwise):

* ``readout_ms_per_view``: latent readout (Eq. 5) of one view from caches of 10k ... 4M points
  (caches built with the real ``update`` path, union policy, so they hold exactly N points).
* ``readout_ms_per_view_batched``: the same, reading a chunk of 9 views in one call.
* ``update_ms_per_frame``: one ``update`` (Eq. 4 + merge) per policy on the closed loop.
* ``rgb_raster_ms_per_view``: z-buffer rasterisation of the RGB cache at 704 x 1280, the cache
  built from the same views as the latent cache it is compared with (``matched_views``).
* ``rgb_encode_ms_per_frame``: the full-size Wan2.2 VAE encoder (random weights; time does not
  depend on weights) on one frame; at reduced resolution with ``--quick`` and then scaled by
  the pixel ratio to 704 x 1280 (stated in ``rgb_encode_note``).
* ``speedup_vs_rgb``: (raster + encode) / latent readout, per view, at matched views;
  ``speedup_vs_rgb_raster_only`` leaves the encoder out.
* ``latent_cache_bytes`` / ``rgb_cache_bytes`` / ``memory_ratio_vs_rgb``: the same views stored
  by both (union policy; bfloat16 latent features, uint8 colours, float32 positions).
* ``growth_mib_per_chunk``: mean cache growth per chunk of 9 latent frames over the closed loop
  (after the first view), per merge policy; ``revisit_growth_mib_per_chunk``: the same when the
  loop is flown a second time (an exact revisit).
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mirage_core.geometry import intrinsics_from_fov, latent_intrinsics, se3_inverse
from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation, RGBPointCache
from mirage_core.memory.zbuffer import decode_keys, zbuffer_keys
from mirage_core.trajectory import make_trajectory

PAPER_HW = (704, 1280)
CHUNK = 9  # latent frames per chunk (paper)
ROOM_MIN = (-4.0, -1.6, -3.0)  # OpenCV world of the first camera: -Y is up
ROOM_MAX = (4.0, 1.4, 7.0)


@dataclass
class BenchConfig:
    """What `mirage bench memory` measures."""

    quick: bool = False  # smaller sizes and a reduced-resolution VAE encode (< 1 minute)
    point_counts: tuple[int, ...] = (10_000, 100_000, 1_000_000, 4_000_000)
    repeats: int = 7  # timed calls per figure (median reported)
    chunks: int = 5  # closed-loop length in chunks of 9 latent frames (paper: five chunks)
    rgb_views: int = 9  # views in the matched RGB vs latent comparison
    channels: int = 48
    stride: int = 16
    seed: int = 0

    @classmethod
    def make(cls, quick: bool) -> BenchConfig:
        if quick:
            return cls(quick=True, repeats=3, rgb_views=3)
        return cls()


def room_depth(T_world_cam: torch.Tensor, K: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Exact z-depth ``[h, w]`` of the inside of the axis-aligned box room for a camera with
    pose ``T_world_cam`` ``[4, 4]`` and intrinsics ``K`` of the ``h x w`` grid."""
    from mirage_core.geometry import camera_rays

    rays = camera_rays(K, h, w, dtype=torch.float64)  # [h, w, 3], z = 1
    R, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays @ R.T  # world direction per cell, parameterised by camera z
    lo = torch.tensor(ROOM_MIN, dtype=torch.float64)
    hi = torch.tensor(ROOM_MAX, dtype=torch.float64)
    bound = torch.where(d > 0, hi, lo)
    with torch.no_grad():
        t = (bound - c) / torch.where(d == 0, torch.full_like(d, 1e-12), d)
    t = torch.where(t > 0, t, torch.full_like(t, float("inf")))
    return t.min(dim=-1).values.to(torch.float32)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class _Scene:
    """The trajectory, intrinsics and per-view depth shared by every measurement."""

    def __init__(self, cfg: BenchConfig, num_frames: int) -> None:
        H, W = PAPER_HW
        self.H, self.W = H, W
        self.h, self.w = H // cfg.stride, W // cfg.stride
        self.K = intrinsics_from_fov(W, H, 60.0)
        self.K_l = latent_intrinsics(self.K, (H, W), (self.h, self.w))
        self.traj = make_trajectory(
            "loop", num_frames=num_frames, radius=1.0, length=3.0, look_deg=60.0
        )
        self.T_cam_world = se3_inverse(self.traj.T_world_cam)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.C = cfg.channels

    def observation(self, i: int, pixel_depth: bool = False, image: bool = False) -> Observation:
        T_world_cam = self.traj.T_world_cam[i]
        if pixel_depth:
            depth = room_depth(T_world_cam, self.K, self.H, self.W)
        else:
            depth = room_depth(T_world_cam, self.K_l, self.h, self.w)
        latent = torch.randn(self.C, self.h, self.w, generator=self.gen)
        img = (
            torch.randint(0, 256, (3, self.H, self.W), dtype=torch.uint8, generator=self.gen)
            if image
            else None
        )
        return Observation(
            depth=depth, K=self.K, T_cam_world=self.T_cam_world[i], latent=latent, image=img
        )


def _memory(cfg: BenchConfig, policy: str, capacity: int = 1 << 16) -> LatentSpatialMemory:
    return LatentSpatialMemory(
        MemoryConfig(
            channels=cfg.channels,
            stride=cfg.stride,
            feature_dtype="bfloat16",
            merge_policy=policy,
            initial_capacity=capacity,
        )
    )


def bench_readout(cfg: BenchConfig, log) -> dict:
    """Readout time per view for caches of each size; where the time goes at the largest."""
    counts = [n for n in cfg.point_counts if not cfg.quick or n <= 1_000_000]
    n_max = max(counts)
    cells = (PAPER_HW[0] // cfg.stride) * (PAPER_HW[1] // cfg.stride)
    frames = -(-n_max // cells) + 1
    scene = _Scene(cfg, num_frames=frames)
    mem = _memory(cfg, "union", capacity=n_max + cells)
    single, batched, breakdown = {}, {}, {}
    targets = torch.stack([scene.T_cam_world[(k * frames) // CHUNK] for k in range(CHUNK)])
    i = 0
    hw = (scene.H, scene.W)
    for n in sorted(counts):
        while mem.num_points < n:
            mem.update(scene.observation(i))
            i += 1
        # Trim to exactly n points: keep the first n (a view of the same storage).
        mem._n = n
        per_view = [
            _median_ms(lambda T=T: mem.readout(T, scene.K, hw), cfg.repeats) for T in targets[:3]
        ]
        single[n] = statistics.median(per_view)
        reps = max(1, cfg.repeats // 2)
        batched[n] = _median_ms(lambda: mem.readout(targets, scene.K, hw), reps) / CHUNK
        holes = mem.readout(targets, scene.K, hw).hole_rate
        log(
            f"  readout  N={n:>9,d}: {single[n]:7.2f} ms/view, batched {batched[n]:7.2f} ms/view, "
            f"hole rate {holes:.3f}"
        )
    n = max(counts)
    T0 = targets[0]
    ws = mem._workspace  # the memory's own scratch, as readout() uses it
    keys_ms = _median_ms(
        lambda: zbuffer_keys(mem.xyz, T0, scene.K_l, scene.h, scene.w, ws), cfg.repeats
    )
    keys = zbuffer_keys(mem.xyz, T0, scene.K_l, scene.h, scene.w, ws)
    gather_ms = _median_ms(lambda: mem._gather(*decode_keys(keys), scene.h, scene.w), cfg.repeats)
    breakdown = {"points": n, "project_and_zbuffer_ms": keys_ms, "gather_features_ms": gather_ms}
    return {"single": single, "batched": batched, "breakdown": breakdown}


def bench_policies(cfg: BenchConfig, log) -> dict:
    """Update time and cache growth per chunk on the closed loop, per merge policy."""
    frames = cfg.chunks * CHUNK + 1
    scene = _Scene(cfg, num_frames=frames)
    observations = [scene.observation(i) for i in range(frames)]
    update_ms, growth, revisit = {}, {}, {}
    for policy in ("union", "fill_empty", "voxel"):
        mem = _memory(cfg, policy)
        mem.update(observations[0])
        times, sizes = [], [mem.nbytes]
        for lap in range(2):  # lap 1 re-flies the loop: an exact revisit
            for k in range(cfg.chunks):
                for i in range(1 + k * CHUNK, 1 + (k + 1) * CHUNK):
                    t0 = time.perf_counter()
                    mem.update(observations[i])
                    if lap == 0:
                        times.append((time.perf_counter() - t0) * 1e3)
                sizes.append(mem.nbytes)
        per_chunk = [(b - a) / 2**20 for a, b in itertools.pairwise(sizes)]
        update_ms[policy] = statistics.median(times)
        growth[policy] = {
            "mean": statistics.mean(per_chunk[: cfg.chunks]),
            "per_chunk": per_chunk[: cfg.chunks],
        }
        revisit[policy] = statistics.mean(per_chunk[cfg.chunks :])
        log(
            f"  policy {policy:>10s}: update {update_ms[policy]:6.2f} ms/frame, growth "
            f"{growth[policy]['mean']:.3f} MiB/chunk, revisit {revisit[policy]:.3f} MiB/chunk, "
            f"final {mem.nbytes / 2**20:.2f} MiB"
        )
    return {"update_ms": update_ms, "growth": growth, "revisit": revisit}


def bench_rgb(cfg: BenchConfig, log) -> dict:
    """RGB baseline vs latent memory built from the same views (union policy for both)."""
    from mirage_core.codecs import SpaceToDepthCodec

    V = cfg.rgb_views
    scene = _Scene(cfg, num_frames=max(V, 2) * 4)
    views = [4 * k for k in range(V)]
    # The codec only matters for readout(); rasterisation is timed on its own below.
    rgb = RGBPointCache(SpaceToDepthCodec(stride=cfg.stride))
    lat = _memory(cfg, "union")
    for i in views:
        obs = scene.observation(i, pixel_depth=True, image=True)
        rgb.update(obs)
        lat.update(obs)
    T = scene.T_cam_world[views[len(views) // 2] + 1]
    hw = (scene.H, scene.W)
    reps = max(1, cfg.repeats // 2)
    raster_ms = _median_ms(lambda: rgb.rasterize(T, scene.K, hw), reps)
    latent_ms = _median_ms(lambda: lat.readout(T, scene.K, hw), cfg.repeats)
    log(
        f"  matched {V} views: RGB cache {rgb.num_points:,d} pts {rgb.nbytes / 2**20:.1f} MiB, "
        f"raster {raster_ms:.1f} ms/view; latent {lat.num_points:,d} pts "
        f"{lat.nbytes / 2**20:.2f} MiB, "
        f"readout {latent_ms:.2f} ms/view"
    )
    return {
        "views": V,
        "raster_ms": raster_ms,
        "latent_readout_ms": latent_ms,
        "rgb_points": rgb.num_points,
        "latent_points": lat.num_points,
        "rgb_bytes": rgb.nbytes,
        "latent_bytes": lat.nbytes,
    }


def bench_encode(cfg: BenchConfig, log) -> dict:
    """Full-size Wan2.2 VAE encoder, random weights, one frame."""
    from mirage_core.codecs import WanVAECodec

    t0 = time.perf_counter()
    codec = WanVAECodec.from_config(size="full", seed=cfg.seed)
    build_s = time.perf_counter() - t0
    H, W = (176, 320) if cfg.quick else PAPER_HW
    img = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.quick:
        ms = _median_ms(lambda: codec.encode(img), 1)
    else:  # one 704x1280 call takes ~30 s on 2 cores: time a single call, no warm-up
        t0 = time.perf_counter()
        codec.encode(img)
        ms = (time.perf_counter() - t0) * 1e3
    scale = (PAPER_HW[0] * PAPER_HW[1]) / (H * W)
    note = (
        f"measured at {H}x{W} and scaled by the pixel ratio {scale:.0f}x to 704x1280 (--quick)"
        if scale != 1
        else "measured at 704x1280"
    )
    log(
        f"  Wan2.2 VAE (full size, {codec.num_parameters() / 1e6:.0f}M params, "
        f"built in {build_s:.1f} s): "
        f"encode {ms:.0f} ms/frame at {H}x{W}"
    )
    return {
        "ms_704x1280": ms * scale,
        "measured_ms": ms,
        "measured_hw": [H, W],
        "note": note,
        "params": codec.num_parameters(),
    }


def run_memory_bench(cfg: BenchConfig, json_path: str | Path | None = None, log=print) -> dict:
    """Run every measurement and return (and optionally write) the result dict."""
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    log(
        f"mirage bench memory ({'quick' if cfg.quick else 'full'}), "
        f"{torch.get_num_threads()} threads"
    )
    readout = bench_readout(cfg, log)
    policies = bench_policies(cfg, log)
    rgb = bench_rgb(cfg, log)
    enc = bench_encode(cfg, log)
    rgb_total = rgb["raster_ms"] + enc["ms_704x1280"]
    result = {
        "readout_ms_per_view": {str(k): v for k, v in readout["single"].items()},
        "readout_ms_per_view_batched": {str(k): v for k, v in readout["batched"].items()},
        "readout_breakdown": readout["breakdown"],
        "update_ms_per_frame": policies["update_ms"],
        "rgb_raster_ms_per_view": rgb["raster_ms"],
        "rgb_encode_ms_per_frame": enc["ms_704x1280"],
        "rgb_encode_note": enc["note"],
        "rgb_encode_measured_ms": enc["measured_ms"],
        "rgb_encode_measured_hw": enc["measured_hw"],
        "matched_views": rgb["views"],
        "latent_readout_ms_matched": rgb["latent_readout_ms"],
        "speedup_vs_rgb": rgb_total / rgb["latent_readout_ms"],
        "speedup_vs_rgb_raster_only": rgb["raster_ms"] / rgb["latent_readout_ms"],
        "latent_cache_bytes": rgb["latent_bytes"],
        "rgb_cache_bytes": rgb["rgb_bytes"],
        "latent_cache_points": rgb["latent_points"],
        "rgb_cache_points": rgb["rgb_points"],
        "memory_ratio_vs_rgb": rgb["rgb_bytes"] / rgb["latent_bytes"],
        "growth_mib_per_chunk": {p: g["mean"] for p, g in policies["growth"].items()},
        "growth_mib_per_chunk_detail": {p: g["per_chunk"] for p, g in policies["growth"].items()},
        "revisit_growth_mib_per_chunk": policies["revisit"],
        "setup": {
            "latent_hw": [PAPER_HW[0] // cfg.stride, PAPER_HW[1] // cfg.stride],
            "image_hw": list(PAPER_HW),
            "channels": cfg.channels,
            "feature_dtype": "bfloat16",
            "chunk_latent_frames": CHUNK,
            "quick": cfg.quick,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "device": "cpu",
        },
        "wall_s": time.perf_counter() - t_start,
    }
    log(
        f"speedup vs RGB (raster+encode): {result['speedup_vs_rgb']:.0f}x "
        f"(raster only: {result['speedup_vs_rgb_raster_only']:.1f}x); memory ratio "
        f"{result['memory_ratio_vs_rgb']:.1f}x; wall {result['wall_s']:.1f} s"
    )
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        log(f"wrote {json_path}")
    return result
