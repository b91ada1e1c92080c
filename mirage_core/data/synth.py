"""Synthetic training clips with ground truth: procedural PyBullet scenes, revisiting paths.

Procedurally varied rooms and open-sky scenes, with moving objects, seen along camera paths
that come back to what they saw earlier.

Clip ``i`` of run seed ``s`` in split ``train`` (or ``heldout``) is a pure function of
``(split, s, i)``. One random stream, ``default_rng([s, i])`` (held-out:
``default_rng([s, i, 1])``), draws in this order:

1. the scene seed, uniform in the split's range (:data:`SCENE_SEED_RANGES`; the ranges are
   disjoint, so no held-out room is ever a training room however many clips are made);
2. the preset: ``outdoor`` (open sky) with probability ``outdoor_fraction``, else ``room``;
3. the number of moving objects, uniform in ``0 .. dynamic``;
4. the path family, uniform over ``paths`` (:mod:`mirage_core.sim.camera_paths`);
5. the vertical field of view, uniform in ``fov_range``;
6. the camera path in that scene (:func:`~mirage_core.sim.camera_paths.sample_camera_path`).
   If the scene cannot hold the path (too crowded), the next scene seed is drawn from the
   stream and step 6 repeated (at most :data:`MAX_SCENE_DRAWS` scenes).

The scene is :func:`~mirage_core.sim.procedural.make_scene_spec` ``(preset, scene_seed,
n_dynamic)`` rendered by :class:`~mirage_core.sim.pybullet_scene.PyBulletScene` (CPU
TinyRenderer). Frame ``f`` is rendered at scene time ``f / fps`` (moving objects move);
latent ``j`` stores clip frame ``4 j``'s ground-truth z-depth (``inf``/sky -> 0 = unknown) and
``mask = dynamic | sky``; poses are relative to the first frame (``E_0`` = world).

Keys: ``synth/<s>/<i:06d>`` (train) and ``synth-heldout/<s>/<i:06d>`` (held-out); a store
holds one split only. Existing keys are skipped, so a run can be resumed or extended (a
larger ``n_clips`` adds only the new clips). Each written clip's plan (scene seed, preset,
family and its parameters, ...) is appended as a JSON line to ``<store>/synth_clips.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
from mirage_core.sim.camera_paths import (
    PATH_FAMILIES,
    REVISIT_FAMILIES,
    SEGMENT_MOTIONS,
    PathPlanningError,
    random_trajectory,
    sample_camera_path,
)

__all__ = ["MAX_SCENE_DRAWS", "SCENE_SEED_RANGES", "SPLITS", "SYNTH_MOTIONS", "SYNTH_PROMPT",
           "ClipPlan", "SynthConfig", "clip_key", "draw_scene_seed", "main_synth", "plan_clip",
           "random_trajectory", "render_plan", "synth_clip", "synth_clips"]

#: caption of synthetic clips (training encodes it with UMT5 unless embeddings are stored)
SYNTH_PROMPT = ("A simulated scene with simple textured objects; the camera moves through it "
                "and comes back to places it has seen.")

#: the older name of :data:`~mirage_core.sim.camera_paths.SEGMENT_MOTIONS`
SYNTH_MOTIONS = SEGMENT_MOTIONS

SPLITS: tuple[str, ...] = ("train", "heldout")
#: scene seeds of each split, half-open ``[lo, hi)``; disjoint, so held-out rooms never train
SCENE_SEED_RANGES: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000_000),
    "heldout": (1_000_000_000, 1_001_000_000),
}
#: scenes tried per clip before giving up (a scene too crowded for the path is replaced)
MAX_SCENE_DRAWS = 8
_KEY_PREFIX = {"train": "synth", "heldout": "synth-heldout"}
_STREAM = {"train": (), "heldout": (1,)}


@dataclass
class SynthConfig:
    """Options of :func:`synth_clips`; invalid values raise :class:`MirageInputError`."""

    n_clips: int = 2  # clips wanted in total (existing keys count)
    frames: int = 65  # RGB frames per clip, 4k+1 >= 5; 33 trains chunk 0 only, 65/97 revisit
    hw: tuple[int, int] = (64, 96)  # (H, W), multiples of 16
    seed: int = 0  # run seed >= 0; clip i depends only on (split, seed, i)
    fps: float = 10.0  # scene time step between frames (moves the moving objects)
    fov_range: tuple[float, float] = (50.0, 75.0)  # vertical FoV in degrees
    paths: tuple[str, ...] = REVISIT_FAMILIES  # path families drawn from (PATH_FAMILIES)
    dynamic: int = 2  # max moving objects per clip; each clip draws 0..dynamic
    outdoor_fraction: float = 0.2  # share of outdoor (open-sky) scenes
    held_out: bool = False  # write the held-out split (its own scene seeds and keys)
    prompt: str = SYNTH_PROMPT  # caption stored with every clip ("" = uncaptioned)
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not is_int(self.n_clips) or self.n_clips < 0:
            raise MirageInputError(f"n_clips must be an integer >= 0, got {self.n_clips!r}")
        if not is_int(self.frames) or self.frames < 5 or (self.frames - 1) % 4:
            raise MirageInputError(
                f"frames must be 4k+1 with k >= 1 (5, 9, ..., 33, 65, 97), got {self.frames!r}")
        hw = tuple(self.hw)
        if len(hw) != 2 or not all(is_int(v) and v > 0 and v % 16 == 0 for v in hw):
            raise MirageInputError(f"hw must be (H, W), positive multiples of 16, got {self.hw}")
        self.hw = (int(hw[0]), int(hw[1]))
        if not is_int(self.seed) or self.seed < 0:
            raise MirageInputError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise MirageInputError(f"fps must be a positive finite number, got {self.fps!r}")
        lo, hi = self.fov_range
        if not 0 < lo <= hi < 180:
            raise MirageInputError(
                f"fov_range must be (lo, hi) degrees with 0 < lo <= hi < 180, got {self.fov_range}")
        paths = (self.paths,) if isinstance(self.paths, str) else tuple(self.paths)
        bad = [p for p in paths if p not in PATH_FAMILIES]
        if bad or not paths:
            raise MirageInputError(
                f"paths must name one or more of {', '.join(PATH_FAMILIES)}; got "
                f"{', '.join(map(repr, paths)) or 'none'}")
        self.paths = tuple(dict.fromkeys(paths))  # drop repeats, keep order
        if not is_int(self.dynamic) or self.dynamic < 0:
            raise MirageInputError(
                f"dynamic (max moving objects) must be an integer >= 0, got {self.dynamic!r}")
        f = self.outdoor_fraction
        if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 <= f <= 1.0):
            raise MirageInputError(f"outdoor_fraction must be in [0, 1], got {f!r}")

    @property
    def split(self) -> str:
        """``"heldout"`` or ``"train"``."""
        return "heldout" if self.held_out else "train"


@dataclass
class ClipPlan:
    """Everything that decides a clip except its pixels (numpy only; no PyBullet needed).

    Attributes:
        key: store key.
        split: ``"train"`` or ``"heldout"``.
        scene_seed: seed of the scene (in :data:`SCENE_SEED_RANGES` ``[split]``).
        preset: ``"room"`` or ``"outdoor"``.
        n_dynamic: moving objects asked for (the scene may fit fewer; see ``movers``).
        movers: moving objects in the scene.
        family: camera path family.
        params: the path's drawn parameters.
        fov_y_deg: vertical field of view.
        T_world_cam: ``[F, 4, 4]`` float64 OpenCV camera-to-world poses in the sim world.
        scene_draws: scenes drawn until one held the path (1 = the first).
    """

    key: str
    split: str
    scene_seed: int
    preset: str
    n_dynamic: int
    movers: int
    family: str
    params: dict
    fov_y_deg: float
    T_world_cam: np.ndarray
    scene_draws: int

    def to_json(self) -> dict:
        """The plan without the poses, for ``synth_clips.jsonl``."""
        return {"key": self.key, "split": self.split, "scene_seed": self.scene_seed,
                "preset": self.preset, "n_dynamic": self.n_dynamic, "movers": self.movers,
                "family": self.family, "params": self.params, "fov_y_deg": self.fov_y_deg,
                "frames": len(self.T_world_cam), "scene_draws": self.scene_draws}


def clip_key(cfg: SynthConfig, index: int) -> str:
    """Store key of clip ``index``: ``synth/<seed>/<index:06d>`` or ``synth-heldout/...``."""
    return f"{_KEY_PREFIX[cfg.split]}/{cfg.seed}/{index:06d}"


def draw_scene_seed(rng: np.random.Generator, split: str) -> int:
    """A scene seed of ``split``, uniform in :data:`SCENE_SEED_RANGES` ``[split]``."""
    if split not in SCENE_SEED_RANGES:
        raise MirageInputError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    lo, hi = SCENE_SEED_RANGES[split]
    return int(rng.integers(lo, hi))


def plan_clip(cfg: SynthConfig, index: int) -> ClipPlan:
    """The plan of clip ``index`` of run ``cfg.seed`` in ``cfg.split`` (module docstring).

    Raises:
        MirageInputError: negative ``index``.
        PathPlanningError: :data:`MAX_SCENE_DRAWS` scenes in a row could not hold the path.
    """
    from mirage_core.sim.procedural import make_scene_spec

    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise MirageInputError(f"clip index must be an integer >= 0, got {index!r}")
    split = cfg.split
    rng = np.random.default_rng([int(cfg.seed), int(index), *_STREAM[split]])
    scene_seed = draw_scene_seed(rng, split)
    preset = "outdoor" if rng.random() < cfg.outdoor_fraction else "room"
    n_dynamic = int(rng.integers(0, cfg.dynamic + 1))
    family = cfg.paths[int(rng.integers(len(cfg.paths)))]
    fov = float(rng.uniform(*cfg.fov_range))
    last: Exception | None = None
    for draw in range(1, MAX_SCENE_DRAWS + 1):
        spec = make_scene_spec(preset, scene_seed, n_dynamic)
        try:
            path = sample_camera_path(family, spec.layout, cfg.frames, rng)
        except PathPlanningError as e:
            last = e
            scene_seed = draw_scene_seed(rng, split)
            continue
        return ClipPlan(clip_key(cfg, index), split, scene_seed, preset, n_dynamic,
                        len(spec.movers), family, path.params, fov, path.T_world_cam, draw)
    raise PathPlanningError(f"clip {clip_key(cfg, index)}: no {family!r} path fitted "
                            f"{MAX_SCENE_DRAWS} {preset} scenes in a row (last: {last})")


def render_plan(plan: ClipPlan, hw: tuple[int, int], fps: float = 10.0,
                frames: Sequence[int] | None = None):
    """Render a plan's frames.

    Args:
        plan: from :func:`plan_clip`.
        hw: ``(H, W)`` pixels.
        fps: frame ``f`` is rendered at scene time ``f / fps``.
        frames: indices to render (default all).
    Returns:
        ``(rgb [N, H, W, 3] uint8, depth [N, H, W] float32 (0 = sky/unknown),
        mask [N, H, W] bool (dynamic | sky), K [3, 3] float64)``.
    """
    from mirage_core.sim.pybullet_scene import PyBulletScene

    H, W = hw
    K = intrinsics_from_fov(W, H, plan.fov_y_deg).numpy()
    idx = range(len(plan.T_world_cam)) if frames is None else list(frames)
    rgb, depth, mask = [], [], []
    with PyBulletScene(plan.preset, seed=plan.scene_seed, procedural=True,
                       n_dynamic=plan.n_dynamic) as scene:
        for f in idx:
            fr = scene.render(plan.T_world_cam[f], K, H, W, time=f / fps)
            rgb.append(fr.rgb)
            depth.append(np.where(np.isfinite(fr.depth), fr.depth, 0.0).astype(np.float32))
            mask.append(fr.dynamic_mask | fr.sky_mask)
    return np.stack(rgb), np.stack(depth), np.stack(mask), K


def synth_clip(vae, cfg: SynthConfig, index: int, plan: ClipPlan | None = None) -> Clip:
    """Clip ``index`` of the run ``cfg.seed`` (see the module docstring).

    Args:
        vae: a :class:`~mirage_core.codecs.WanVAECodec` (or anything with ``.vae``).
        cfg: the run's options.
        index: clip number >= 0.
        plan: ``plan_clip(cfg, index)`` if already made.
    Returns:
        :class:`Clip` with ``latents [L, C, H/16, W/16]``, ground-truth ``depth [L, H, W]``,
        ``mask [L, H, W]`` (dynamic | sky), ``T_world_cam [L, 4, 4]`` relative to frame 0.
    """
    plan = plan_clip(cfg, index) if plan is None else plan
    rgb, depth, mask, K = render_plan(plan, cfg.hw, cfg.fps)
    video = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0  # [F, 3, H, W]
    latents = encode_video_latents(vae, video)
    frame_latents = encode_frame_latents(vae, video)
    T = torch.from_numpy(plan.T_world_cam)
    T_rel = torch.linalg.inv(T[0]) @ T[::4]  # latent j <- clip frame 4 j
    T_rel[0] = torch.eye(4, dtype=torch.float64)
    return Clip(latents=latents, depth=torch.from_numpy(depth[::4].copy()),
                mask=torch.from_numpy(mask[::4].copy()), T_world_cam=T_rel,
                K=torch.from_numpy(K), image_hw=cfg.hw, prompt=cfg.prompt, key=plan.key,
                frame_latents=frame_latents)


def synth_clips(out: str | os.PathLike | ClipStore, vae, cfg: SynthConfig) -> tuple[int, int]:
    """Write clips ``0 .. cfg.n_clips - 1`` of run ``cfg.seed`` into a store (resumable).

    Args:
        out: LMDB directory (created) or a writable :class:`ClipStore`.
        vae: :class:`~mirage_core.codecs.WanVAECodec`, ``MirageModels`` or a :func:`load_vae`
            spec (``"tiny"``, a directory).
        cfg: :class:`SynthConfig`.
    Returns:
        ``(written, skipped_existing)``.
    Raises:
        MirageInputError: the store holds clips of the other split.
        PathPlanningError: a clip's path fitted none of its scenes (clips before it are kept).
    """
    from tqdm import tqdm

    if isinstance(vae, str):
        vae = load_vae(vae)
    store = out if isinstance(out, ClipStore) else ClipStore(out, readonly=False)
    try:
        note = f"mirage data synth (seed {cfg.seed}, split {cfg.split})"
        store.init_meta(meta_for(vae, cfg.hw, note=note))
        other = _KEY_PREFIX["train" if cfg.held_out else "heldout"] + "/"
        if any(k.startswith(other) for k in store.keys()):
            raise MirageInputError(
                f"{str(store.path)!r} holds {'training' if cfg.held_out else 'held-out'} "
                f"clips; write the {cfg.split} split to another directory")
        log = Path(store.path) / "synth_clips.jsonl"
        written = skipped = 0
        for i in tqdm(range(cfg.n_clips), desc="synth", unit="clip", disable=not cfg.progress):
            if clip_key(cfg, i) in store:
                skipped += 1
                continue
            plan = plan_clip(cfg, i)
            if store.put(synth_clip(vae, cfg, i, plan)):
                written += 1
                with open(log, "a") as fh:
                    fh.write(json.dumps(plan.to_json()) + "\n")
        return written, skipped
    finally:
        if store is not out:
            store.close()


_FRAMES_HELP = ("RGB frames per clip, 4k+1 (default 65). A 33-frame clip is one chunk, so "
                "training uses only chunk 0 and its memory holds only the first frame; use 65 "
                "or 97 so later chunks revisit what earlier chunks saw.")


def main_synth(argv: Sequence[str] | None = None) -> int:
    """``mirage data synth``: synthetic clips with ground-truth depth and masks."""
    ap = argparse.ArgumentParser(prog="mirage data synth", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output LMDB directory (created/resumed)")
    ap.add_argument("--vae", required=True,
                    help="Wan2.2 VAE directory (or TI2V root), or 'tiny' (random, smoke tests)")
    ap.add_argument("--n-clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=65, help=_FRAMES_HELP)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0, help="run seed; clip i depends on (seed, i)")
    ap.add_argument("--paths", default=",".join(REVISIT_FAMILIES),
                    help="comma list of camera path families (default: all that revisit: "
                         f"{','.join(REVISIT_FAMILIES)}; also 'segments', the older "
                         "non-revisiting chained motions)")
    ap.add_argument("--dynamic", type=int, default=2, metavar="N",
                    help="max moving objects per clip, each clip draws 0..N (0 = static scenes)")
    ap.add_argument("--outdoor-fraction", type=float, default=0.2,
                    help="share of outdoor open-sky scenes, in [0, 1]")
    ap.add_argument("--fps", type=float, default=10.0,
                    help="frames per second of scene time (moving objects move 1/fps s a frame)")
    ap.add_argument("--held-out", action="store_true",
                    help="write the held-out split: rooms from scene seeds training never uses "
                         f"([{SCENE_SEED_RANGES['heldout'][0]}, {SCENE_SEED_RANGES['heldout'][1]})"
                         f" vs training's [0, {SCENE_SEED_RANGES['train'][1]})); keys "
                         "synth-heldout/<seed>/<i>; write it to its own directory")
    ap.add_argument("--prompt", default=SYNTH_PROMPT, help="caption of every clip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch CPU threads for the VAE encode (default: torch's choice); 1 is "
                         "much faster on a machine busy with other jobs")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.threads is not None:
        if a.threads < 1:
            print(f"error: --threads must be >= 1, got {a.threads}")
            return 2
        torch.set_num_threads(a.threads)
    try:
        cfg = SynthConfig(n_clips=a.n_clips, frames=a.frames, hw=(a.height, a.width),
                          seed=a.seed, fps=a.fps,
                          paths=tuple(p.strip() for p in a.paths.split(",") if p.strip()),
                          dynamic=a.dynamic, outdoor_fraction=a.outdoor_fraction,
                          held_out=a.held_out, prompt=a.prompt, progress=not a.no_progress)
        written, skipped = synth_clips(a.out, load_vae(a.vae, device=a.device), cfg)
    except (MirageInputError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    print(f"{a.out}: written {written}, already present {skipped} ({cfg.split} split)")
    return 0
