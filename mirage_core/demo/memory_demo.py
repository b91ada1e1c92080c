"""Closed-loop latent-memory demo in the PyBullet room (CPU, no learned model).

A camera flies a closed "go out and come back" loop (:func:`mirage_core.trajectory.make_trajectory`
``"loop"``) through the procedural PyBullet room while a ball moves on its own circle. For each
merge policy a :class:`~mirage_core.memory.LatentSpatialMemory` is initialised from the first
view only; then, per frame ``t``, the memory is read out from view ``t`` *before* frame ``t`` is
written (what Mirage conditions generation on), the readout is decoded by the codec and compared
with the ground-truth frame, and finally the ground-truth frame ``t`` is written into the memory.

Writing the *ground-truth* frame stands in for Mirage's re-encoded *generated* frame: no video
model runs here, so this demo measures the memory (geometry, occlusion, merge policy, growth),
not generation quality. The codec is the analytic space-to-depth codec (lossless pixel
rearrangement, not a learned VAE), so a decoded readout shows exactly which stored 4x4 pixel
blocks the memory returns for a view.

Frames and frames of reference:

* Trajectory poses ``T_world_cam_traj[t]`` ``[4, 4]`` live in the first camera's OpenCV frame
  (pose 0 = identity); that frame is the memory's world frame, so the memory gets
  ``T_cam_world = inverse(T_world_cam_traj[t])``.
* The simulator gets ``T_sim_cam(t) = T_sim_cam0 @ T_world_cam_traj[t]`` with
  ``T_sim_cam0 = scene.default_start_pose()`` (PyBullet world, Z up).
* The ball is rendered at scene time ``t / fps``; its pixels (and sky pixels) are masked out of
  every memory write.

Outputs in ``cfg.out_dir``: ``memory_demo.mp4`` (H.264, yuv420p), ``memory_demo.png`` (plots),
``memory_demo.json`` (per-frame records and summary), and ``memory_demo_frame_NNN.png`` stills
(first, middle and last panel rows).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.codecs import make_codec
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.memory import MERGE_POLICIES, LatentSpatialMemory, MemoryConfig, Observation
from mirage_core.memory.depth_downsample import downsample_depth, downsample_mask
from mirage_core.trajectory import make_trajectory

SPACE_TO_DEPTH_LABEL = "analytic space-to-depth codec (lossless, not a learned VAE)"
PSNR_CAP_DB = 100.0  # PSNR reported for identical pixels (8-bit MSE = 0)
CHUNK_FRAMES = 9  # cache growth is reported per chunk of this many frames
_LABEL_BAR = 16  # pixels of the label bar above each panel
_CAPTION_BAR = 16  # pixels of the caption bar below the panel row
_HOLE_RGB = (0, 0, 0)  # colour of empty readout cells in the decoded-readout panels
_BALL_RGB = np.array([255, 40, 40], dtype=np.float32)  # tint of the ball in the mask panel


@dataclass
class MemoryDemoConfig:
    """Settings of :func:`run_memory_demo`. Defaults run in well under a minute on 2 CPU cores."""

    out_dir: str | Path = "out/memory_demo"  # folder for the video, plot, JSON and stills
    height: int = 192  # image height H in pixels (multiple of the codec stride; 16 suits Wan)
    width: int = 320  # image width W in pixels (multiple of the codec stride; 16 suits Wan)
    fov_y_deg: float = 60.0  # vertical field of view of the pinhole camera, degrees
    num_frames: int = 48  # frames on the closed loop (>= 2); the last pose equals the first
    loop_radius: float = 0.6  # m, sideways excursion of the loop (to the left, then right)
    loop_length: float = 1.6  # m, forward depth of the loop, reached at the half-way frame
    loop_look_deg: float = 30.0  # degrees the camera yaws left then right along the loop
    seed: int = 0  # PyBullet room layout (furniture, colours)
    dynamic: bool = True  # add the moving ball (masked out of memory writes)
    policies: tuple[str, ...] = ("union", "fill_empty", "voxel")  # merge policies to compare
    codec: str = "space_to_depth"  # codec name for mirage_core.codecs.make_codec
    fps: float = 10.0  # frame rate: frame t is rendered at scene time t / fps; video fps


def _import_or_explain(module: str, package: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise ImportError(
            f"the memory demo needs {package} (`pip install -e .[demo,test]` or "
            f"`pip install {package}`)"
        ) from e


def _validate(cfg: MemoryDemoConfig, stride: int) -> None:
    """Raise ValueError on a bad config, before anything is rendered."""
    for name in ("height", "width", "num_frames"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if cfg.height % stride or cfg.width % stride:
        raise ValueError(
            f"height x width = {cfg.height} x {cfg.width} must be multiples of the codec stride "
            f"{stride} (codec {cfg.codec!r}); e.g. {cfg.height // stride * stride or stride} x "
            f"{cfg.width // stride * stride or stride}"
        )
    if cfg.num_frames < 2:
        raise ValueError(
            f"num_frames must be >= 2 (a loop needs a start and an end), got {cfg.num_frames}"
        )
    if not (math.isfinite(cfg.fov_y_deg) and 0.0 < cfg.fov_y_deg < 180.0):
        raise ValueError(f"fov_y_deg must be in (0, 180), got {cfg.fov_y_deg!r}")
    if not (math.isfinite(cfg.fps) and cfg.fps > 0):
        raise ValueError(f"fps must be positive, got {cfg.fps!r}")
    policies = tuple(cfg.policies)
    if not policies:
        raise ValueError("policies must name at least one merge policy")
    bad = [p for p in policies if p not in MERGE_POLICIES]
    if bad:
        raise ValueError(f"unknown merge policies {bad}; choose from {', '.join(MERGE_POLICIES)}")
    if len(set(policies)) != len(policies):
        raise ValueError(f"policies contains duplicates: {policies}")


def _psnr_visible(pred_u8: np.ndarray, gt_u8: np.ndarray, mask_px: np.ndarray) -> float | None:
    """8-bit PSNR (dB) over the pixels where ``mask_px`` ``[H, W]`` is True.

    ``pred_u8``/``gt_u8`` are ``[H, W, 3]`` uint8. Returns None when no pixel is visible and
    :data:`PSNR_CAP_DB` when the visible pixels are identical.
    """
    if not mask_px.any():
        return None
    diff = pred_u8[mask_px].astype(np.float64) - gt_u8[mask_px].astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def _depth_rel_err(depth: torch.Tensor, mask: torch.Tensor, gt_depth: torch.Tensor,
                   gt_masked: torch.Tensor) -> float | None:
    """Median ``|d - d_gt| / d_gt`` over cells (all ``[h, w]``) that are visible in the readout,
    have ground-truth depth and are not masked (ball, sky) in the ground-truth frame."""
    sel = mask & (gt_depth > 0) & ~gt_masked
    if not sel.any():
        return None
    return float(((depth[sel] - gt_depth[sel]).abs() / gt_depth[sel]).median())


def _to_u8(img: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8."""
    x = img.detach().to(torch.float32).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


def _labelled(img: np.ndarray, text: str, cv2) -> np.ndarray:
    """Put a black label bar with white ``text`` above an ``[H, W, 3]`` uint8 panel."""
    W = img.shape[1]
    bar = np.zeros((_LABEL_BAR, W, 3), dtype=np.uint8)
    scale = 0.4 if W >= 256 else 0.3
    cv2.putText(bar, text, (3, _LABEL_BAR - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def _panel_row(panels: list[tuple[str, np.ndarray]], caption: str, cv2) -> np.ndarray:
    """Labelled panels side by side over a caption bar; padded to multiples of 16 (H.264)."""
    row = np.concatenate([_labelled(img, label, cv2) for label, img in panels], axis=1)
    cap = np.zeros((_CAPTION_BAR, row.shape[1], 3), dtype=np.uint8)
    scale = 0.4 if row.shape[1] >= 512 else 0.3
    cv2.putText(cap, caption, (3, _CAPTION_BAR - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (220, 220, 220), 1, cv2.LINE_AA)
    row = np.concatenate([row, cap], axis=0)
    ph, pw = (-row.shape[0]) % 16, (-row.shape[1]) % 16
    if ph or pw:
        row = np.pad(row, ((0, ph), (0, pw), (0, 0)))
    return row


def _mask_panel(mask_px: np.ndarray, dynamic_px: np.ndarray) -> np.ndarray:
    """``[H, W]`` visibility (white = memory hit, black = hole), ball pixels tinted red."""
    img = np.repeat(mask_px[..., None].astype(np.float32) * 255.0, 3, axis=2)
    img[dynamic_px] = 0.5 * img[dynamic_px] + 0.5 * _BALL_RGB
    return img.round().astype(np.uint8)


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary of one policy's per-frame records (see :func:`run_memory_demo`)."""
    mib = [r["mib"] for r in records]
    growth = []
    for start in range(0, len(records), CHUNK_FRAMES):
        end = min(start + CHUNK_FRAMES, len(records)) - 1
        growth.append(mib[end] - (mib[start - 1] if start > 0 else 0.0))
    later = records[1:]  # frame 0 is the initialisation view itself
    last, first = records[-1], records[0]
    return {
        "final_points": last["points"],
        "final_mib": last["mib"],
        "mean_hole_rate": _mean([r["hole_rate"] for r in later]),
        "mean_psnr_visible": _mean([r["psnr_visible"] for r in later]),
        "mean_depth_rel_err": _mean([r["depth_rel_err"] for r in later]),
        "growth_mib_per_chunk": growth,
        "first_view": {
            "hole_rate": first["hole_rate"],
            "psnr_visible": first["psnr_visible"],
            "depth_rel_err": first["depth_rel_err"],
        },
        "return_to_start": {
            "frame": last["frame"],
            "hole_rate": last["hole_rate"],
            "psnr_visible": last["psnr_visible"],
            "depth_rel_err": last["depth_rel_err"],
        },
        "mean_readout_ms": _mean([r["readout_ms"] for r in records]),
        "mean_update_ms": _mean([r["update_ms"] for r in later]),
    }


def _plot(path: Path, frames: dict[str, list[dict[str, Any]]], title: str) -> None:
    """Three panels over frame index: cache MiB, hole rate, PSNR on visible cells."""
    matplotlib = _import_or_explain("matplotlib", "matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    specs = [
        ("mib", "cache size (MiB)", "memory size after writing frame t"),
        ("hole_rate", "hole rate (1 - mean mask)", "readout holes at view t (before writing t)"),
        ("psnr_visible", "PSNR on visible cells (dB)", "decoded readout vs ground truth"),
    ]
    capped: set[int] = set()
    for ax, (key, ylabel, sub) in zip(axes, specs, strict=True):
        for policy, recs in frames.items():
            # identical readouts (PSNR_CAP_DB, e.g. frame 0) would flatten the PSNR axis
            keep = [r for r in recs if r[key] is not None
                    and not (key == "psnr_visible" and r[key] >= PSNR_CAP_DB)]
            if key == "psnr_visible":
                capped |= {r["frame"] for r in recs if r[key] is not None and r[key] >= PSNR_CAP_DB}
            ax.plot([r["frame"] for r in keep], [r[key] for r in keep], marker=".", label=policy)
        ax.set_xlabel("frame t (last frame = first view again)")
        ax.set_ylabel(ylabel)
        ax.set_title(sub, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].set_ylim(bottom=0)
    if capped:
        listed = ", ".join(str(t) for t in sorted(capped))
        axes[2].text(0.02, 0.45, f"not drawn: frame {listed} (readout identical to ground truth)",
                     transform=axes[2].transAxes, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_memory_demo(cfg: MemoryDemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the closed-loop memory demo and write its video, plot, JSON and stills.

    Images are ``H x W = cfg.height x cfg.width``; with the space-to-depth codec (stride 4) the
    latents are ``[48, H/4, W/4]`` and every readout is ``zhat`` ``[48, H/4, W/4]`` with a
    visibility mask ``[H/4, W/4]``, decoded back to ``[3, H, W]``.

    Per policy and frame ``t`` (``0 .. num_frames - 1``) the JSON records: ``frame``,
    ``time_s``, ``points`` and ``mib`` (cache after writing frame ``t``; frame 0 is the
    initialisation), ``added`` (points stored by that write), ``masked_fraction`` (fraction of
    latent cells of frame ``t`` masked out of the write: ball or sky), ``hole_rate``
    (``1 - mean(mask)`` of the readout at view ``t`` taken before writing ``t``; at ``t = 0``
    it is taken right after the initialisation, from the same view), ``psnr_visible`` (8-bit
    PSNR of the decoded readout vs the ground-truth frame over the pixels of visible cells, i.e.
    the mask upsampled by the stride; ``None`` with no visible cell; :data:`PSNR_CAP_DB` when
    identical), ``depth_rel_err`` (median relative error of the readout depth vs the
    ground-truth depth at latent resolution, over visible cells not on the ball: a check of the
    geometry), ``readout_ms`` and ``update_ms`` (frame 0: the initialisation).

    Summary per policy: ``final_points``, ``final_mib``, ``mean_hole_rate``,
    ``mean_psnr_visible`` and ``mean_depth_rel_err`` (over frames ``1 .. N-1``),
    ``growth_mib_per_chunk`` (MiB added in each chunk of :data:`CHUNK_FRAMES` frames, the first
    chunk including the initialisation), ``first_view`` and ``return_to_start`` (hole rate, PSNR
    and depth error at frames 0 and ``N-1``; the loop's last pose is the first pose, so
    ``return_to_start`` reads the memory back from the start view after the whole loop),
    ``mean_readout_ms``, ``mean_update_ms``.

    Args:
        cfg: a :class:`MemoryDemoConfig` (defaults when None).
        progress: show a tqdm progress bar.
    Returns:
        dict with ``config``, ``codec``, ``masked_fraction_first_view`` (fraction of latent
        cells masked in frame 0: ball or sky), ``frames`` (policy -> list of per-frame
        records), ``summary`` (policy -> summary), ``video_policies``, ``runtime_s`` and
        ``paths`` (``video``, ``plot``, ``json``, ``stills``). The JSON file holds the same.
    Raises:
        ValueError: bad config, e.g. height/width not multiples of the codec stride (before
            anything is rendered).
        ImportError: PyBullet (message from :mod:`mirage_core.sim`), matplotlib, imageio with
            ffmpeg, or OpenCV missing.
    """
    cfg = cfg or MemoryDemoConfig()
    t_start = time.perf_counter()
    codec = make_codec(cfg.codec)
    _validate(cfg, codec.stride)
    cv2 = _import_or_explain("cv2", "opencv-python-headless")
    iio = _import_or_explain("imageio.v2", "imageio")
    _import_or_explain("imageio_ffmpeg", "imageio-ffmpeg")
    from tqdm.auto import tqdm

    from mirage_core.sim import PyBulletScene  # raises the sim's ImportError without pybullet

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec_label = SPACE_TO_DEPTH_LABEL if codec.name == "space_to_depth" else codec.label
    policies = tuple(cfg.policies)
    H, W, N, s = cfg.height, cfg.width, cfg.num_frames, codec.stride
    h, w = H // s, W // s
    K = intrinsics_from_fov(W, H, cfg.fov_y_deg)  # [3, 3] float64 pixel intrinsics
    traj = make_trajectory(
        "loop", N, fps=cfg.fps, radius=cfg.loop_radius, length=cfg.loop_length,
        look_deg=cfg.loop_look_deg,
    )
    T_world_cam = traj.T_world_cam  # [N, 4, 4] float64, memory world = first camera
    T_cam_world = traj.T_cam_world  # [N, 4, 4]
    video_policy = "fill_empty" if "fill_empty" in policies else policies[0]
    extra_policy = "union" if "union" in policies and video_policy != "union" else None

    bar = tqdm(total=N * (1 + len(policies)), desc="memory demo", disable=not progress)
    scene = PyBulletScene(preset="room", seed=cfg.seed, dynamic=cfg.dynamic)
    try:
        # ---------------------------------------------------------------- render + encode
        T_sim_cam0 = torch.as_tensor(scene.default_start_pose(), dtype=torch.float64)
        gt_rgb: list[np.ndarray] = []  # [H, W, 3] uint8 per frame
        gt_depth_l: list[torch.Tensor] = []  # [h, w] latent-resolution depth (0 = none)
        gt_masked_l: list[torch.Tensor] = []  # [h, w] bool, cells touching the ball or sky
        dyn_px: list[np.ndarray] = []  # [H, W] bool, ball pixels
        obs: list[Observation] = []
        bar.set_postfix_str("render")
        for t in range(N):
            T_sim_cam = T_sim_cam0 @ T_world_cam[t]
            fr = scene.render(T_sim_cam, K, H, W, time=t / cfg.fps)
            img = torch.from_numpy(fr.rgb).permute(2, 0, 1).to(torch.float32) / 255.0
            latent = codec.encode(img[None])[0]  # [C, h, w]
            depth_np = np.where(np.isfinite(fr.depth), fr.depth, 0.0).astype(np.float32)
            depth = torch.from_numpy(depth_np)  # [H, W], 0 where nothing was hit
            mask = torch.from_numpy(fr.dynamic_mask | fr.sky_mask)  # [H, W] bool
            obs.append(Observation(depth=depth, K=K, T_cam_world=T_cam_world[t], mask=mask,
                                   latent=latent))
            gt_rgb.append(fr.rgb)
            gt_depth_l.append(downsample_depth(depth, (h, w), "bilinear"))
            gt_masked_l.append(downsample_mask(mask, (h, w)))
            dyn_px.append(fr.dynamic_mask)
            bar.update(1)
    finally:
        scene.close()

    # ---------------------------------------------------------------- memories
    frames: dict[str, list[dict[str, Any]]] = {}
    video_imgs: dict[str, list[np.ndarray]] = {p: [] for p in (video_policy, extra_policy) if p}
    video_masks: list[np.ndarray] = []
    try:
        for policy in policies:
            bar.set_postfix_str(policy)
            mem = LatentSpatialMemory(
                MemoryConfig(channels=codec.channels, stride=s, feature_dtype="float32",
                             merge_policy=policy, invalid_depth="mask"),
            )
            recs: list[dict[str, Any]] = []
            t0 = time.perf_counter()
            res = mem.initialize(obs[0])
            init_ms = (time.perf_counter() - t0) * 1e3
            for t in range(N):
                t0 = time.perf_counter()
                ro = mem.readout(T_cam_world[t], K, (H, W))  # zhat [C, h, w], mask [h, w]
                readout_ms = (time.perf_counter() - t0) * 1e3
                decoded = codec.decode(ro.zhat[None])[0]  # [3, H, W]
                pred = _to_u8(decoded)
                mask_px = ro.mask.cpu().numpy().repeat(s, axis=0).repeat(s, axis=1)  # [H, W]
                psnr = _psnr_visible(pred, gt_rgb[t], mask_px)
                hole = ro.hole_rate
                depth_err = _depth_rel_err(ro.depth, ro.mask, gt_depth_l[t], gt_masked_l[t])
                if t > 0:  # frame 0 was written by the initialisation
                    t0 = time.perf_counter()
                    res = mem.update(obs[t])
                    update_ms = (time.perf_counter() - t0) * 1e3
                else:
                    update_ms = init_ms
                recs.append({
                    "frame": t,
                    "time_s": t / cfg.fps,
                    "points": mem.num_points,
                    "mib": mem.nbytes / 2**20,
                    "added": res.added,
                    "hole_rate": hole,
                    "masked_fraction": float(gt_masked_l[t].float().mean()),
                    "psnr_visible": psnr,
                    "depth_rel_err": depth_err,
                    "readout_ms": readout_ms,
                    "update_ms": update_ms,
                })
                if policy in video_imgs:
                    shown = pred.copy()
                    shown[~mask_px] = _HOLE_RGB
                    video_imgs[policy].append(shown)
                    if policy == video_policy:
                        video_masks.append(mask_px)
                bar.update(1)
            frames[policy] = recs
    finally:
        bar.close()

    summary = {p: _summarise(r) for p, r in frames.items()}
    first_mask = obs[0].mask
    masked_frac = float(
        torch.nn.functional.adaptive_max_pool2d(first_mask[None, None].float(), (h, w)).mean()
    )

    # ---------------------------------------------------------------- video + stills
    video_path = out_dir / "memory_demo.mp4"
    still_ids = sorted({0, N // 2, N - 1})
    stills: list[str] = []
    writer = iio.get_writer(
        str(video_path), format="FFMPEG", mode="I", fps=cfg.fps, codec="libx264",
        pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error",
    )
    try:
        for t in range(N):
            panels = [
                ("ground truth", gt_rgb[t]),
                (f"decoded readout ({video_policy})", video_imgs[video_policy][t]),
                ("visibility mask (white=hit, red=ball)", _mask_panel(video_masks[t], dyn_px[t])),
            ]
            if extra_policy:
                panels.append((f"decoded readout ({extra_policy})", video_imgs[extra_policy][t]))
            caption = f"frame {t}/{N - 1}  t={t / cfg.fps:.1f}s  |  {codec_label}"
            row = _panel_row(panels, caption, cv2)
            writer.append_data(row)
            if t in still_ids:
                p = out_dir / f"memory_demo_frame_{t:03d}.png"
                iio.imwrite(p, row)
                stills.append(str(p))
    finally:
        writer.close()

    # ---------------------------------------------------------------- plot + JSON
    plot_path = out_dir / "memory_demo.png"
    title = (f"Latent spatial memory on a closed loop ({N} frames, {H}x{W}, latent {h}x{w}, "
             f"PyBullet room, moving ball masked) | {codec_label}")
    _plot(plot_path, frames, title)

    json_path = out_dir / "memory_demo.json"
    config = asdict(cfg)
    config["out_dir"] = str(cfg.out_dir)
    config["policies"] = list(policies)
    result: dict[str, Any] = {
        "config": config,
        "codec": codec_label,
        "latent_hw": [h, w],
        "chunk_frames": CHUNK_FRAMES,
        "psnr_cap_db": PSNR_CAP_DB,
        "masked_fraction_first_view": masked_frac,
        "video_policies": [p for p in (video_policy, extra_policy) if p],
        "frames": frames,
        "summary": summary,
        "paths": {"video": str(video_path), "plot": str(plot_path), "json": str(json_path),
                  "stills": stills},
        "runtime_s": time.perf_counter() - t_start,
    }
    json_path.write_text(json.dumps(result, indent=2))
    return result
