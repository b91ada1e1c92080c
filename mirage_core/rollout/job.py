"""``mirage rollout``: one command from an image and a trajectory to a video on disk.

:class:`RolloutJobConfig` holds every option (typed, documented, checked in
``__post_init__``); :func:`run_rollout_job` resolves the inputs, checks them all, loads the
models, runs :class:`~mirage_core.rollout.chunked.MirageRollout` and streams the results
into the output directory (:class:`~mirage_core.rollout.outputs.RolloutWriter`).

With no ``image`` the job uses the *embedded default scene*: the first view of the procedural
PyBullet room (:mod:`mirage_core.sim.pybullet_scene`), rendered at the requested resolution,
with the simulator's ground-truth depth, dynamic-object and sky masks for every generated
frame's pose (``depth="auto"`` and ``masks="auto"`` resolve to ``"sim"`` there).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.devices import compute_device
from mirage_core.errors import MirageInputError
from mirage_core.generator.loading import (
    OFFLOAD_MODES,
    build_tiny_weights,
    default_weights_dir,
    load_models,
    shipped_weights_dir,
    weights_profile,
)
from mirage_core.generator.sampler import SamplerConfig
from mirage_core.generator.text import check_prompt, load_prompt_embeddings
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.memory import MERGE_POLICIES
from mirage_core.memory.hole_fill import is_pass_count
from mirage_core.rollout.chunked import CONDITIONING_MODES, MirageRollout, RolloutConfig
from mirage_core.rollout.inputs import check_camera, check_image, load_image
from mirage_core.rollout.outputs import RolloutWriter, summarize_chunks
from mirage_core.rollout.schedule import TEMPORAL_STRIDE, plan_chunks
from mirage_core.trajectory import TRAJECTORY_NAMES, Trajectory, make_trajectory

__all__ = ["DEFAULT_PROMPT", "RolloutJobConfig", "run_rollout_job", "tiny_weights_dir"]

log = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "A bright indoor room with colourful tiled walls, a checkerboard floor and simple "
    "furniture; the camera moves smoothly through the static scene."
)
#: Resolution of the default scene: Wan2.2's 704x1280, or 128x224 for ``--tiny``.
DEFAULT_HW = {"full": (704, 1280), "tiny": (128, 224), "small": (64, 96)}


def tiny_weights_dir() -> Path:
    """Where ``--tiny`` writes its random-weight models (``$MIRAGE_CACHE`` or ~/.cache)."""
    base = os.environ.get("MIRAGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mirage"
    )
    return Path(base) / "tiny_weights"


@dataclass
class RolloutJobConfig:
    """Options of ``mirage rollout`` (each is also a CLI flag of the same name).

    Attributes:
        out: output directory.
        image: input image file (8-bit RGB, H and W multiples of 32); ``None`` = the embedded
            default scene: for the shipped small model, held-out procedural room 0 along its
            own revisiting path (with ground-truth depth and masks; docs/model_card.md);
            otherwise the PyBullet room preset.
        trajectory: a motion name (``orbit_left``, ..., ``loop``) or a trajectory file (TUM,
            KITTI, RealEstate10K, nerfstudio; format detected). Intrinsics given relative to
            the image size (RealEstate10K, ``camera_angle_x``) are scaled to the input image.
        trajectory_format: force the file's format (``tum``, ``kitti``, ``realestate10k``,
            ``nerfstudio``); ``None`` = detect from its data lines.
        weights: diffusers-format Wan2.2-TI2V-5B directory, or a small model's directory;
            ``None`` (and not ``tiny``) = the shipped small model when the checkout has one
            (``mirage_core/weights/mirage-small-rooms``, docs/model_card.md).
        tiny: run the whole path with tiny random-weight models on the CPU (output is noise).
        side_branch: trained weights: a side-branch file, a ``mirage train`` checkpoint
            directory (side branch + stage-2 LoRA) or output directory (newest checkpoint);
            ``"zero"`` (untrained no-op); or ``None`` = ``weights/mirage_side_branch.safetensors``.
        prompt: text prompt (ignored with ``prompt_embeds``).
        prompt_embeds: safetensors file of precomputed UMT5 states (skips the text encoder).
        chunks: chunks to generate (each adds ``4 (chunk_latent_frames - 1)`` RGB frames: 32
            for the paper's model and the shipped small one); ``None`` = 96 frames' worth
            for generated motions, all that fit for files and the held-out scene.
        steps: UniPC steps per chunk (paper: 40).
        stop_sigma: stop each chunk's sampler at this noise level and return the model's
            posterior-mean estimate there (``SamplerConfig.stop_sigma``; ours: blurrier frames,
            higher PSNR); 0.0 = the paper's sampler.
        seed: noise seed.
        height, width: resolution of the default scene / check for a given image.
        fov_deg: vertical field of view for generated motions (and files without intrinsics).
        speed: per-frame step of generated motions (see ``make_trajectory``); ``None`` = default.
        fps: frame rate of the video and of generated motions' timestamps.
        depth: ``"auto"``, ``"sim"``, ``"constant:Z"`` (smoke tests only) or ``"da3:DIR"``.
        masks: ``"auto"``, ``"none"``, ``"sim"`` or ``"sam3:DIR"``.
        memory: ``False`` = the no-memory ablation (side branch gets no input).
        conditioning: ``"latent"`` (Mirage) or ``"rgb_cache"`` (RGB point-cloud baseline).
        merge_policy: latent memory merge policy (``fill_empty``, ``union``, ``voxel``).
        hole_fill: latent readout hole-fill passes (``MemoryConfig.hole_fill``); ``None`` = the
            model's (its marker's ``readout_hole_fill``; 0 for ``--tiny``).
        device: compute device (default: cuda if available, else cpu).
        offload: ``"none"`` or ``"model"`` (components wait on the CPU between uses).
        text_encoder_device: where UMT5 runs (e.g. ``"cpu"`` to save GPU memory).
        vae_tiling: spatial VAE tiling (less memory at 704x1280).
        vae_bf16: VAE in bf16 instead of float32 (the reference's precision; every encode,
            decode and so every memory write loses precision in bf16).
        video: write ``video.mp4`` as well as the PNG frames.
        progress: show progress bars.
    """

    out: str | Path = "out/rollout"
    image: str | None = None
    trajectory: str = "loop"
    trajectory_format: str | None = None
    weights: str | None = None
    tiny: bool = False
    side_branch: str | None = None
    prompt: str = DEFAULT_PROMPT
    prompt_embeds: str | None = None
    chunks: int | None = None
    steps: int = 40
    stop_sigma: float = 0.0
    seed: int = 0
    height: int | None = None
    width: int | None = None
    fov_deg: float = 60.0
    speed: float | None = None
    fps: float = 24.0
    depth: str = "auto"
    masks: str = "auto"
    memory: bool = True
    conditioning: str = "latent"
    merge_policy: str = "fill_empty"
    hole_fill: int | None = None
    device: str | None = None
    offload: str = "none"
    text_encoder_device: str | None = None
    vae_tiling: bool = False
    vae_bf16: bool = False
    video: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.tiny and not self.weights:
            shipped = shipped_weights_dir()
            if shipped is None:
                raise MirageInputError(
                    f"no weights: pass --weights DIR (the diffusers-format Wan2.2-TI2V-5B "
                    f"directory, or a small model: `make train-small` writes "
                    f"out/mirage-small-rooms) or --tiny to run the pipeline with tiny "
                    f"random-weight models on the CPU. (No trained model ships in "
                    f"{default_weights_dir()} yet: docs/model_card.md)"
                )
            self.weights = str(shipped)
        if self.tiny and self.weights:
            raise MirageInputError("--tiny and --weights exclude each other")
        if self.conditioning not in CONDITIONING_MODES:
            raise MirageInputError(f"conditioning must be one of {CONDITIONING_MODES}")
        if self.merge_policy not in MERGE_POLICIES:
            raise MirageInputError(f"merge_policy must be one of {MERGE_POLICIES}")
        if self.hole_fill is not None and not is_pass_count(self.hole_fill):
            raise MirageInputError(f"hole_fill must be an integer >= 0, got {self.hole_fill!r}")
        if self.hole_fill and self.conditioning != "latent":
            raise MirageInputError("hole_fill fills the latent memory's readout; it does nothing "
                                   f"with conditioning {self.conditioning!r}")
        if self.offload not in OFFLOAD_MODES:
            raise MirageInputError(f"offload must be one of {OFFLOAD_MODES}")
        if self.chunks is not None and self.chunks < 1:
            raise MirageInputError(f"chunks must be >= 1, got {self.chunks}")
        if not (0 < self.fov_deg < 180):
            raise MirageInputError(f"fov_deg must be in (0, 180), got {self.fov_deg}")
        if not self.fps > 0:
            raise MirageInputError(f"fps must be > 0, got {self.fps}")
        if self.trajectory_format is not None:
            from mirage_core.trajectory_io import format_name

            format_name(self.trajectory_format)  # unknown -> MirageInputError listing them
        SamplerConfig(steps=self.steps, stop_sigma=self.stop_sigma)  # validates
        for d in (self.device, self.text_encoder_device):
            if d:
                compute_device(d)  # a typo or CUDA on a CPU-only torch: refused here


@dataclass
class _Inputs:
    image: torch.Tensor
    trajectory: Trajectory
    K: torch.Tensor
    depth: Any
    masks: Any
    scene: Any = None
    T_sim_world: np.ndarray | None = None


def _profile(cfg: RolloutJobConfig) -> dict[str, Any]:
    """The model's marker (size, trained resolution, chunk size, default scene), or the
    defaults of the paper's model / ``--tiny``."""
    if cfg.tiny:
        return {"size": "tiny", "trained": False, "image_hw": None, "chunk_latent_frames": 9,
                "scene": None, "prompt": None}
    return weights_profile(cfg.weights)


def _heldout_inputs(cfg: RolloutJobConfig, hw: tuple[int, int]) -> _Inputs:
    """Held-out procedural room 0 along its own path, with ground-truth depth and masks."""
    from mirage_core.eval.heldout import heldout_case
    from mirage_core.perception import make_depth_provider, make_mask_provider

    if (cfg.height and cfg.height != hw[0]) or (cfg.width and cfg.width != hw[1]):
        raise MirageInputError(f"the shipped model runs at {hw[0]}x{hw[1]} (its training "
                               f"resolution), not {cfg.height}x{cfg.width}")
    case = heldout_case(0, hw)
    depth, masks = case.providers()
    device = compute_device(cfg.device)
    if cfg.depth != "auto":
        depth = make_depth_provider(cfg.depth, device=device)
    if cfg.masks != "auto":
        masks = make_mask_provider(cfg.masks, device=device)
    return _Inputs(check_image(case.image), case.trajectory, None, depth, masks)


def _resolve_inputs(cfg: RolloutJobConfig, profile: dict[str, Any] | None = None) -> _Inputs:
    """Image, trajectory, K and perception providers; everything checked, nothing heavy.
    ``profile``: :func:`_profile` of ``cfg`` (read here when not given)."""
    from mirage_core.perception import make_depth_provider, make_mask_provider

    profile = _profile(cfg) if profile is None else profile
    size = profile["size"]
    if cfg.image is None and profile["scene"] == "heldout" and cfg.trajectory == "loop":
        return _heldout_inputs(cfg, profile["image_hw"])
    frames_per_chunk = TEMPORAL_STRIDE * (profile["chunk_latent_frames"] - 1)
    scene = T_sim_world = None
    if cfg.image is None:
        default_hw = profile["image_hw"] or DEFAULT_HW[size]
        H, W = cfg.height or default_hw[0], cfg.width or default_hw[1]
        from mirage_core.sim.pybullet_scene import PyBulletScene

        scene = PyBulletScene("room", seed=cfg.seed, dynamic=True)
        T_sim_world = scene.default_start_pose()
        K0 = intrinsics_from_fov(W, H, cfg.fov_deg)
        image = check_image(scene.render(T_sim_world, K0, H, W, time=0.0).rgb)
    else:
        image = load_image(cfg.image)
        H, W = image.shape[-2:]
        if (cfg.height and cfg.height != H) or (cfg.width and cfg.width != W):
            raise MirageInputError(
                f"image {cfg.image!r} is {H}x{W}, not the requested {cfg.height}x{cfg.width}"
            )

    if cfg.trajectory in TRAJECTORY_NAMES:
        chunks = cfg.chunks or max(1, 96 // frames_per_chunk)
        n = 1 + frames_per_chunk * chunks
        traj = make_trajectory(cfg.trajectory, n, cfg.speed, fps=cfg.fps,
                               K=intrinsics_from_fov(W, H, cfg.fov_deg), image_hw=(H, W))
    else:
        from mirage_core.trajectory_io import read_trajectory

        if not Path(cfg.trajectory).is_file():
            raise MirageInputError(
                f"--trajectory {cfg.trajectory!r} is neither a motion name "
                f"({', '.join(TRAJECTORY_NAMES)}) nor an existing file"
            )
        # image_hw: intrinsics relative to the image size (RealEstate10K's normalised ones,
        # nerfstudio camera_angle_x without w/h) become pixels of the input image, as in
        # `mirage data prepare` (one implementation: trajectory_io)
        traj = read_trajectory(cfg.trajectory, cfg.trajectory_format,
                               image_hw=(H, W)).relative_to_first()
        if traj.K is None:
            log.warning("%s has no intrinsics; using a %.1f deg vertical field of view "
                        "(--fov-deg)", cfg.trajectory, cfg.fov_deg)
            traj = Trajectory(traj.T_world_cam, traj.timestamps,
                              intrinsics_from_fov(W, H, cfg.fov_deg), (H, W), traj.file_paths)
    K = None  # the trajectory's (checked against the image by MirageRollout.prepare)

    depth_spec = cfg.depth
    mask_spec = cfg.masks
    if depth_spec == "auto":
        if scene is None:
            raise MirageInputError(
                "--depth is needed for a user image: 'da3:DIR' (depth-anything-3 weights), or "
                "'constant:Z' for a smoke test only"
            )
        depth_spec = "sim"
    if mask_spec == "auto":
        mask_spec = "sim" if scene is not None else "none"
    if (depth_spec == "sim" or mask_spec == "sim") and scene is None:
        raise MirageInputError("'sim' depth/masks need the default scene (no --image)")
    device = compute_device(cfg.device)
    kw = {"scene": scene, "fps": cfg.fps, "T_sim_world": T_sim_world, "device": device}
    depth = make_depth_provider(depth_spec, **kw)
    masks = make_mask_provider(mask_spec, **kw)
    return _Inputs(image, traj, K, depth, masks, scene, T_sim_world)


def run_rollout_job(cfg: RolloutJobConfig) -> dict[str, Any]:
    """Run ``mirage rollout``; returns the summary written to ``memory_stats.json``."""
    t_start = time.perf_counter()
    profile = _profile(cfg)
    inp = _resolve_inputs(cfg, profile)
    prompt_embeds = None
    if cfg.prompt_embeds:
        prompt_embeds = load_prompt_embeddings(cfg.prompt_embeds)
    # a trained model's own caption unless the user wrote one
    prompt = profile["prompt"] if cfg.prompt == DEFAULT_PROMPT and profile["prompt"] else (
        cfg.prompt)

    # What prepare() checks after loading, checked here before the (slow) load too: the
    # intrinsics against the image, the trajectory's length for the model's chunks, the
    # prompt. Only the prompt embeddings' width needs the loaded model.
    check_camera(inp.trajectory, tuple(inp.image.shape[-2:]), inp.K)
    plan_chunks(len(inp.trajectory), profile["chunk_latent_frames"], cfg.chunks)
    if prompt_embeds is None:
        check_prompt(prompt)

    if cfg.tiny:
        weights = build_tiny_weights(tiny_weights_dir())
        device = cfg.device or "cpu"
    else:
        weights = Path(cfg.weights)
        device = cfg.device
    t0 = time.perf_counter()
    models = load_models(
        weights, side_branch=cfg.side_branch, device=device, offload=cfg.offload,
        text_encoder_device=cfg.text_encoder_device,
        load_text_encoder=prompt_embeds is None, vae_tiling=cfg.vae_tiling,
        vae_dtype=torch.bfloat16 if cfg.vae_bf16 else torch.float32,
    )
    load_s = time.perf_counter() - t0
    # the sampler shift, chunk length and readout hole fill from the model's marker
    rcfg = RolloutConfig.for_models(
        models, cfg.steps, hole_fill=cfg.hole_fill, merge_policy=cfg.merge_policy,
        stop_sigma=cfg.stop_sigma, num_chunks=cfg.chunks, seed=cfg.seed, memory=cfg.memory,
        conditioning=cfg.conditioning,
        decode_readout=cfg.video and cfg.memory,  # readout.mp4 beside the video
        progress=cfg.progress)
    rollout = MirageRollout(models, inp.depth, inp.masks, rcfg)
    prep = rollout.prepare(
        inp.image, inp.trajectory, inp.K,
        prompt=None if prompt_embeds is not None else prompt, prompt_embeds=prompt_embeds,
    )
    H, W = prep.image.shape[-2:]
    meta = {
        "job": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "models": {"source": models.source, "side_branch": models.side_branch_source,
                   "lora": models.lora_source,
                   "parameters": models.parameter_counts(), "device": str(models.device),
                   "dtype": str(models.transformer.dtype),
                   "vae_dtype": str(models.vae.dtype), "offload": models.offload,
                   "load_s": load_s},
        # the latent memory's settings the job chose (channels, stride and device follow the
        # models' codec); None when no latent memory runs (no memory, or the RGB cache)
        "memory_config": {"merge_policy": rcfg.memory_config.merge_policy,
                          "hole_fill": rcfg.memory_config.hole_fill}
        if cfg.memory and cfg.conditioning == "latent" else None,
        "perception": {"depth": getattr(inp.depth, "name", str(inp.depth)),
                       "masks": getattr(inp.masks, "name", str(inp.masks))},
        "note": ("RANDOM tiny weights: the frames are noise; only the pipeline, shapes, "
                 "memory and timings are real" if models.is_tiny else ""),
    }
    writer = RolloutWriter(cfg.out, cfg.fps, prep.K, (H, W), meta, video=cfg.video)
    traj = prep.trajectory
    try:
        frame0 = (prep.image.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        writer.add_frames(0, frame0[None], traj.T_world_cam[:1], traj.timestamps[:1])
        writer.flush()
        for ch in rollout.run_prepared(prep):
            a, b = ch.plan.rgb_frames
            writer.add_frames(a, ch.frames, traj.T_world_cam[a:b + 1], traj.timestamps[a:b + 1])
            if ch.readout_rgb is not None:
                writer.add_readout(ch.frames[TEMPORAL_STRIDE - 1::TEMPORAL_STRIDE],
                                   ch.readout_rgb, ch.readout_mask)
            writer.initial = rollout.initial_memory
            writer.add_chunk({
                "chunk": ch.plan.index,
                "latent_indices": list(ch.plan.latent_indices),
                "pose_frames": list(ch.plan.pose_frames),
                "rgb_frames": list(ch.plan.rgb_frames),
                "memory": ch.memory,
                "readout_hole_rate": ch.readout_hole_rate,
                "time_s": ch.timings_s,
                "steps": len(ch.step_s),  # sampler steps taken (fewer with stop_sigma)
                "mean_step_s": float(np.mean(ch.step_s)),
                "peak_gpu_bytes": ch.peak_gpu_bytes,
            })
    finally:
        writer.close()
        if inp.scene is not None:
            inp.scene.close()
    summary = summarize_chunks(writer.chunks)
    summary["wall_s"] = time.perf_counter() - t_start
    summary["frames"] = writer.n_frames
    return summary
