"""Prepare training clips from real footage: frames + cameras -> :class:`Clip` records in LMDB.

Inputs (see ``docs/data.md``):

* one sequence: a folder of frames (``.png``/``.jpg``/``.jpeg``, sorted by name, frame ``i``
  = the ``i``-th file) and a trajectory file in any format
  :func:`~mirage_core.trajectory_io.read_trajectory` detects (TUM, KITTI, RealEstate10K camera
  file, nerfstudio ``transforms.json``); pose ``i`` belongs to frame ``i`` and the counts must
  match;
* a RealEstate10K-style root: ``ROOT/cameras/<seq>.txt`` + ``ROOT/frames/<seq>/*.png``.

Clips: ``frames`` RGB frames (``4k+1``; 33 = one Wan2.2 chunk) taken every ``stride`` source
frames; clip starts are ``clip_step`` source frames apart (default: non-overlapping). Key
``<prefix>/<start:06d>`` (start = first source frame), so re-running skips clips already
stored. Poses are made relative to the clip's first frame (``E_0`` = world, method.md
section 1); latent ``j`` takes pose, depth and mask of clip frame ``4 j`` (rollout/schedule.py).

Size rule (**ours**): with ``size=(H, W)`` (multiples of 16) each frame is scaled
isotropically by ``s = max(H / H0, W / W0)`` (it covers ``H x W``), resized (bicubic) to
``round(H0 s) x round(W0 s)`` and centre-cropped; with ``size=None`` frames are only
centre-cropped to the largest multiples of 16. ``K`` follows exactly (pixel centres at +1/2):
``fx, cx`` scale by the actual width ratio, ``fy, cy`` by the height ratio, then
``cx -= left``, ``cy -= top``. Depth and masks are computed by the providers at the *source*
resolution and resampled with the same map (nearest neighbour).

Depth scale (``depth_scale``): ``"provider"`` stores depth as the provider returns it
(``da3:DIR`` uses DA3's own ``scale_policy``, ``:metric`` for metric models).
RealEstate10K camera translations are SLAM poses of unknown scale, so metric depth and the
poses disagree by a per-sequence factor; ``"align_to_cameras"`` estimates one factor ``s`` per
clip by multi-view photometric consistency under the dataset's own poses
(:mod:`mirage_core.data.scale_align`) and stores ``s * depth``, so depth is in the unit of the
clip's translations. Where the scale is unobservable (pure rotation, too little parallax, a
flat cost curve) ``depth_scale_fallback`` decides: ``"raise"`` (a :class:`PrepareError` naming
the clip; skipped and counted with ``errors="skip"``) or ``"keep"`` (``s = 1`` with a
warning). Every aligned clip's scale and diagnostics go to the log, to
:attr:`PrepareReport.depth_scales` and, one JSON object per line, to
``<store>/depth_scale.jsonl`` (:data:`SCALE_LOG_NAME`) beside the LMDB files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mirage_core.data.clip import Clip
from mirage_core.data.lmdb_store import ClipStore, StoreMeta
from mirage_core.data.scale_align import (
    FAILURE_POLICIES,
    ScaleAlignConfig,
    ScaleAlignmentError,
    ScaleFit,
    estimate_depth_scale,
)
from mirage_core.errors import MirageInputError, TrajectoryFileError
from mirage_core.geometry import intrinsics_from_fov, resize_intrinsics, se3_inverse

__all__ = [
    "DEPTH_SCALE_MODES",
    "IMAGE_SUFFIXES",
    "SCALE_LOG_NAME",
    "PrepareConfig",
    "PrepareError",
    "PrepareReport",
    "ShortSequenceWarning",
    "clip_starts",
    "encode_frame_latents",
    "encode_video_latents",
    "list_frames",
    "load_vae",
    "main_prepare",
    "prepare_realestate10k",
    "prepare_sequence",
    "resize_crop_plan",
]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STRIDE = 16
DEPTH_SCALE_MODES = ("provider", "align_to_cameras")
SCALE_LOG_NAME = "depth_scale.jsonl"  # per-clip scale records, in the store directory


class PrepareError(MirageInputError):
    """Bad input for one clip or sequence; the message names the clip/sequence and frame."""


class ShortSequenceWarning(UserWarning):
    """A sequence too short for one clip of ``frames`` frames (skipped and counted)."""


# --------------------------------------------------------------------------- VAE helpers


def load_vae(spec: str, device: str = "cpu"):
    """A video codec from a spec: a Wan2.2 VAE, or the lossless space-time-to-depth codec.

    Args:
        spec: ``"tiny"`` or ``"tiny:SEED"`` (RANDOM-weight tiny VAE: smoke tests only; the
            store's meta says so), ``"space_time_to_depth"`` or ``"space_time_to_depth:S"``
            (:class:`~mirage_core.codecs.SpaceTimeToDepthCodec`, stride ``S``, default 2:
            lossless, Wan's latent layout), a :class:`~mirage_core.codecs.PCAVideoCodec`
            folder (``mirage codec fit-pca``), or a directory (the VAE folder or a diffusers
            Wan2.2-TI2V root with ``vae/``).
        device: torch device.
    Returns:
        :class:`~mirage_core.codecs.WanVAECodec` or
        :class:`~mirage_core.codecs.SpaceTimeToDepthCodec`.
    Raises:
        MirageInputError: a bad stride.
    """
    from mirage_core.codecs import PCA_CODEC_MARKER, PCAVideoCodec, WanVAECodec, codec_from_spec

    if spec.partition(":")[0] == "space_time_to_depth":
        return codec_from_spec(spec, device=device)
    if spec == "tiny" or spec.startswith("tiny:"):
        seed = int(spec.partition(":")[2] or 0)
        return WanVAECodec.from_config("tiny", seed=seed, device=device)
    if (Path(spec) / PCA_CODEC_MARKER).is_file():
        return PCAVideoCodec.from_dir(spec, device=device)
    return WanVAECodec.from_pretrained(spec, device=device)


def encode_video_latents(vae, frames: torch.Tensor) -> torch.Tensor:
    """Encode RGB frames ``[F, 3, H, W]`` (float ``[0, 1]``, ``F = 4k+1``) to ``[L, C, h, w]``.

    ``vae`` is a :class:`~mirage_core.codecs.WanVAECodec` or anything with a ``.vae`` codec
    (e.g. :class:`~mirage_core.generator.loading.MirageModels`). Causal: latent 0 encodes
    frame 0 alone; ``L = 1 + (F - 1) / 4``.
    """
    codec = vae if hasattr(vae, "encode_video") else vae.vae
    z = codec.encode_video(frames.permute(1, 0, 2, 3).unsqueeze(0))  # [1, C, L, h, w]
    return z[0].permute(1, 0, 2, 3).contiguous().cpu()


def encode_frame_latents(vae, frames: torch.Tensor, every: int = 4) -> torch.Tensor:
    """Encode RGB frames ``0, every, 2 every, ...`` of ``frames`` ``[F, 3, H, W]`` **one by
    one** (image encodes, as the rollout re-encodes its generated key frames before writing
    them into the memory) -> ``[L, C, h, w]`` on the CPU (:attr:`Clip.frame_latents`)."""
    codec = vae if hasattr(vae, "encode_video") else vae.vae
    return codec.encode(frames[::every]).contiguous().cpu()


def meta_for(vae, image_hw: tuple[int, int], note: str = "") -> StoreMeta:
    """The :class:`StoreMeta` of clips encoded by ``vae`` at ``image_hw``."""
    codec = vae if hasattr(vae, "encode_video") else vae.vae
    return StoreMeta(latent_channels=int(codec.channels), image_hw=tuple(image_hw),
                     vae_source=str(codec.label), spatial_stride=int(codec.stride), note=note)


# --------------------------------------------------------------------------- config / report


@dataclass
class PrepareConfig:
    """Options of :func:`prepare_sequence` / :func:`prepare_realestate10k`."""

    frames: int = 33  # RGB frames per clip, 4k+1 (33 = one Wan2.2 chunk)
    stride: int = 1  # take every stride-th source frame
    clip_step: int | None = None  # source frames between clip starts; None = non-overlapping
    size: tuple[int, int] | None = None  # (H, W) multiples of 16; None = crop to multiples
    depth: str = "constant:1"  # depth provider spec (make_depth_provider), e.g. da3:DIR:metric
    masks: str = "none"  # mask provider spec (make_mask_provider)
    fov_y_deg: float | None = None  # intrinsics for formats without K (TUM, KITTI)
    prompt: str = ""  # caption stored with every clip
    max_clips: int | None = None  # stop after this many clips per sequence
    errors: str = "raise"  # "raise" or "skip" (log, count, continue) for bad clips/sequences
    progress: bool = True  # tqdm progress bar
    device: str = "cpu"  # VAE / depth device
    depth_scale: str = "provider"  # "provider" (as returned) or "align_to_cameras" (per clip)
    depth_scale_fallback: str = "raise"  # unobservable scale: "raise" or "keep" (s = 1, warn)
    scale_align: ScaleAlignConfig | None = None  # search options; None = defaults

    def __post_init__(self) -> None:
        if self.frames < 1 or (self.frames - 1) % 4:
            raise MirageInputError(f"frames must be 4k+1 (5, 9, ..., 33), got {self.frames}")
        if self.stride < 1 or (self.clip_step is not None and self.clip_step < 1):
            raise MirageInputError("stride and clip_step must be >= 1")
        if self.size is not None and (self.size[0] % STRIDE or self.size[1] % STRIDE
                                      or min(self.size) <= 0):
            raise MirageInputError(f"size must be positive multiples of 16, got {self.size}")
        if self.errors not in ("raise", "skip"):
            raise MirageInputError(f"errors must be 'raise' or 'skip', got {self.errors!r}")
        if self.depth_scale not in DEPTH_SCALE_MODES:
            raise MirageInputError(
                f"depth_scale must be one of {DEPTH_SCALE_MODES}, got {self.depth_scale!r}"
            )
        if self.depth_scale_fallback not in FAILURE_POLICIES:
            raise MirageInputError(f"depth_scale_fallback must be one of {FAILURE_POLICIES}, "
                                   f"got {self.depth_scale_fallback!r}")
        if self.depth_scale == "align_to_cameras" and (self.frames - 1) // 4 < 1:
            raise MirageInputError("depth_scale='align_to_cameras' needs >= 2 latent frames "
                                   f"(frames >= 5), got frames={self.frames}")

    def scale_align_config(self) -> ScaleAlignConfig:
        """The :class:`ScaleAlignConfig` used for ``align_to_cameras`` (fallback applied)."""
        base = self.scale_align or ScaleAlignConfig()
        return dataclasses.replace(base, on_failure=self.depth_scale_fallback)


@dataclass
class PrepareReport:
    """Counts of one preparation run."""

    written: int = 0
    skipped_existing: int = 0
    short_sequences: int = 0
    failed: list[str] = field(default_factory=list)
    depth_scales: dict[str, ScaleFit] = field(default_factory=dict)  # written clips, aligned

    def merge(self, other: PrepareReport) -> None:
        self.written += other.written
        self.skipped_existing += other.skipped_existing
        self.short_sequences += other.short_sequences
        self.failed.extend(other.failed)
        self.depth_scales.update(other.depth_scales)

    def lines(self) -> list[str]:
        out = [f"written {self.written}, already present {self.skipped_existing}, "
               f"short sequences skipped {self.short_sequences}, failed {len(self.failed)}"]
        if self.depth_scales:
            fits = list(self.depth_scales.values())
            ok = [f.scale for f in fits if f.ok]
            kept = len(fits) - len(ok)
            med = f", median scale {float(np.median(ok)):.4g}" if ok else ""
            out.append(f"depth scale aligned to cameras: {len(ok)} clips{med}; "
                       f"{kept} kept at scale 1 (unobservable)")
        out += [f"  FAILED {m}" for m in self.failed]
        return out


# --------------------------------------------------------------------------- frames & geometry


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` sorted by name (numbers compared numerically)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"frames folder {str(folder)!r} does not exist")

    def natural(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural)


def clip_starts(n_source: int, frames: int, stride: int = 1,
                clip_step: int | None = None) -> list[int]:
    """First source frame of every clip that fits in ``n_source`` frames."""
    span = (frames - 1) * stride + 1
    step = span if clip_step is None else clip_step
    return list(range(0, n_source - span + 1, step)) if n_source >= span else []


def resize_crop_plan(src_hw: tuple[int, int], size: tuple[int, int] | None
                     ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(resized_hw, (top, left), out_hw)`` of the size rule (module docstring)."""
    H0, W0 = src_hw
    if size is None:
        H, W = H0 // STRIDE * STRIDE, W0 // STRIDE * STRIDE
        if H == 0 or W == 0:
            raise MirageInputError(f"frames of {H0}x{W0} are smaller than 16 pixels")
        rh, rw = H0, W0
    else:
        H, W = size
        s = max(H / H0, W / W0)
        rh, rw = max(H, round(H0 * s)), max(W, round(W0 * s))
    return (rh, rw), ((rh - H) // 2, (rw - W) // 2), (H, W)


def _resample(x: torch.Tensor, resized_hw, top_left, out_hw, mode: str) -> torch.Tensor:
    """``[N, C, H0, W0]`` -> ``[N, C, H, W]`` by the size rule."""
    if tuple(x.shape[-2:]) != tuple(resized_hw):
        kw = {"antialias": True, "align_corners": False} if mode == "bicubic" else {}
        x = torch.nn.functional.interpolate(x, size=resized_hw, mode=mode, **kw)
    t, left = top_left
    return x[..., t: t + out_hw[0], left: left + out_hw[1]]


def _read_frame(path: Path, clip_key: str, index: int) -> torch.Tensor:
    """``[3, H, W]`` float32 in ``[0, 1]``; errors name the clip and the frame."""
    from PIL import Image

    if not path.is_file():
        raise PrepareError(f"clip {clip_key}: frame {index} ({path}) is missing")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise PrepareError(
            f"clip {clip_key}: frame {index} ({path}) is unreadable ({type(e).__name__}: {e})"
        ) from e
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32) / 255.0


def _image_size(path: Path, what: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as e:
        raise PrepareError(f"{what}: frame {path} is unreadable ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------- one sequence


def prepare_sequence(
    store: ClipStore,
    frames_dir: str | os.PathLike,
    trajectory: str | os.PathLike,
    vae,
    cfg: PrepareConfig,
    prefix: str | None = None,
    trajectory_format: str | None = None,
) -> PrepareReport:
    """Write the clips of one sequence into ``store`` (resumable; one transaction per clip).

    Args:
        store: a writable :class:`ClipStore`.
        frames_dir: folder of frames (frame ``i`` = ``i``-th file by name, or the trajectory's
            ``file_paths`` when it has them, e.g. nerfstudio).
        trajectory: camera file; pose ``i`` belongs to frame ``i``.
        vae: :class:`~mirage_core.codecs.WanVAECodec` (or ``MirageModels``).
        cfg: :class:`PrepareConfig`.
        prefix: key prefix (default: the frames folder's name).
        trajectory_format: force a format (default: detect).
    Raises:
        PrepareError: (``cfg.errors == "raise"``) unreadable trajectory, frame/pose count
            mismatch, missing/unreadable frame; the message names the sequence or the clip and
            frame. Clips written before the error stay in the store.
    """
    from mirage_core.perception import make_depth_provider, make_mask_provider
    from mirage_core.trajectory_io import read_trajectory

    frames_dir = Path(frames_dir)
    prefix = prefix or frames_dir.name
    rep = PrepareReport()
    try:
        files = list_frames(frames_dir)
        if not files:
            raise PrepareError(f"sequence {prefix}: no frames ({IMAGE_SUFFIXES}) in {frames_dir}")
        src_hw = _image_size(files[0], f"sequence {prefix}")
        try:
            # image_hw: intrinsics relative to the image size (RealEstate10K's normalised ones,
            # nerfstudio camera_angle_x without w/h) are for the frames' size
            traj = read_trajectory(trajectory, format=trajectory_format, image_hw=src_hw)
        except (TrajectoryFileError, MirageInputError, OSError) as e:
            raise PrepareError(f"sequence {prefix}: camera file {trajectory}: {e}") from e
        if traj.file_paths is not None:
            files = [frames_dir / p for p in traj.file_paths]
        elif len(files) != len(traj):
            raise PrepareError(
                f"sequence {prefix}: {len(files)} frames in {frames_dir} but {len(traj)} poses "
                f"in {trajectory}; they must match one to one"
            )
        if traj.K is not None:
            K_all = traj.K if traj.K.ndim == 3 else traj.K.expand(len(traj), 3, 3)
            if traj.image_hw is not None and tuple(traj.image_hw) != tuple(src_hw):
                # intrinsics given for another image size: rescale to the frames' size
                K_all = resize_intrinsics(K_all, traj.image_hw, src_hw)
        elif cfg.fov_y_deg is not None:
            K_all = intrinsics_from_fov(src_hw[1], src_hw[0], cfg.fov_y_deg).expand(
                len(traj), 3, 3)
        else:
            raise PrepareError(
                f"sequence {prefix}: {trajectory} has no intrinsics; pass fov_y_deg (--fov-y)"
            )
        starts = clip_starts(len(files), cfg.frames, cfg.stride, cfg.clip_step)
        if not starts:
            need = (cfg.frames - 1) * cfg.stride + 1
            warnings.warn(
                f"sequence {prefix}: {len(files)} frames, a clip needs {need} "
                f"({cfg.frames} frames, stride {cfg.stride}); skipped",
                ShortSequenceWarning, stacklevel=2,
            )
            rep.short_sequences += 1
            return rep
        if cfg.max_clips is not None:
            starts = starts[: cfg.max_clips]
        resized_hw, top_left, out_hw = resize_crop_plan(src_hw, cfg.size)
        store.init_meta(meta_for(vae, out_hw,
                                 note=f"mirage data prepare (depth_scale={cfg.depth_scale})"))
        depth_provider = make_depth_provider(cfg.depth, device=cfg.device)
        mask_provider = make_mask_provider(cfg.masks, device=cfg.device)
    except PrepareError as e:
        if cfg.errors == "raise":
            raise
        rep.failed.append(str(e))
        return rep

    from tqdm import tqdm

    for s in tqdm(starts, desc=prefix, unit="clip", disable=not cfg.progress, leave=False):
        key = f"{prefix}/{s:06d}"
        if key in store:
            rep.skipped_existing += 1
            continue
        try:
            clip, fit = _make_clip(key, s, files, traj.T_world_cam, K_all, vae, cfg,
                                   depth_provider, mask_provider, src_hw, resized_hw, top_left,
                                   out_hw)
        except PrepareError as e:
            if cfg.errors == "raise":
                raise
            rep.failed.append(str(e))
            continue
        written = store.put(clip)
        rep.written += int(written)
        if written and fit is not None:
            rep.depth_scales[key] = fit
            _log_scale(store, key, fit)
    return rep


def _log_scale(store: ClipStore, key: str, fit: ScaleFit) -> None:
    """Log one clip's depth scale and append it to ``<store>/depth_scale.jsonl``."""
    log.info("%s: depth scale %.5g (%s; contrast %.3f, parallax %.1f px, baseline %.3g)",
             key, fit.scale, fit.status, fit.contrast, fit.parallax_px, fit.baseline)
    with open(Path(store.path) / SCALE_LOG_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": key, **fit.to_dict()}, sort_keys=True) + "\n")


def _make_clip(key, start, files, T_all, K_all, vae, cfg, depth_provider, mask_provider,
               src_hw, resized_hw, top_left, out_hw) -> tuple[Clip, ScaleFit | None]:
    idx = [start + i * cfg.stride for i in range(cfg.frames)]
    rgb = []
    for i in idx:
        f = _read_frame(files[i], key, i)
        if tuple(f.shape[-2:]) != tuple(src_hw):
            raise PrepareError(f"clip {key}: frame {i} ({files[i]}) is {tuple(f.shape[-2:])}, "
                               f"the sequence's frames are {src_hw}")
        rgb.append(f)
    src = torch.stack(rgb)  # [F, 3, H0, W0]
    frames = _resample(src, resized_hw, top_left, out_hw, "bicubic").clamp(0.0, 1.0)
    latents = encode_video_latents(vae, frames)  # [L, C, h, w]
    frame_latents = encode_frame_latents(vae, frames)  # [L, C, h, w], key frames one by one
    pose_rows = list(range(0, cfg.frames, 4))  # clip frame 4j for latent j
    src_idx = [idx[r] for r in pose_rows]
    T = T_all[src_idx]
    T_rel = se3_inverse(T[0]).unsqueeze(0) @ T  # E_0 = world
    K_src = K_all[idx[0]]
    try:
        est = depth_provider.estimate(src[pose_rows], K_src, T_rel, src_idx)
        dyn = mask_provider.masks(src[pose_rows], K_src, T_rel, src_idx)
    except (MirageInputError, ValueError) as e:
        raise PrepareError(f"clip {key}: depth/masks for frames {src_idx}: {e}") from e
    mask = dyn.to(torch.bool)
    if est.sky is not None:
        mask = mask | est.sky.to(torch.bool)
    depth_src = est.depth.float()
    fit = None
    if cfg.depth_scale == "align_to_cameras":
        # at the source resolution, before resizing (the provider's pixels and K_src)
        try:
            fit = estimate_depth_scale(src[pose_rows], depth_src, K_src, T_rel, mask=mask,
                                       cfg=cfg.scale_align_config())
        except (ScaleAlignmentError, MirageInputError) as e:
            raise PrepareError(f"clip {key}: frames {src_idx}: {e}") from e
        depth_src = depth_src * fit.scale
    depth = _resample(depth_src[:, None], resized_hw, top_left, out_hw, "nearest")[:, 0]
    mask = _resample(mask[:, None].float(), resized_hw, top_left, out_hw, "nearest")[:, 0] > 0.5
    clip = Clip(latents=latents, depth=depth.contiguous(), mask=mask.contiguous(),
                T_world_cam=T_rel, K=resize_intrinsics(K_src, src_hw, resized_hw, top_left),
                image_hw=tuple(out_hw), prompt=cfg.prompt, key=key,
                frame_latents=frame_latents)
    return clip, fit


# --------------------------------------------------------------------------- RealEstate10K


def prepare_realestate10k(store: ClipStore, root: str | os.PathLike, vae,
                          cfg: PrepareConfig) -> PrepareReport:
    """All sequences of ``root/cameras/<seq>.txt`` + ``root/frames/<seq>/``; keys
    ``re10k/<seq>/<start>``. A sequence without a frames folder is a failure (counted with
    ``errors="skip"``, raised otherwise)."""
    root = Path(root)
    cams = sorted((root / "cameras").glob("*.txt"))
    if not cams:
        raise PrepareError(f"{root}: no camera files in {root / 'cameras'}")
    rep = PrepareReport()
    from tqdm import tqdm

    for cam in tqdm(cams, desc="sequences", unit="seq", disable=not cfg.progress):
        rep.merge(prepare_sequence(store, root / "frames" / cam.stem, cam, vae, cfg,
                                   prefix=f"re10k/{cam.stem}", trajectory_format="realestate10k"))
    return rep


# --------------------------------------------------------------------------- CLI


def _hw(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX,](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 704x1280, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def main_prepare(argv: Sequence[str] | None = None) -> int:
    """``mirage data prepare``: frames + cameras -> clip store. Returns the exit code."""
    ap = argparse.ArgumentParser(prog="mirage data prepare", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames-dir", help="folder of frames of one sequence")
    src.add_argument("--re10k-root", help="ROOT with cameras/<seq>.txt and frames/<seq>/")
    ap.add_argument("--trajectory", help="camera file of --frames-dir (format detected)")
    ap.add_argument("--format", default=None, help="force the trajectory format")
    ap.add_argument("--out", required=True, help="output LMDB directory (created/resumed)")
    ap.add_argument("--vae", required=True,
                    help="Wan2.2 VAE directory (or TI2V root), or 'tiny' (random, smoke tests)")
    ap.add_argument("--frames", type=int, default=33, help="RGB frames per clip (4k+1)")
    ap.add_argument("--stride", type=int, default=1, help="take every n-th source frame")
    ap.add_argument("--clip-step", type=int, default=None, help="source frames between clips")
    ap.add_argument("--size", type=_hw, default=None, help="HxW output (multiples of 16)")
    ap.add_argument("--depth", required=True,
                    help="depth provider: da3:DIR[:metric], given:PATH, constant:Z")
    ap.add_argument("--masks", default="none", help="mask provider: none, given:PATH, sam3:DIR")
    ap.add_argument("--fov-y", type=float, default=None, help="vertical FoV if no intrinsics")
    ap.add_argument("--depth-scale", choices=DEPTH_SCALE_MODES, default="provider",
                    help="provider: store depth as returned; align_to_cameras: one scale per "
                         "clip from multi-view consistency with the camera file's poses")
    ap.add_argument("--depth-scale-fallback", choices=FAILURE_POLICIES, default="raise",
                    help="when the scale is unobservable (pure rotation, flat cost): raise "
                         "(clip fails; see --skip-errors) or keep (scale 1, warning)")
    ap.add_argument("--prompt", default="", help="caption stored with every clip")
    ap.add_argument("--prefix", default=None, help="key prefix (default: folder name)")
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--skip-errors", action="store_true",
                    help="log and count bad clips/sequences instead of stopping")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.frames_dir and not a.trajectory:
        ap.error("--frames-dir needs --trajectory")
    try:
        cfg = PrepareConfig(frames=a.frames, stride=a.stride, clip_step=a.clip_step, size=a.size,
                            depth=a.depth, masks=a.masks, fov_y_deg=a.fov_y, prompt=a.prompt,
                            max_clips=a.max_clips, errors="skip" if a.skip_errors else "raise",
                            progress=not a.no_progress, device=a.device,
                            depth_scale=a.depth_scale,
                            depth_scale_fallback=a.depth_scale_fallback)
        vae = load_vae(a.vae, device=a.device)
        with ClipStore(a.out, readonly=False) as store:
            if a.re10k_root:
                rep = prepare_realestate10k(store, a.re10k_root, vae, cfg)
            else:
                rep = prepare_sequence(store, a.frames_dir, a.trajectory, vae, cfg,
                                       prefix=a.prefix, trajectory_format=a.format)
    except (MirageInputError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    for line in rep.lines():
        print(line)
    return 1 if rep.failed else 0
