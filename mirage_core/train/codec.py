"""Train a small Wan2.2-layout VAE (diffusers ``AutoencoderKLWan``) on a clip store's frames.

Why (issue 12): a small transformer trained on a CPU cannot denoise pixels to the last bit,
so with the lossless space-time-to-depth codec its frames stay noisy; a learned codec gives it
a compact latent (48 channels at 1/8 resolution). This module has both kinds the project
measured: the small VAE below (16.1 dB held-out reconstruction after 13 min of CPU training)
and the PCA codec the shipped recipe uses (:func:`fit_pca_codec_on_store`, 23.6 dB, fitted
in 42 s; docs/training.md).

The architecture is diffusers' ``AutoencoderKLWan`` with Wan2.2's residual blocks, 2x2
patchify and 48 latent channels, at the small layout :data:`~mirage_core.codecs.
WAN22_SMALL_VAE_CONFIG` (spatial stride 8, temporal stride 4: 1 + 4k frames -> 1 + k
latents, as at full size). Loss: L1 on RGB in ``[-1, 1]`` plus ``kl_weight`` x KL of the
posterior (no GAN or perceptual term: reconstructions are slightly soft). After training the
per-channel ``latents_mean`` / ``latents_std`` of the posterior mode over training clips are
written into the config, so normalised latents have unit variance like Wan2.2's.

Frames come from a store encoded with the lossless codec (``mirage data synth --vae
space_time_to_depth:2``): they decode exactly. The result is a diffusers folder
(``config.json`` + ``diffusion_pytorch_model.safetensors``) with the marker
:data:`~mirage_core.codecs.SMALL_VAE_MARKER`; load it with ``WanVAECodec.from_pretrained``
or pass the folder wherever a VAE directory is taken (``mirage data reencode --vae``,
``codec:`` in a training config).

    mirage codec train --data STORE --heldout STORE --out DIR [--steps N] [--resume]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_core.errors import MirageInputError

__all__ = [
    "CodecTrainConfig",
    "evaluate_codec",
    "fit_pca_codec_on_store",
    "load_store_frames",
    "main_codec_train",
    "main_fit_pca",
    "train_codec",
]


@dataclass
class CodecTrainConfig:
    """Options of :func:`train_codec` (``mirage codec train``).

    Attributes:
        data: training clip store (lossless codec; its frames are the targets).
        heldout: store scored at the end (reconstruction PSNR); ``None`` = skip.
        out_dir: output folder: ``vae/`` (the diffusers folder), ``checkpoint.pt`` (resume),
            ``metrics.jsonl``, ``report.json``, ``recon.png``.
        steps: optimiser steps.
        batch_size: windows per step.
        window: RGB frames per window, ``1 + 4k`` (9 = 3 latents).
        lr: peak AdamW learning rate (linear warm-up, cosine to ``lr * min_lr_ratio``).
        kl_weight: weight of the posterior KL term (per element, mean-reduced).
        init_logvar: initial posterior log-variance (``-8``: std 0.02, near-deterministic).
        base_dim, decoder_base_dim, num_res_blocks: widths/depth of the small layout.
        max_clips: use at most this many training clips (frames are held in RAM as uint8).
        stats_clips: training clips whose latents give ``latents_mean`` / ``latents_std``.
        save_every: steps between resumable checkpoints.
        seed: initialisation and sampling seed.
        threads: torch CPU threads (0 = torch's default).
    """

    data: str = ""
    heldout: str | None = None
    out_dir: str = "out/codec_small"
    steps: int = 2000
    batch_size: int = 2
    window: int = 9
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    kl_weight: float = 1e-6
    init_logvar: float = -8.0
    grad_clip: float = 1.0
    base_dim: int = 32
    decoder_base_dim: int = 32
    num_res_blocks: int = 1
    max_clips: int | None = None
    stats_clips: int = 64
    save_every: int = 250
    log_every: int = 10
    seed: int = 0
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.window < 1 or (self.window - 1) % 4:
            raise MirageInputError(f"window must be 1 + 4k frames, got {self.window}")
        for name in ("steps", "batch_size", "base_dim", "decoder_base_dim", "num_res_blocks",
                     "stats_clips", "save_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise MirageInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MirageInputError(f"lr must be a positive number, got {self.lr}")


def load_store_frames(path: str | Path, max_clips: int | None = None,
                      progress: bool = True) -> tuple[torch.Tensor, dict]:
    """All RGB frames of a lossless-codec clip store, as uint8.

    Args:
        path: a :class:`~mirage_core.data.lmdb_store.ClipStore` encoded with
            ``space_time_to_depth[:S]`` (its meta's ``vae_source`` says so).
        max_clips: read at most this many clips (store order).
    Returns:
        ``frames [N, F, 3, H, W]`` uint8 (``F = 1 + 4 (L - 1)``) and the store meta as a dict.
    Raises:
        MirageInputError: the store was encoded with a learned (lossy) codec, or its clips
            have different lengths.
    """
    from tqdm import tqdm

    from mirage_core.data.reencode import clip_frames, open_lossless_store

    store, codec = open_lossless_store(path, "the codec trainer")
    meta = store.meta
    n = len(store) if max_clips is None else min(len(store), int(max_clips))
    out = []
    for i in tqdm(range(n), desc=f"frames of {Path(path).name}", disable=not progress):
        video = clip_frames(codec, store[i])  # [F, 3, H, W]
        out.append((video * 255).round().to(torch.uint8))
    if len({tuple(v.shape) for v in out}) > 1:
        raise MirageInputError(f"{path}: clips of different lengths are not supported here")
    return torch.stack(out), asdict(meta)


def _build_vae(cfg: CodecTrainConfig):
    from diffusers import AutoencoderKLWan

    from mirage_core.codecs import WAN22_SMALL_VAE_CONFIG

    config = dict(WAN22_SMALL_VAE_CONFIG)
    config.update(base_dim=cfg.base_dim, decoder_base_dim=cfg.decoder_base_dim,
                  num_res_blocks=cfg.num_res_blocks)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        vae = AutoencoderKLWan(**config)
    # Start near-deterministic: the posterior's log-variance channels (the second half of
    # quant_conv's output, diffusers' DiagonalGaussianDistribution) begin at
    # ``init_logvar``. From diffusers' init (logvar ~ 0, std ~ 1 against latents of std ~ 1)
    # the weak KL term takes thousands of steps to shrink the noise, and the decoder learns
    # little meanwhile (measured: 14.0 vs 15.6 dB held-out after 200 steps).
    z = int(config["z_dim"])
    with torch.no_grad():
        vae.quant_conv.weight[z:].mul_(0.1)
        vae.quant_conv.bias[z:].fill_(cfg.init_logvar)
    return vae


def _lr_at(cfg: CodecTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * min(1.0, t)))


def _windows(frames: torch.Tensor, idx: np.ndarray, starts: np.ndarray, window: int):
    """``[B, 3, window, H, W]`` in ``[-1, 1]`` from uint8 ``frames [N, F, 3, H, W]``."""
    batch = torch.stack([frames[i, s:s + window] for i, s in zip(idx, starts, strict=True)])
    return batch.permute(0, 2, 1, 3, 4).float() / 127.5 - 1.0


@torch.no_grad()
def _latent_stats(vae, frames: torch.Tensor, n: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior mode over ``n`` whole clips."""
    total = torch.zeros(vae.config.z_dim, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for i in range(min(n, frames.shape[0])):
        x = frames[i : i + 1].permute(0, 2, 1, 3, 4).float() / 127.5 - 1.0
        mode = vae.encode(x).latent_dist.mode().double()  # [1, C, L, h, w]
        total += mode.sum(dim=(0, 2, 3, 4))
        total_sq += (mode**2).sum(dim=(0, 2, 3, 4))
        count += mode[0, 0].numel()
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return [float(v) for v in mean], [float(v) for v in std]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def _save_contact_sheet(path: Path, gt: torch.Tensor, rec: torch.Tensor) -> None:
    """Rows ground truth / reconstruction, columns every 8th frame; ``[F, 3, H, W]`` in [0, 1]."""
    from PIL import Image

    cols = list(range(0, gt.shape[0], 8))
    rows = [torch.cat([v[c] for c in cols], dim=2) for v in (gt, rec)]
    sheet = torch.cat(rows, dim=1).clamp(0, 1)
    Image.fromarray((sheet.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def evaluate_codec(codec_dir: str | Path, store: str | Path, max_clips: int | None = None,
                   sheet: str | Path | None = None, progress: bool = True) -> dict:
    """Reconstruction PSNR of a codec folder (small VAE or PCA codec) on a lossless-codec
    store: whole clips through ``encode_video`` / ``decode_video``, the generator's path.

    Returns:
        ``{"psnr_db": mean over clips, "psnr_db_per_clip": [...], "clips": n, "frames": F}``.
    """
    from mirage_core.data.prepare import load_vae

    codec = load_vae(str(codec_dir))
    frames, _ = load_store_frames(store, max_clips, progress=progress)
    per_clip = []
    for i in range(frames.shape[0]):
        video = frames[i].permute(1, 0, 2, 3).unsqueeze(0).float() / 255.0  # [1, 3, F, H, W]
        rec = codec.decode_video(codec.encode_video(video)).clamp(0, 1)
        per_clip.append(_psnr(rec, video))
        if i == 0 and sheet is not None:
            _save_contact_sheet(Path(sheet), video[0].permute(1, 0, 2, 3),
                                rec[0].permute(1, 0, 2, 3))
    return {"psnr_db": float(np.mean(per_clip)), "psnr_db_per_clip": per_clip,
            "clips": int(frames.shape[0]), "frames": int(frames.shape[1])}


def train_codec(cfg: CodecTrainConfig) -> dict:
    """Train the small VAE; write ``cfg.out_dir/vae`` and return the report dict.

    Resumes from ``cfg.out_dir/checkpoint.pt`` when it exists (same config required).

    Raises:
        MirageInputError: a bad store (see :func:`load_store_frames`), a checkpoint from
            another config, or a non-finite loss (named with its step; the last checkpoint
            is kept).
    """
    from tqdm import tqdm

    from mirage_core.codecs import SMALL_VAE_MARKER
    from mirage_core.rollout.outputs import write_json_atomic

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, meta = load_store_frames(cfg.data, cfg.max_clips, cfg.progress)
    n_clips, n_frames = frames.shape[:2]
    if n_frames < cfg.window:
        raise MirageInputError(f"clips have {n_frames} frames, fewer than window {cfg.window}")
    vae = _build_vae(cfg).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ckpt_path = out / "checkpoint.pt"
    # what a resumed run must share with the checkpoint (not where, how long, or how shown)
    free = ("steps", "progress", "threads", "heldout", "out_dir")
    want = {k: v for k, v in asdict(cfg).items() if k not in free}
    start = 0
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != want:
            diff = sorted(k for k in want if ckpt["config"].get(k) != want[k])
            raise MirageInputError(
                f"{ckpt_path} was written by another codec config (differs in {diff}); "
                f"use another --out or delete it"
            )
        vae.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        start = int(ckpt["step"])
    rng = np.random.default_rng(cfg.seed + start)
    log = (out / "metrics.jsonl").open("a")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="codec",
               disable=not cfg.progress)
    t0, first = time.perf_counter(), start
    for step in bar:
        idx = rng.integers(0, n_clips, cfg.batch_size)
        starts = rng.integers(0, n_frames - cfg.window + 1, cfg.batch_size)
        x = _windows(frames, idx, starts, cfg.window)
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        l1 = (rec - x).abs().mean()
        kl = posterior.kl().mean() / float(posterior.mean[0].numel())
        loss = l1 + cfg.kl_weight * kl
        if not torch.isfinite(loss):
            raise MirageInputError(
                f"codec training diverged at step {step + 1} (loss {loss.item()}); the last "
                f"checkpoint ({ckpt_path}, step {start}) is kept"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        if (step + 1) % cfg.log_every == 0:
            psnr = _psnr((rec.detach() + 1) / 2, (x + 1) / 2)
            rec_ = {"step": step + 1, "l1": l1.item(), "kl": kl.item(), "psnr_db": psnr,
                    "lr": _lr_at(cfg, step), "grad_norm": float(grad_norm),
                    "s_per_step": (time.perf_counter() - t0) / (step + 1 - first)}
            log.write(json.dumps(rec_) + "\n")
            log.flush()
            bar.set_postfix(l1=f"{l1.item():.4f}", psnr=f"{psnr:.1f}")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"config": want, "model": vae.state_dict(), "optim": opt.state_dict(),
                        "step": step + 1}, tmp)
            tmp.replace(ckpt_path)
            start = step + 1
    log.close()
    vae.eval()
    mean, std = _latent_stats(vae, frames, cfg.stats_clips)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae_dir = out / "vae"
    vae.save_pretrained(str(vae_dir))
    marker = {"small_vae": True, "version": 1, "trained_on": str(cfg.data),
              "image_hw": list(frames.shape[-2:]), "steps": cfg.steps,
              "config": want}
    write_json_atomic(vae_dir / SMALL_VAE_MARKER, marker)
    report = {"train_store": str(cfg.data), "train_clips": int(n_clips), "steps": cfg.steps,
              "store_meta": meta, "train_s": time.perf_counter() - t0}
    if cfg.heldout:
        report["heldout"] = evaluate_codec(vae_dir, cfg.heldout, sheet=out / "recon.png",
                                           progress=cfg.progress)
        report["heldout"]["store"] = str(cfg.heldout)
    write_json_atomic(out / "report.json", report)
    return report


def main_codec_train(argv: list[str] | None = None) -> int:
    """``mirage codec train``: see the module docstring."""
    d = CodecTrainConfig()
    ap = argparse.ArgumentParser(prog="mirage codec train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="training clip store (lossless codec)")
    ap.add_argument("--heldout", default=None, help="held-out store for reconstruction PSNR")
    ap.add_argument("--out", default=d.out_dir, help=f"output folder (default {d.out_dir})")
    ap.add_argument("--steps", type=int, default=d.steps, help=f"default {d.steps}")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = CodecTrainConfig(data=a.data, heldout=a.heldout, out_dir=a.out, steps=a.steps,
                           batch_size=a.batch_size, lr=a.lr, max_clips=a.max_clips, seed=a.seed,
                           threads=a.threads, progress=not a.no_progress)
    report = train_codec(cfg)
    if "heldout" in report:
        print(f"held-out reconstruction PSNR {report['heldout']['psnr_db']:.2f} dB over "
              f"{report['heldout']['clips']} clips")
    print(f"wrote {Path(cfg.out_dir) / 'vae'}")
    return 0


def fit_pca_codec_on_store(data: str | Path, out: str | Path, heldout: str | None = None,
                           max_clips: int | None = None, channels: int = 48,
                           progress: bool = True, normalise: str = "global") -> dict:
    """Fit a :class:`~mirage_core.codecs.PCAVideoCodec` to a lossless store's frames, write it
    to ``out`` (with ``report.json`` and, given ``heldout``, its reconstruction PSNR there and
    ``recon.png``) and return the report."""
    from mirage_core.codecs import fit_pca_codec
    from mirage_core.rollout.outputs import write_json_atomic

    t0 = time.perf_counter()
    frames, meta = load_store_frames(data, max_clips, progress)
    codec = fit_pca_codec(frames, channels=channels, normalise=normalise)
    out = Path(out)
    codec.save(out, {"trained_on": str(data), "clips": int(frames.shape[0]), "normalise": normalise,
                     "image_hw": list(frames.shape[-2:])})
    report = {"train_store": str(data), "train_clips": int(frames.shape[0]),
              "store_meta": meta, "fit_s": time.perf_counter() - t0}
    if heldout:
        report["heldout"] = evaluate_codec(out, heldout, sheet=out / "recon.png",
                                           progress=progress)
        report["heldout"]["store"] = str(heldout)
    write_json_atomic(out / "report.json", report)
    return report


def main_fit_pca(argv: list[str] | None = None) -> int:
    """``mirage codec fit-pca``: the shipped model's codec (docs/model_card.md)."""
    ap = argparse.ArgumentParser(
        prog="mirage codec fit-pca",
        description="fit the PCA video codec (48 ch, stride 8, Wan2.2's latent layout) to a "
        "lossless store's frames")
    ap.add_argument("--data", required=True, help="training clip store (lossless codec)")
    ap.add_argument("--heldout", default=None, help="held-out store for reconstruction PSNR")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--normalise", choices=("global", "channel"), default="global",
                    help="one scale for all channels (default) or one per channel")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    report = fit_pca_codec_on_store(a.data, a.out, a.heldout, a.max_clips,
                                    progress=not a.no_progress, normalise=a.normalise)
    if "heldout" in report:
        print(f"held-out reconstruction PSNR {report['heldout']['psnr_db']:.2f} dB over "
              f"{report['heldout']['clips']} clips")
    print(f"wrote {a.out}")
    return 0
