"""The paper's Figure 5 study: cache-read time and cache footprint, latent memory vs RGB cache.

Protocol (method.md sections 6 and 7). One rollout of ``chunks`` chunks (paper: five) along a
trajectory (default ``loop``) through the simulated PyBullet room (:mod:`mirage_core.sim`):
the sim provides every frame's RGB, exact depth and dynamic/sky mask, so no generator weights
are needed, and both memories see **the same trajectory, depth and masks**. Per chunk ``c``
(:func:`mirage_core.rollout.schedule.plan_chunks`, 8 target latent frames at RGB poses
``4j``), exactly as a rollout does:

1. **Read** the cache at the chunk's 8 target poses in one batched call, timed (device
   synchronised):

   * Mirage: ``LatentSpatialMemory.readout`` (Eq. 5; project + z-buffer + gather at the latent
     grid ``H/16 x W/16``);
   * RGB baseline: ``RGBPointCache.readout`` = z-buffer rasterisation at ``H x W`` then VAE
     encoding of the rendered frames (the split is recorded as ``raster`` / ``encode``).

   ``read_s_per_frame`` = that time / 8.
2. **Write** the chunk's 8 frames (RGB frame ``4j``, its depth and mask) into both caches:
   the latent memory stores the VAE latent of the frame (``fill_empty`` policy, the rollout's
   default; bfloat16 features), the RGB cache stores every admissible pixel (union, uint8
   colour + float32 position). ``cache_bytes`` = the stored bytes after the write;
   ``peak_cache_bytes`` = the maximum over chunks (the caches only grow).

Before chunk 0 both caches hold the input frame (RGB frame 0), and one untimed read warms up
each path. Sizes (``size``): ``"reduced"`` = 128 x 224 with the tiny random-weight Wan2.2 VAE
(CPU friendly), ``"paper"`` = 704 x 1280 with the full Wan2.2 VAE architecture and random
weights (encode time does not depend on weight values; run it on a GPU: on a 2-core CPU one
704 x 1280 encode takes ~30 s). ``device`` defaults to CUDA when available.

Output: a JSON dict (:func:`run_efficiency_study`) and an optional grouped bar plot
(:func:`plot_efficiency`, matplotlib Agg, imported lazily).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.devices import compute_device
from mirage_core.errors import MirageInputError

__all__ = [
    "EFFICIENCY_SIZES",
    "EfficiencyConfig",
    "main_efficiency",
    "plot_efficiency",
    "run_efficiency_study",
]

#: size name -> ((H, W), Wan2.2 VAE config size for codecs.WanVAECodec.from_config)
EFFICIENCY_SIZES: dict[str, tuple[tuple[int, int], str]] = {
    "reduced": ((128, 224), "tiny"),
    "paper": ((704, 1280), "full"),
}
METHODS = ("latent", "rgb_cache")


@dataclass
class EfficiencyConfig:
    """Options of the Figure 5 study (``mirage eval efficiency``)."""

    size: str = "reduced"  # "reduced" (128x224, tiny VAE) or "paper" (704x1280, full VAE)
    chunks: int = 5  # chunks of 8 new latent frames (paper: five)
    trajectory: str = "loop"  # a motion name of mirage_core.trajectory
    image_hw: tuple[int, int] | None = None  # override the size's H x W (multiples of 16)
    device: str | None = None  # None: "cuda" if available, else "cpu"
    fov_deg: float = 60.0  # vertical field of view
    fps: float = 24.0  # scene time per frame (moves the dynamic objects)
    seed: int = 0  # scene layout and VAE weights

    def __post_init__(self) -> None:
        if self.size not in EFFICIENCY_SIZES:
            raise MirageInputError(
                f"size must be one of {list(EFFICIENCY_SIZES)}, got {self.size!r}"
            )
        if self.chunks < 1:
            raise MirageInputError(f"chunks must be >= 1, got {self.chunks}")
        H, W = self.hw
        if H % 16 or W % 16 or H < 16 or W < 16:
            raise MirageInputError(f"image_hw must be positive multiples of 16, got {H}x{W}")

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.image_hw) if self.image_hw else EFFICIENCY_SIZES[self.size][0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_efficiency_study(cfg: EfficiencyConfig, json_path: str | Path | None = None,
                         log=print) -> dict[str, Any]:
    """Run the study (module docstring) and return (optionally write) the result dict.

    Returns:
        ``{"setup": {...}, "methods": {"latent": rec, "rgb_cache": rec}, "ratios": {...}}``
        where each ``rec`` has per-chunk lists (length ``chunks``) ``read_s_per_frame``,
        ``cache_bytes``, ``cache_points``, and ``peak_cache_bytes``,
        ``mean_read_s_per_frame`` (all chunks) and ``mean_read_s_per_frame_after_first``
        (chunks 1.., ``None`` for one chunk); the RGB record adds ``raster_s_per_frame`` and
        ``encode_s_per_frame``. ``ratios``: RGB / latent for the mean read time and the peak
        bytes.
    """
    from mirage_core.codecs import WanVAECodec
    from mirage_core.geometry import intrinsics_from_fov, se3_inverse
    from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation, RGBPointCache
    from mirage_core.memory.rgb_cache import RGBCacheConfig
    from mirage_core.rollout.schedule import TEMPORAL_STRIDE, plan_chunks
    from mirage_core.sim.pybullet_scene import PyBulletScene
    from mirage_core.trajectory import make_trajectory

    t_start = time.perf_counter()
    device = compute_device(cfg.device)
    H, W = cfg.hw
    vae_size = EFFICIENCY_SIZES[cfg.size][1]
    K = intrinsics_from_fov(W, H, cfg.fov_deg)
    n = 1 + TEMPORAL_STRIDE * 8 * cfg.chunks
    traj = make_trajectory(cfg.trajectory, n, fps=cfg.fps, K=K, image_hw=(H, W))
    T_cam_world = se3_inverse(traj.T_world_cam)  # [n, 4, 4]
    plans = plan_chunks(n, 9, cfg.chunks)
    codec = WanVAECodec.from_config(vae_size, seed=cfg.seed, device=device)
    latent = LatentSpatialMemory(MemoryConfig(channels=codec.channels, stride=codec.stride,
                                              device=str(device)))
    rgb = RGBPointCache(codec, RGBCacheConfig(device=str(device)))
    log(f"efficiency study: {cfg.size} {H}x{W}, VAE {codec.label}, {cfg.chunks} chunks of "
        f"{cfg.trajectory!r}, device {device}")

    scene = PyBulletScene("room", seed=cfg.seed, dynamic=True)
    T_sim_world = torch.from_numpy(scene.default_start_pose())

    def observe(i: int) -> Observation:
        f = scene.render(T_sim_world @ traj.T_world_cam[i], K, H, W, time=i / cfg.fps)
        mask = torch.from_numpy(f.dynamic_mask | f.sky_mask)
        depth = torch.from_numpy(np.where(f.sky_mask, 0.0, f.depth).astype(np.float32))
        image = torch.from_numpy(f.rgb).permute(2, 0, 1).contiguous()  # [3, H, W] uint8
        z = codec.encode(image[None].to(device, torch.float32) / 255.0)[0]  # [C, h, w]
        return Observation(depth=depth.to(device), K=K, T_cam_world=T_cam_world[i],
                           mask=mask.to(device), latent=z, image=image.to(device))

    def write(i: int) -> None:
        obs = observe(i)
        latent.update(obs)
        rgb.update(obs)

    recs: dict[str, dict[str, list]] = {
        m: {"read_s_per_frame": [], "cache_bytes": [], "cache_points": []} for m in METHODS
    }
    recs["rgb_cache"].update(raster_s_per_frame=[], encode_s_per_frame=[])
    try:
        write(0)
        for c, plan in enumerate(plans):
            targets = T_cam_world[list(plan.pose_frames)]  # [V, 4, 4]
            V = targets.shape[0]
            if c == 0:  # warm-up, untimed
                latent.readout(targets, K, (H, W))
                rgb.readout(targets, K, (H, W))
                _sync(device)
            t0 = time.perf_counter()
            latent.readout(targets, K, (H, W))
            _sync(device)
            t1 = time.perf_counter()
            r = rgb.readout(targets, K, (H, W))
            _sync(device)
            t2 = time.perf_counter()
            recs["latent"]["read_s_per_frame"].append((t1 - t0) / V)
            recs["rgb_cache"]["read_s_per_frame"].append((t2 - t1) / V)
            recs["rgb_cache"]["raster_s_per_frame"].append(r.timings_ms["rasterize"] / 1e3 / V)
            recs["rgb_cache"]["encode_s_per_frame"].append(r.timings_ms["encode"] / 1e3 / V)
            for i in plan.pose_frames:
                write(i)
            for m, mem in (("latent", latent), ("rgb_cache", rgb)):
                recs[m]["cache_bytes"].append(int(mem.nbytes))
                recs[m]["cache_points"].append(int(mem.num_points))
            log(f"  chunk {c}: read {recs['latent']['read_s_per_frame'][-1] * 1e3:9.2f} ms/frame "
                f"latent | {recs['rgb_cache']['read_s_per_frame'][-1] * 1e3:9.2f} ms/frame RGB; "
                f"cache {latent.nbytes / 2**20:8.3f} MiB latent | "
                f"{rgb.nbytes / 2**20:8.3f} MiB RGB")
    finally:
        scene.close()

    methods: dict[str, dict[str, Any]] = {}
    for m, rec in recs.items():
        reads = rec["read_s_per_frame"]
        methods[m] = {
            **rec,
            "peak_cache_bytes": max(rec["cache_bytes"]),
            "mean_read_s_per_frame": float(np.mean(reads)),
            "mean_read_s_per_frame_after_first": float(np.mean(reads[1:])) if len(reads) > 1
            else None,
        }
    lat, rgbm = methods["latent"], methods["rgb_cache"]
    result = {
        "setup": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "image_hw": [H, W],
            "latent_hw": [H // codec.stride, W // codec.stride],
            "vae": codec.label,
            "vae_parameters": codec.num_parameters(),
            "views_per_chunk": len(plans[0].pose_frames),
            "latent_merge_policy": latent.config.merge_policy,
            "latent_feature_dtype": latent.config.feature_dtype,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "methods": methods,
        "ratios": {
            "read_time_rgb_over_latent": rgbm["mean_read_s_per_frame"]
            / max(lat["mean_read_s_per_frame"], 1e-12),
            "peak_bytes_rgb_over_latent": rgbm["peak_cache_bytes"]
            / max(lat["peak_cache_bytes"], 1),
        },
        "wall_s": time.perf_counter() - t_start,
    }
    log(f"  {'':28s}{'latent':>14s}{'RGB cache':>14s}{'RGB/latent':>12s}")
    log(f"  {'mean read (ms/frame)':28s}{lat['mean_read_s_per_frame'] * 1e3:14.2f}"
        f"{rgbm['mean_read_s_per_frame'] * 1e3:14.2f}"
        f"{result['ratios']['read_time_rgb_over_latent']:11.1f}x")
    log(f"  {'peak cache (MiB)':28s}{lat['peak_cache_bytes'] / 2**20:14.3f}"
        f"{rgbm['peak_cache_bytes'] / 2**20:14.3f}"
        f"{result['ratios']['peak_bytes_rgb_over_latent']:11.1f}x")
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        log(f"wrote {json_path}")
    return result


def plot_efficiency(result: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per chunk: read time per frame (left) and cache size (right), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat, rgbm = result["methods"]["latent"], result["methods"]["rgb_cache"]
    x = np.arange(len(lat["read_s_per_frame"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = (("read_s_per_frame", 1e3, "cache read (ms / frame)"),
              ("cache_bytes", 1 / 2**20, "cache size (MiB)"))
    for ax, (key, scale, label) in zip(axes, panels, strict=True):
        ax.bar(x - 0.2, np.asarray(lat[key]) * scale, 0.4, label="Mirage latent memory")
        ax.bar(x + 0.2, np.asarray(rgbm[key]) * scale, 0.4, label="RGB point cloud")
        ax.set_yscale("log")
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel("chunk")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    s = result["setup"]
    fig.suptitle(f"{s['image_hw'][0]}x{s['image_hw'][1]}, {s['vae']}, {s['device']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main_efficiency(argv: list[str] | None = None) -> int:
    """``mirage eval efficiency [--size reduced|paper] [--chunks 5] [--json F] [--plot F]``."""
    ap = argparse.ArgumentParser(
        prog="mirage eval efficiency",
        description="Figure 5: per-frame cache read time and cache size, latent memory vs "
                    "RGB point-cloud cache, on the simulated room (no weights needed).",
    )
    ap.add_argument("--size", choices=list(EFFICIENCY_SIZES), default="reduced",
                    help="reduced = 128x224 + tiny VAE; paper = 704x1280 + full Wan2.2 VAE "
                         "(random weights; use a GPU)")
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--trajectory", default="loop")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="out/eval/efficiency.json", help="result JSON path")
    ap.add_argument("--plot", default="out/eval/efficiency.png", help="bar plot path ('' = none)")
    a = ap.parse_args(argv)
    cfg = EfficiencyConfig(size=a.size, chunks=a.chunks, trajectory=a.trajectory,
                           device=a.device, seed=a.seed)
    result = run_efficiency_study(cfg, json_path=a.json or None)
    if a.plot:
        print(f"wrote {plot_efficiency(result, a.plot)}")
    return 0
