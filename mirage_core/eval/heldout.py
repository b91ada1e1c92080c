"""What the memory buys, measured on held-out procedural rooms (issue 12's ablation).

``mirage eval heldout`` rolls a trained model out on rooms training never saw (the held-out
split of ``mirage data synth``: scene seeds in ``[1e9, 1e9 + 1e6)``, docs/data.md) along
their own revisiting camera paths, once per variant, and scores the **revisit frames**
against the simulator's ground truth:

- ``mirage``: latent memory (the method);
- ``rgb_cache``: the RGB point-cloud baseline (rasterise, then encode);
- ``no_memory``: the side branch skipped;
- ``readout``: the latent memory's readout of the ``mirage`` run itself, decoded with no
  generation (what pasting the memory would give; holes decode from zero latents).

Every variant starts from the same ground-truth frame 0, gets ground-truth depth and masks
(dynamic objects, sky) for its memory writes, and the same noise seed. Revisit frames are the
key frames (RGB frames ``4 j``) of the last quarter of the clip, where revisiting paths come
back to what frame 0 saw. Metrics: PSNR and SSIM (``eval.image_metrics``) over whole frames,
and PSNR over the pixels the memory covers (the ``mirage`` run's readout visibility, the same
pixels for every variant), plus the rollout's time per chunk. LPIPS is computed when
``--lpips-weights`` is given (local files; docs/evaluation.md), else reported as ``null``.

Needs PyBullet (``pip install -e .[demo]``) for the ground truth; runs on the CPU.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.errors import MirageInputError
from mirage_core.generator.sampler import SamplerConfig
from mirage_core.memory.hole_fill import is_pass_count

__all__ = ["VARIANTS", "HeldoutCase", "HeldoutConfig", "heldout_case", "main_heldout",
           "run_heldout_ablation"]

#: the compared variants (module docstring)
VARIANTS = ("mirage", "rgb_cache", "no_memory", "readout")


@dataclass
class HeldoutCase:
    """One held-out room and path, with its ground truth.

    Attributes:
        key: the clip's key in the held-out split (``synth-heldout/<seed>/<i>``).
        image: ``[H, W, 3]`` uint8 frame 0 (the rollout's input).
        trajectory: the path's ``F`` poses relative to frame 0, with ``K``.
        gt: ``[F, H, W, 3]`` uint8 ground-truth frames.
        depth: ``[F, H, W]`` float32 ground-truth z-depth in metres (0 = sky).
        mask: ``[F, H, W]`` bool, dynamic objects or sky.
        family: the camera path family.
    """

    key: str
    image: np.ndarray
    trajectory: Any
    gt: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    family: str

    def providers(self):
        """Ground-truth depth (sky = 0, no measurement) and mask providers for a rollout."""
        from mirage_core.perception.given import GivenDepth, GivenMasks

        return (GivenDepth(self.depth, source="simulator ground truth"),
                GivenMasks(self.mask))


def heldout_case(index: int, hw: tuple[int, int] = (64, 96), frames: int = 65,
                 seed: int = 0) -> HeldoutCase:
    """Held-out clip ``index`` of run ``seed``, rendered at ``hw`` with ``frames`` frames:
    the same room and path as ``mirage data synth --held-out --seed SEED`` clip ``index``.

    Raises:
        MirageInputError: a bad index or size (:class:`~mirage_core.data.synth.SynthConfig`).
    """
    from mirage_core.data.synth import SynthConfig, plan_clip, render_plan
    from mirage_core.trajectory import Trajectory

    cfg = SynthConfig(frames=frames, hw=tuple(hw), seed=seed, held_out=True, progress=False)
    plan = plan_clip(cfg, index)
    rgb, depth, mask, K = render_plan(plan, cfg.hw, cfg.fps)
    T = torch.from_numpy(plan.T_world_cam)
    T = torch.linalg.inv(T[0]) @ T  # relative to frame 0 (Mirage's world)
    traj = Trajectory(T, torch.arange(frames, dtype=torch.float64) / cfg.fps,
                      torch.from_numpy(K), tuple(hw))
    return HeldoutCase(plan.key, rgb[0], traj, rgb, depth, mask, plan.family)


@dataclass
class HeldoutConfig:
    """Options of :func:`run_heldout_ablation`.

    Attributes:
        weights: the model's weights directory (default: the shipped small model).
        side_branch: trained weights for it (``None`` = the directory's own).
        n_clips: held-out clips ``0 .. n_clips - 1``.
        steps: UniPC steps per chunk.
        seed: noise seed (the same for every variant).
        variants: which of :data:`VARIANTS` to run.
        lpips_weights: local LPIPS weights (``None`` = no LPIPS).
        hole_fill: latent readout hole-fill passes (``MemoryConfig.hole_fill``) of the Mirage
            and readout variants; ``None`` = what the model was trained with (its marker's).
        memory_guidance: the sampler's guidance weight on the memory
            (``SamplerConfig.memory_guidance``) of the Mirage and RGB-cache variants; 1.0 =
            the paper's sampler (no guidance).
        stop_sigma: the sampler's stopping noise level (``SamplerConfig.stop_sigma``) of the
            generated variants; 0.0 = the paper's sampler (integrate to the end).
        out: directory for ``heldout.json`` and a contact sheet per clip.
    """

    weights: str | None = None
    side_branch: str | None = None
    n_clips: int = 8
    steps: int = 40
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS
    lpips_weights: str | None = None
    hole_fill: int | None = None
    memory_guidance: float = 1.0
    stop_sigma: float = 0.0
    out: str = "out/eval_heldout"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted(set(self.variants) - set(VARIANTS))
        if bad:
            raise MirageInputError(f"unknown variants {bad}; choose from {VARIANTS}")
        if self.n_clips < 1 or self.steps < 1:
            raise MirageInputError("n_clips and steps must be >= 1")
        if self.hole_fill is not None and not is_pass_count(self.hole_fill):
            raise MirageInputError(f"hole_fill must be an integer >= 0, got {self.hole_fill!r}")
        SamplerConfig(memory_guidance=self.memory_guidance, stop_sigma=self.stop_sigma)


def _revisit_frames(n_frames: int) -> list[int]:
    """Key frames ``4 j`` in the last quarter of the clip (where revisiting paths return)."""
    last = (n_frames - 1) // 4
    return [4 * j for j in range(max(1, math.ceil(0.75 * last)), last + 1)]


def _metrics(pred: np.ndarray, gt: np.ndarray, cover: np.ndarray, lpips_weights) -> dict:
    """``pred``, ``gt`` ``[N, H, W, 3]`` uint8; ``cover`` ``[N, H, W]`` bool (memory pixels).

    PSNR/SSIM/LPIPS per frame by :func:`~mirage_core.eval.closed_loop.frame_metrics`, then
    averaged; ``psnr_covered``: PSNR of the squared error pooled over the covered pixels."""
    from mirage_core.eval.closed_loop import ClosedLoopConfig, frame_metrics
    from mirage_core.eval.image_metrics import uint8_to_float

    fm = frame_metrics(pred, gt, ClosedLoopConfig(lpips_weights=lpips_weights))
    err = ((uint8_to_float(pred) - uint8_to_float(gt)) ** 2).mean(dim=1)  # [N, H, W]
    c = torch.from_numpy(cover)
    mse = float(err[c].mean()) if bool(c.any()) else None
    return {
        "psnr": _mean(fm["psnr"]),
        "ssim": _mean(fm["ssim"]),
        "psnr_covered": None if mse is None else (
            10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")),
        "lpips": _mean(fm["lpips"]) if fm["lpips"] is not None else None,
    }


def run_heldout_ablation(cfg: HeldoutConfig) -> dict[str, Any]:
    """Run every variant on every held-out clip; write and return ``heldout.json``."""
    from tqdm import tqdm

    from mirage_core.data.synth import SYNTH_PROMPT
    from mirage_core.generator.loading import default_weights_dir, load_models
    from mirage_core.rollout.chunked import MirageRollout, RolloutConfig

    weights = cfg.weights or str(default_weights_dir())
    models = load_models(weights, side_branch=cfg.side_branch, device="cpu")
    hw = models.image_hw or (64, 96)
    clf = models.chunk_latent_frames
    fill = models.readout_hole_fill if cfg.hole_fill is None else cfg.hole_fill
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    generated = [v for v in cfg.variants if v != "readout"]
    if "readout" in cfg.variants and "mirage" not in generated:
        generated.append("mirage")
    records = []
    bar = tqdm(total=cfg.n_clips * len(generated), desc="held-out rollouts",
               disable=not cfg.progress)
    for i in range(cfg.n_clips):
        case = heldout_case(i, hw)
        F = len(case.trajectory)
        revisit = _revisit_frames(F)
        rec: dict[str, Any] = {"clip": case.key, "family": case.family,
                               "revisit_frames": revisit, "variants": {}}
        frames_by: dict[str, np.ndarray] = {}
        readout_rgb = np.zeros_like(case.gt)
        cover = np.zeros(case.gt.shape[:3], dtype=bool)
        chunk_s: dict[str, list[float]] = {}
        for v in generated:
            depth, masks = case.providers()
            rcfg = RolloutConfig.for_models(
                models, cfg.steps, hole_fill=fill, memory_guidance=cfg.memory_guidance,
                stop_sigma=cfg.stop_sigma,
                seed=cfg.seed, memory=v != "no_memory",
                conditioning="rgb_cache" if v == "rgb_cache" else "latent",
                decode_readout=v == "mirage", progress=False)
            ro = MirageRollout(models, depth, masks, rcfg)
            frames = np.zeros_like(case.gt)
            frames[0] = case.image
            times = []
            for ch in ro.run(case.image, case.trajectory, prompt=SYNTH_PROMPT):
                a, b = ch.plan.rgb_frames
                frames[a:b + 1] = ch.frames
                times.append(ch.timings_s["total"])
                if v == "mirage" and ch.readout_rgb is not None:
                    keys = list(ch.plan.pose_frames)
                    readout_rgb[keys] = ch.readout_rgb
                    up = np.repeat(np.repeat(ch.readout_mask, hw[0] // ch.readout_mask.shape[1],
                                             axis=1), hw[1] // ch.readout_mask.shape[2], axis=2)
                    cover[keys] = up
            frames_by[v] = frames
            chunk_s[v] = times
            bar.update(1)
        if "readout" in cfg.variants:
            frames_by["readout"] = readout_rgb
            chunk_s["readout"] = chunk_s["mirage"]
        for v in cfg.variants:
            m = _metrics(frames_by[v][revisit], case.gt[revisit], cover[revisit],
                         cfg.lpips_weights)
            m["mean_chunk_s"] = float(np.mean(chunk_s[v])) if v != "readout" else None
            rec["variants"][v] = m
        rec["covered_fraction"] = float(cover[revisit].mean())
        records.append(rec)
        _contact_sheet(out / f"{i:03d}.png", case.gt, frames_by, revisit)
        # rewritten after every clip: an interrupted run keeps what it measured
        result = _write(out, cfg, weights, hw, clf, models.source, records, fill)
    bar.close()
    return result


def _write(out: Path, cfg: HeldoutConfig, weights: str, hw, clf: int, source: str,
           records: list[dict], fill: int) -> dict[str, Any]:
    summary = {v: {k: _mean([r["variants"][v][k] for r in records])
                   for k in ("psnr", "ssim", "psnr_covered", "lpips", "mean_chunk_s")}
               for v in cfg.variants}
    result = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "),
              "config": {**asdict(cfg), "weights": weights, "image_hw": list(hw),
                         "chunk_latent_frames": clf, "model": source,
                         "readout_hole_fill": fill},
              "clips_done": len(records), "summary": summary, "clips": records}
    tmp = out / "heldout.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "heldout.json")
    return result


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _contact_sheet(path: Path, gt: np.ndarray, frames_by: dict[str, np.ndarray],
                   revisit: list[int]) -> None:
    """Rows: ground truth, then each variant; columns: every 8th frame and the revisits."""
    from PIL import Image

    cols = sorted(set(range(0, len(gt), 8)) | set(revisit))
    rows = [np.concatenate(list(gt[cols]), axis=1)]
    rows += [np.concatenate(list(f[cols]), axis=1) for f in frames_by.values()]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main_heldout(argv: list[str] | None = None) -> int:
    """``mirage eval heldout``: the memory ablation on held-out rooms (module docstring)."""
    from mirage_core.argparsing import IntermixedArgumentParser

    ap = IntermixedArgumentParser(prog="mirage eval heldout",
                                  description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None,
                    help="weights directory (default: the shipped small model)")
    ap.add_argument("--side-branch", default=None, help="trained checkpoint or run directory")
    ap.add_argument("--n-clips", type=int, default=HeldoutConfig.n_clips)
    ap.add_argument("--steps", type=int, default=HeldoutConfig.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--lpips-weights", default=None)
    ap.add_argument("--hole-fill", type=int, default=None, metavar="PASSES",
                    help="latent readout hole-fill passes (default: the model's, from its "
                         "marker; 0 = the paper's Eq. 5)")
    ap.add_argument("--memory-guidance", type=float, default=HeldoutConfig.memory_guidance,
                    metavar="W",
                    help="guidance weight on the memory (1 = the paper's sampler, one model "
                         "call a step; others: two calls, docs/model_card.md)")
    ap.add_argument("--stop-sigma", type=float, default=HeldoutConfig.stop_sigma,
                    metavar="SIGMA",
                    help="stop the sampler at this noise level and score the model's "
                         "posterior-mean estimate there (0 = the paper's sampler)")
    ap.add_argument("--out", default=HeldoutConfig.out)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run_heldout_ablation(HeldoutConfig(
        weights=a.weights, side_branch=a.side_branch, n_clips=a.n_clips, steps=a.steps,
        seed=a.seed, variants=tuple(a.variants.split(",")), lpips_weights=a.lpips_weights,
        hole_fill=a.hole_fill, memory_guidance=a.memory_guidance, stop_sigma=a.stop_sigma,
        out=a.out,
        progress=not a.no_progress))
    print(f"{'variant':<10} {'PSNR':>7} {'SSIM':>7} {'PSNR cov':>9} {'LPIPS':>7} {'s/chunk':>8}")
    for v, m in res["summary"].items():
        def f(x, p=2):
            return "n/a" if x is None else f"{x:.{p}f}"
        print(f"{v:<10} {f(m['psnr']):>7} {f(m['ssim'], 4):>7} {f(m['psnr_covered']):>9} "
              f"{f(m['lpips'], 4):>7} {f(m['mean_chunk_s']):>8}")
    print(f"wrote {Path(a.out) / 'heldout.json'} in {time.perf_counter() - t0:.0f} s")
    return 0
