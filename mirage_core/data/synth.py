"""Synthetic training clips with ground truth: PyBullet scenes + random smooth camera paths.

Clip ``i`` of a run with seed ``seed`` is a pure function of ``(seed, i)``:

* scene: :class:`~mirage_core.sim.pybullet_scene.PyBulletScene` with preset ``room``
  (probability ``1 - outdoor_fraction``) or ``outdoor`` and a scene seed drawn from the RNG;
* camera: the scene's default start pose turned by a random yaw, then a trajectory composed of
  ``1..max_segments`` named motions of :func:`~mirage_core.trajectory.make_trajectory`
  (push/pull, truck, pan, orbit) with random speeds, chained so each segment starts where the
  previous one ended (continuous path); vertical FoV uniform in ``fov_range``;
* frames rendered at ``t = i / fps`` (the dynamic ball moves), ground-truth z-depth
  (``inf``/sky -> 0 = unknown) and ``mask = dynamic | sky`` at clip frames ``4 j``;
* latents from the VAE; poses relative to the first frame (``E_0`` = world).

Keys ``synth/<seed>/<i:06d>``; existing keys are skipped, so a run can be resumed or extended
(a larger ``n_clips`` adds only the new clips).
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mirage_core.data.clip import Clip
from mirage_core.data.lmdb_store import ClipStore
from mirage_core.data.prepare import (
    encode_frame_latents,
    encode_video_latents,
    load_vae,
    meta_for,
)
from mirage_core.errors import MirageInputError
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.trajectory import make_trajectory

__all__ = ["SYNTH_MOTIONS", "SYNTH_PROMPT", "SynthConfig", "main_synth", "random_trajectory",
           "synth_clip", "synth_clips"]

#: caption of synthetic clips (training encodes it with UMT5 unless embeddings are stored)
SYNTH_PROMPT = ("A simulated scene with simple coloured objects under even light; the camera "
                "moves smoothly through the static scene.")

# motion -> (min, max) speed: metres/frame for translations, degrees/frame for rotations
SYNTH_MOTIONS: dict[str, tuple[float, float]] = {
    "push_in": (0.01, 0.05), "pull_out": (0.01, 0.04), "move_left": (0.01, 0.04),
    "move_right": (0.01, 0.04), "pan_left": (0.3, 2.0), "pan_right": (0.3, 2.0),
    "orbit_left": (0.3, 1.5), "orbit_right": (0.3, 1.5),
}


@dataclass
class SynthConfig:
    """Options of :func:`synth_clips`."""

    n_clips: int = 2  # clips wanted in total (existing keys count)
    frames: int = 33  # RGB frames per clip, 4k+1
    hw: tuple[int, int] = (64, 96)  # (H, W), multiples of 16
    seed: int = 0  # run seed; clip i depends only on (seed, i)
    fps: float = 10.0  # scene time step between frames (moves the dynamic ball)
    fov_range: tuple[float, float] = (50.0, 75.0)  # vertical FoV in degrees
    max_segments: int = 2  # named motions composed per clip
    outdoor_fraction: float = 0.3  # share of outdoor scenes (open sky)
    dynamic: bool = True  # include the moving ball
    prompt: str = SYNTH_PROMPT  # caption stored with every clip ("" = uncaptioned)
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        if self.frames < 1 or (self.frames - 1) % 4:
            raise MirageInputError(f"frames must be 4k+1 (5, 9, ..., 33), got {self.frames}")
        if self.hw[0] % 16 or self.hw[1] % 16 or min(self.hw) <= 0:
            raise MirageInputError(f"hw must be positive multiples of 16, got {self.hw}")
        if self.n_clips < 0 or self.max_segments < 1:
            raise MirageInputError("n_clips must be >= 0 and max_segments >= 1")


def random_trajectory(rng: np.random.Generator, num_frames: int,
                      max_segments: int = 2) -> torch.Tensor:
    """``[num_frames, 4, 4]`` float64 ``T_world_cam`` (OpenCV), first pose the identity.

    Composes ``1..max_segments`` named motions with random speeds; segment ``k`` is applied
    relative to the last pose of segment ``k - 1``, so the path is continuous.
    """
    n_seg = int(rng.integers(1, max_segments + 1))
    cuts = np.sort(rng.choice(np.arange(1, num_frames - 1), size=n_seg - 1, replace=False)) \
        if n_seg > 1 and num_frames > n_seg else np.array([], dtype=int)
    bounds = [0, *cuts.tolist(), num_frames - 1]
    names = list(SYNTH_MOTIONS)
    poses = [torch.eye(4, dtype=torch.float64)]
    for a, b in itertools.pairwise(bounds):
        name = names[int(rng.integers(len(names)))]
        lo, hi = SYNTH_MOTIONS[name]
        seg = make_trajectory(name, num_frames=b - a + 1, speed=float(rng.uniform(lo, hi)))
        base = poses[-1]
        poses.extend(base @ T for T in seg.T_world_cam[1:])
    return torch.stack(poses)


def _yaw_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    return T


def synth_clip(vae, cfg: SynthConfig, index: int) -> Clip:
    """Clip ``index`` of the run ``cfg.seed`` (see the module docstring).

    Returns:
        :class:`Clip` with ``latents [L, C, H/16, W/16]``, ground-truth ``depth [L, H, W]``,
        ``mask [L, H, W]`` (dynamic | sky), ``T_world_cam [L, 4, 4]`` relative to frame 0.
    """
    from mirage_core.sim.pybullet_scene import PyBulletScene

    rng = np.random.default_rng([int(cfg.seed), int(index)])
    H, W = cfg.hw
    preset = "outdoor" if rng.random() < cfg.outdoor_fraction else "room"
    K = intrinsics_from_fov(W, H, float(rng.uniform(*cfg.fov_range)))
    T_rel = random_trajectory(rng, cfg.frames, cfg.max_segments)  # [F, 4, 4], first = I
    with PyBulletScene(preset, seed=int(rng.integers(2**31)), dynamic=cfg.dynamic) as scene:
        start = scene.default_start_pose()
        start[:3, 3] += [0.0, rng.uniform(-1.0, 1.0), rng.uniform(-0.3, 0.3)]
        start = _yaw_z(rng.uniform(-0.6, 0.6)) @ start
        T_start = torch.from_numpy(start)
        rgb, depth, mask = [], [], []
        for i in range(cfg.frames):
            f = scene.render(T_start @ T_rel[i], K, H, W, time=i / cfg.fps)
            rgb.append(torch.from_numpy(f.rgb).permute(2, 0, 1).float() / 255.0)
            if i % 4 == 0:
                d = np.where(np.isfinite(f.depth), f.depth, 0.0).astype(np.float32)
                depth.append(torch.from_numpy(d))
                mask.append(torch.from_numpy(f.dynamic_mask | f.sky_mask))
    video = torch.stack(rgb)
    latents = encode_video_latents(vae, video)
    frame_latents = encode_frame_latents(vae, video)
    T_lat = T_rel[::4]  # latent j <- clip frame 4 j; T_lat[0] is exactly the identity
    return Clip(latents=latents, depth=torch.stack(depth), mask=torch.stack(mask),
                T_world_cam=T_lat, K=K, image_hw=(H, W), prompt=cfg.prompt,
                key=f"synth/{cfg.seed}/{index:06d}", frame_latents=frame_latents)


def synth_clips(out: str | os.PathLike | ClipStore, vae, cfg: SynthConfig) -> tuple[int, int]:
    """Write clips ``0 .. cfg.n_clips - 1`` of run ``cfg.seed`` into a store (resumable).

    Args:
        out: LMDB directory (created) or a writable :class:`ClipStore`.
        vae: :class:`~mirage_core.codecs.WanVAECodec`, ``MirageModels`` or a :func:`load_vae`
            spec (``"tiny"``, a directory).
        cfg: :class:`SynthConfig`.
    Returns:
        ``(written, skipped_existing)``.
    """
    from tqdm import tqdm

    if isinstance(vae, str):
        vae = load_vae(vae)
    store = out if isinstance(out, ClipStore) else ClipStore(out, readonly=False)
    try:
        store.init_meta(meta_for(vae, cfg.hw, note=f"mirage data synth (seed {cfg.seed})"))
        written = skipped = 0
        for i in tqdm(range(cfg.n_clips), desc="synth", unit="clip", disable=not cfg.progress):
            if f"synth/{cfg.seed}/{i:06d}" in store:
                skipped += 1
                continue
            written += int(store.put(synth_clip(vae, cfg, i)))
        return written, skipped
    finally:
        if store is not out:
            store.close()


def main_synth(argv: Sequence[str] | None = None) -> int:
    """``mirage data synth``: synthetic clips with ground-truth depth and masks."""
    ap = argparse.ArgumentParser(prog="mirage data synth", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output LMDB directory (created/resumed)")
    ap.add_argument("--vae", required=True,
                    help="Wan2.2 VAE directory (or TI2V root), or 'tiny' (random, smoke tests)")
    ap.add_argument("--n-clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=33, help="RGB frames per clip (4k+1)")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default=SYNTH_PROMPT, help="caption of every clip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfg = SynthConfig(n_clips=a.n_clips, frames=a.frames, hw=(a.height, a.width),
                          seed=a.seed, prompt=a.prompt, progress=not a.no_progress)
        written, skipped = synth_clips(a.out, load_vae(a.vae, device=a.device), cfg)
    except (MirageInputError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    print(f"{a.out}: written {written}, already present {skipped}")
    return 0
