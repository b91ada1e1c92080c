"""Closed-loop consistency and novel-view metrics (method.md section 6).

**Closed-loop protocol** (ours; no public repository documents the paper's, so it is fixed
here and in ``docs/evaluation.md``):

1. *Clips.* Each test clip gives an input image and a camera trajectory. For RealEstate10K
   the clip's frames and poses (``mirage_core.trajectory_io.read_trajectory``, made relative
   to the first frame); without data, the ``loop`` motion of :mod:`mirage_core.trajectory`.
2. *Return to the start.* The trajectory must end at its first pose. ``loop`` does so by
   construction (last pose = identity exactly). A clip's own trajectory is made closed by
   :func:`mirror_trajectory`: its first ``m`` poses forward, then the same poses backwards
   (``0 .. m-1, m-2 .. 0``: ``2m - 1`` poses), with ``m`` chosen so that ``2m - 1 = 1 + 32
   n`` for ``n`` chunks (``m = 1 + 16 n``).
3. *Generation.* ``mirage rollout`` (or any model writing the same directory layout) at the
   generation resolution ``H x W`` (704 x 1280 for Wan2.2; the input image resized/cropped to
   it beforehand, so the rollout's frame 0 *is* the input at that resolution).
4. *Comparison.* The **last generated frame** (frame ``N - 1``, whose pose equals frame 0's)
   against the **input frame** (frame 0 of the rollout directory), both ``H x W`` uint8 RGB
   -> ``[0, 1]``. Before comparing, the poses are checked: translation distance <=
   ``pose_tol_m`` and rotation angle <= ``pose_tol_deg`` between the first and last camera,
   else the clip is rejected with an error (it is not a closed loop).
5. *Metrics* per clip: PSNR (dB, ``+inf`` when identical), SSIM (11 x 11 Gaussian, 'valid',
   see :mod:`mirage_core.eval.image_metrics`) and LPIPS (``null`` with a reason when no
   LPIPS weights are given; :mod:`mirage_core.eval.lpips`). Reported: per-clip values and the
   mean over clips (PSNR mean over finite values; the count of infinite PSNRs is reported).

**Novel-view protocol** (:func:`novel_view_eval`): held-out ground-truth frames of a clip (not
shown to the model) are compared with the generated frames *at the same indices* (same poses),
at the generation resolution; same metrics. The ground truth must already be at ``H x W``.

JSON output: non-finite floats are written as the strings ``"inf"`` / ``"nan"``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.argparsing import IntermixedArgumentParser
from mirage_core.errors import MirageInputError
from mirage_core.eval.image_metrics import psnr, ssim, uint8_to_float
from mirage_core.eval.worldscore import read_rollout_dir
from mirage_core.trajectory import Trajectory

__all__ = [
    "ClosedLoopConfig",
    "closed_loop_eval",
    "closed_loop_eval_fn",
    "frame_metrics",
    "main_closed_loop",
    "main_novel_view",
    "mirror_trajectory",
    "novel_view_eval",
    "write_json",
]


@dataclass
class ClosedLoopConfig:
    """Options of the closed-loop and novel-view evaluations."""

    pose_tol_m: float = 1e-3  # max distance between first and last camera centre (metres)
    pose_tol_deg: float = 0.1  # max rotation angle between first and last camera (degrees)
    lpips_weights: str | None = None  # LPIPS weights file; None: LPIPS reported as null
    lpips_net: str = "vgg"  # "vgg" or "alex" (must match the weights)
    device: str = "cpu"


def mirror_trajectory(traj: Trajectory, num_forward: int | None = None) -> Trajectory:
    """Close a trajectory: poses ``0 .. m-1`` then ``m-2 .. 0`` (``2m - 1`` poses).

    Args:
        traj: any trajectory with ``>= 2`` poses; ``T_world_cam`` ``[N, 4, 4]``.
        num_forward: ``m``, poses taken forward (default: all, ``m = N``).
    Returns:
        A trajectory whose last pose equals its first; timestamps continue at the clip's mean
        frame interval; a shared ``K`` is kept (per-frame ``K`` is mirrored too).
    """
    n = len(traj)
    m = n if num_forward is None else int(num_forward)
    if not 2 <= m <= n:
        raise MirageInputError(f"num_forward must be in [2, {n}], got {num_forward}")
    idx = list(range(m)) + list(range(m - 2, -1, -1))
    T = traj.T_world_cam[idx]
    dt = float(traj.timestamps[m - 1] - traj.timestamps[0]) / (m - 1)
    ts = traj.timestamps[0] + dt * torch.arange(len(idx), dtype=torch.float64)
    K = traj.K[idx] if traj.K is not None and traj.K.ndim == 3 else traj.K
    return Trajectory(T, ts, K, traj.image_hw)


_LPIPS_CACHE: dict[tuple[str, str, str], Any] = {}


def _lpips(a: torch.Tensor, b: torch.Tensor, cfg: ClosedLoopConfig) -> tuple[list | None, str]:
    """LPIPS per image of ``a``, ``b`` ``[N, 3, H, W]`` in ``[0, 1]``, or ``(None, reason)``."""
    if cfg.lpips_weights is None:
        return None, "no LPIPS weights given (--lpips-weights); LPIPS not computed"
    from mirage_core.eval.lpips import LPIPS

    key = (cfg.lpips_net, str(cfg.lpips_weights), cfg.device)
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = LPIPS.from_file(cfg.lpips_weights, net=cfg.lpips_net).to(cfg.device)
    net = _LPIPS_CACHE[key]
    with torch.no_grad():
        d = net(a.to(cfg.device, torch.float32), b.to(cfg.device, torch.float32))
    return d.cpu().double().tolist(), f"LPIPS-{cfg.lpips_net} from {cfg.lpips_weights}"


def frame_metrics(generated: np.ndarray, reference: np.ndarray,
                  cfg: ClosedLoopConfig | None = None) -> dict[str, Any]:
    """PSNR / SSIM / LPIPS of uint8 frames ``[N, H, W, 3]`` (or one ``[H, W, 3]``) pairs.

    Returns:
        ``{"psnr": [N], "ssim": [N], "lpips": [N] | None, "lpips_note": str}`` (python floats).
    """
    cfg = cfg or ClosedLoopConfig()
    g, r = np.array(generated, copy=True), np.array(reference, copy=True)  # writable
    if g.ndim == 3:
        g, r = g[None], r[None]
    if g.shape != r.shape:
        raise MirageInputError(
            f"generated {g.shape} and reference {r.shape} frames differ in shape; compare at the "
            "generation resolution (resize/crop the reference first)"
        )
    a, b = uint8_to_float(g), uint8_to_float(r)  # [N, 3, H, W] float64
    lp, note = _lpips(a, b, cfg)
    return {"psnr": psnr(a, b).tolist(), "ssim": ssim(a, b).tolist(), "lpips": lp,
            "lpips_note": note}


def _pose_gap(T0: np.ndarray, T1: np.ndarray) -> tuple[float, float]:
    """(translation distance, rotation angle in degrees) between two ``[4, 4]`` poses."""
    dt = float(np.linalg.norm(T0[:3, 3] - T1[:3, 3]))
    R = T0[:3, :3].T @ T1[:3, :3]
    ang = math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))
    return dt, ang


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    ps = [x for r in records for x in r["psnr"]]
    finite = [x for x in ps if math.isfinite(x)]
    lp = [x for r in records for x in (r["lpips"] or [])]
    return {
        "count": len(ps),
        "psnr_mean": float(np.mean(finite)) if finite else (math.inf if ps else None),
        "psnr_infinite": len(ps) - len(finite),
        "ssim_mean": float(np.mean([x for r in records for x in r["ssim"]])) if ps else None,
        "lpips_mean": float(np.mean(lp)) if lp and len(lp) == len(ps) else None,
        "lpips_note": records[0]["lpips_note"] if records else None,
    }


def closed_loop_eval(rollout_dirs: Sequence[str | Path],
                     cfg: ClosedLoopConfig | None = None) -> dict[str, Any]:
    """Closed-loop metrics (protocol in the module docstring) over rollout directories.

    Args:
        rollout_dirs: ``mirage rollout`` output directories, one per clip.
        cfg: tolerances and LPIPS options.
    Returns:
        ``{"protocol": "closed_loop", "clips": [{"rollout", "compared_frames": [0, N-1],
        "image_hw", "pose_gap_m", "pose_gap_deg", "psnr", "ssim", "lpips"}...], "mean": {...}}``
        (metric values per clip are one-element lists).
    Raises:
        MirageInputError: a directory is not a complete rollout, has a single frame, or its
            last pose is not its first within the tolerances.
    """
    cfg = cfg or ClosedLoopConfig()
    if not rollout_dirs:
        raise MirageInputError("closed_loop_eval needs at least one rollout directory")
    clips = []
    for d in rollout_dirs:
        r = read_rollout_dir(d)
        if len(r) < 2:
            raise MirageInputError(f"{d}: a closed loop needs >= 2 frames, got {len(r)}")
        gap_m, gap_deg = _pose_gap(r.T_world_cam[0], r.T_world_cam[-1])
        if gap_m > cfg.pose_tol_m or gap_deg > cfg.pose_tol_deg:
            raise MirageInputError(
                f"{d}: not a closed loop: the last camera is {gap_m:.4g} m / {gap_deg:.4g} deg "
                f"from the first (tolerance {cfg.pose_tol_m} m / {cfg.pose_tol_deg} deg); use the "
                "'loop' motion or mirror_trajectory()"
            )
        m = frame_metrics(r.load_frame(-1), r.load_frame(0), cfg)
        clips.append({"rollout": str(r.root), "compared_frames": [0, len(r) - 1],
                      "image_hw": list(r.image_hw), "pose_gap_m": gap_m,
                      "pose_gap_deg": gap_deg, **m})
    return {"protocol": "closed_loop", "clips": clips, "mean": _summary(clips)}


def closed_loop_eval_fn(rollout_fn: Callable[[Any, Path], Any], clips: Sequence[Any],
                        out_root: str | Path, cfg: ClosedLoopConfig | None = None
                        ) -> dict[str, Any]:
    """Run ``rollout_fn(clip, out_dir)`` for every clip (it must write a rollout directory at
    ``out_dir``, e.g. via ``run_rollout_job``), then :func:`closed_loop_eval` over them.
    Clip ``k`` is written to ``out_root/clip_{k:03d}``."""
    out_root = Path(out_root)
    dirs = []
    for k, clip in enumerate(clips):
        d = out_root / f"clip_{k:03d}"
        rollout_fn(clip, d)
        dirs.append(d)
    return closed_loop_eval(dirs, cfg)


def _load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def novel_view_eval(generated_dir: str | Path,
                    gt_frames: Mapping[int, str | Path | np.ndarray] | str | Path,
                    cfg: ClosedLoopConfig | None = None) -> dict[str, Any]:
    """Novel-view metrics: generated frames vs held-out ground truth at the same indices.

    Args:
        generated_dir: a rollout directory.
        gt_frames: ``{rollout frame index: PNG path or uint8 [H, W, 3]}``, or a directory of
            PNGs named ``NNNNN.png`` by rollout frame index.
        cfg: LPIPS options.
    Returns:
        ``{"protocol": "novel_view", "rollout", "frames": [indices], "psnr": [...],
        "ssim": [...], "lpips": [...] | None, "mean": {...}}``.
    Raises:
        MirageInputError: no ground truth, an index outside the rollout, or a size mismatch.
    """
    cfg = cfg or ClosedLoopConfig()
    r = read_rollout_dir(generated_dir)
    if isinstance(gt_frames, (str, Path)):
        gdir = Path(gt_frames)
        if not gdir.is_dir():
            raise MirageInputError(f"ground-truth directory {str(gdir)!r} does not exist")
        items: dict[int, Any] = {}
        for p in sorted(gdir.glob("*.png")):
            if not p.stem.isdigit():
                raise MirageInputError(f"{p}: ground-truth PNGs must be named by frame index")
            items[int(p.stem)] = p
    else:
        items = {int(k): v for k, v in gt_frames.items()}
    if not items:
        raise MirageInputError("novel_view_eval: no ground-truth frames given")
    idx = sorted(items)
    bad = [i for i in idx if not 0 <= i < len(r)]
    if bad:
        raise MirageInputError(f"ground-truth frame indices {bad} are outside the rollout's "
                               f"0 .. {len(r) - 1}")
    gt = np.stack([_load_png(Path(items[i])) if isinstance(items[i], (str, Path))
                   else np.asarray(items[i]) for i in idx])
    gen = np.stack([r.load_frame(i) for i in idx])
    m = frame_metrics(gen, gt, cfg)
    rec = {"protocol": "novel_view", "rollout": str(r.root), "frames": idx, **m}
    rec["mean"] = _summary([m])
    return rec


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write ``result`` as strict JSON (non-finite floats as strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False))
    return path


def _common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--lpips-weights", default=None,
                    help="LPIPS weights: a directory with the torchvision backbone + lpips v0.1 "
                         "linear file, or one packed file (docs/evaluation.md section 4); "
                         "default: LPIPS = null")
    ap.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the result here")


def _print_mean(result: dict[str, Any]) -> None:
    m = result["mean"]
    lp = "null" if m["lpips_mean"] is None else f"{m['lpips_mean']:.4f}"
    print(f"{result['protocol']}: {m['count']} pair(s), PSNR {m['psnr_mean']} dB "
          f"({m['psnr_infinite']} infinite), SSIM {m['ssim_mean']:.4f}, LPIPS {lp}")


def closed_loop_parser() -> IntermixedArgumentParser:
    """The parser of ``mirage eval closed-loop`` (options may sit between the directories)."""
    ap = IntermixedArgumentParser(
        prog="mirage eval closed-loop",
        description="Closed-loop consistency: last generated frame vs input frame of rollouts "
                    "whose trajectory returns to the start (protocol: docs/evaluation.md).",
    )
    ap.add_argument("rollout_dirs", nargs="+")
    ap.add_argument("--pose-tol-m", type=float, default=ClosedLoopConfig.pose_tol_m)
    ap.add_argument("--pose-tol-deg", type=float, default=ClosedLoopConfig.pose_tol_deg)
    _common_args(ap)
    return ap


def main_closed_loop(argv: list[str] | None = None) -> int:
    """``mirage eval closed-loop ROLLOUT_DIR... [--json F] [--lpips-weights F]``."""
    a = closed_loop_parser().parse_args(argv)
    cfg = ClosedLoopConfig(a.pose_tol_m, a.pose_tol_deg, a.lpips_weights, a.lpips_net, a.device)
    result = closed_loop_eval(a.rollout_dirs, cfg)
    _print_mean(result)
    if a.json:
        print(f"wrote {write_json(result, a.json)}")
    return 0


def main_novel_view(argv: list[str] | None = None) -> int:
    """``mirage eval novel-view ROLLOUT_DIR GT_DIR [--json F] [--lpips-weights F]``."""
    ap = argparse.ArgumentParser(
        prog="mirage eval novel-view",
        description="Novel-view metrics: generated frames vs held-out ground-truth PNGs named "
                    "by rollout frame index (NNNNN.png), at the generation resolution.",
    )
    ap.add_argument("rollout_dir")
    ap.add_argument("gt_dir")
    _common_args(ap)
    a = ap.parse_args(argv)
    cfg = ClosedLoopConfig(lpips_weights=a.lpips_weights, lpips_net=a.lpips_net,
                           device=a.device)
    result = novel_view_eval(a.rollout_dir, a.gt_dir, cfg)
    _print_mean(result)
    if a.json:
        print(f"wrote {write_json(result, a.json)}")
    return 0
