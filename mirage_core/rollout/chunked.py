"""Algorithm 1: the chunked autoregressive Mirage rollout.

:class:`MirageRollout` takes an image, a camera trajectory, intrinsics and a prompt (or
precomputed prompt embeddings) and yields one :class:`ChunkResult` per chunk as soon as it is
generated. Per chunk (method.md section 3; frame bookkeeping in
:mod:`mirage_core.rollout.schedule`):

1. **readout** of the memory at the pose of every target latent frame, at latent resolution
   (one batched z-buffer call);
2. **denoise** the 8 target latents with UniPC (:func:`~mirage_core.generator.sampler.
   denoise_chunk`), conditioned on ``[reference, preceding]`` and the readouts;
3. **decode** the 8 targets to their 32 RGB frames as a continuation of one video: a
   :meth:`~mirage_core.codecs.LatentCodec.stream_decoder` carries the causal VAE cache from
   chunk to chunk (the preceding latent is the overlap, already decoded), so the frames equal
   one continuous decode of ``[z_0, targets of chunk 0, targets of chunk 1, ...]`` and there
   is no seam at chunk boundaries (chunk 0 decodes ``[z_0, targets]`` and drops frame 0);
4. **depth** and **masks** (dynamic objects and sky) on the decoded frame of each target
   latent (RGB frame ``4 j``);
5. **re-encode** those frames with the VAE and **update** the memory (Eq. 4/6).

Everything that can be checked about the inputs is checked in :meth:`MirageRollout.prepare`
before the first model call. Options: ``memory=False`` runs the backbone with no side-branch
input (the no-memory ablation); ``conditioning="rgb_cache"`` replaces the latent memory with
the RGB point-cloud baseline (rasterise at full resolution, then VAE-encode); the latent
memory's merge policy and other settings come from ``memory_config``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.loading import MirageModels
from mirage_core.generator.sampler import SamplerConfig, denoise_chunk
from mirage_core.generator.segment_rope import SegmentLabel
from mirage_core.generator.text import check_prompt
from mirage_core.geometry import se3_inverse
from mirage_core.memory import (
    CONDITIONING_MODES,
    LatentSpatialMemory,
    MemoryConfig,
    Observation,
    RGBPointCache,
    memory_for,
)
from mirage_core.rollout.inputs import check_camera, check_image
from mirage_core.rollout.schedule import ChunkPlan, plan_chunks
from mirage_core.trajectory import Trajectory

__all__ = ["CONDITIONING_MODES", "ChunkResult", "MirageRollout", "PreparedRollout", "RolloutConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutConfig:
    """Settings of one rollout.

    Attributes:
        sampler: UniPC settings (40 steps by default).
        chunk_latent_frames: latent frames per chunk including the 1-frame overlap (9).
        num_chunks: chunks to generate; ``None`` = as many as the trajectory's poses allow.
        seed: noise seed; chunk ``c`` uses ``seed + c``.
        memory: ``False`` = no memory at all (side branch skipped; nothing read or written).
        conditioning: ``"latent"`` (Mirage) or ``"rgb_cache"`` (the RGB point-cloud baseline).
        memory_config: the latent memory's settings (merge policy, depth downsampling, ...);
            its ``device`` is replaced by the models' device.
        use_reference: put the input image's latent in every forward pass as REFERENCE.
        decode_readout: also decode what the memory gave each target latent to RGB
            (:attr:`ChunkResult.readout_rgb`; one image decode per target latent, timed as
            ``readout_decode`` and not part of ``total``), for looking at.
        progress: show a tqdm progress bar over denoising steps.
    """

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    chunk_latent_frames: int = 9
    num_chunks: int | None = None
    seed: int = 0
    memory: bool = True
    conditioning: str = "latent"
    memory_config: MemoryConfig = field(default_factory=MemoryConfig)
    use_reference: bool = True
    decode_readout: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONING_MODES:
            raise MirageInputError(
                f"conditioning must be one of {CONDITIONING_MODES}, got {self.conditioning!r}"
            )
        if self.chunk_latent_frames < 2:
            raise MirageInputError(
                f"chunk_latent_frames must be >= 2, got {self.chunk_latent_frames}"
            )
        if self.num_chunks is not None and self.num_chunks < 1:
            raise MirageInputError(f"num_chunks must be >= 1 or None, got {self.num_chunks}")

    @classmethod
    def for_models(cls, models, steps: int = 40, hole_fill: int | None = None,
                   merge_policy: str = "fill_empty", memory_guidance: float = 1.0,
                   stop_sigma: float = 0.0, **kw) -> RolloutConfig:
        """Settings for ``models`` (:class:`MirageModels`) from its weights marker: the
        sampler's ``flow_shift`` and the ``chunk_latent_frames`` it was trained with, and the
        latent readout's hole fill it runs with (``MemoryConfig.hole_fill``; ``hole_fill``
        overrides it); ``memory_guidance`` and ``stop_sigma`` are :class:`SamplerConfig`'s
        (1.0 and 0.0: the paper's sampler). ``kw`` are the other fields (``seed``,
        ``memory``, ``conditioning``).
        """
        fill = models.readout_hole_fill if hole_fill is None else hole_fill
        return cls(sampler=SamplerConfig(steps=steps, flow_shift=models.flow_shift,
                                         memory_guidance=memory_guidance,
                                         stop_sigma=stop_sigma),
                   chunk_latent_frames=models.chunk_latent_frames,
                   memory_config=MemoryConfig(merge_policy=merge_policy, hole_fill=fill), **kw)


@dataclass
class ChunkResult:
    """What one chunk produced.

    Attributes:
        plan: which latents / RGB frames / poses this chunk covers.
        frames: ``[32, H, W, 3]`` uint8 new RGB frames (``plan.rgb_frames``).
        latents: ``[48, 8, h, w]`` float32 denoised target latents (CPU).
        readout_hole_rate: per target latent, fraction of cells the readout leaves empty
            (after the hole fill, when ``MemoryConfig.hole_fill`` is on).
        timings_s: ``readout, denoise, decode, depth, masks, encode, update, total`` seconds.
        step_s: wall time of each denoising step.
        memory: memory statistics after the update (points, bytes, growth, ...).
        peak_gpu_bytes: peak CUDA memory allocated during the chunk (``None`` on CPU).
        readout_rgb: ``[8, H, W, 3]`` uint8, the memory readout of each target latent decoded
            to RGB (cells the memory does not cover decode from zero latents); ``None``
            unless ``RolloutConfig.decode_readout`` and the memory is on.
        readout_mask: ``[8, h, w]`` bool visibility of each readout cell (latent grid).
    """

    plan: ChunkPlan
    frames: np.ndarray
    latents: torch.Tensor
    readout_hole_rate: list[float]
    timings_s: dict[str, float]
    step_s: list[float]
    memory: dict[str, Any]
    peak_gpu_bytes: int | None = None
    readout_rgb: np.ndarray | None = None
    readout_mask: np.ndarray | None = None


@dataclass
class PreparedRollout:
    """Checked inputs, ready for :meth:`MirageRollout.run_prepared`."""

    image: torch.Tensor  # [3, H, W] float32 in [0, 1]
    trajectory: Trajectory  # first pose = world (identity)
    K: torch.Tensor  # [3, 3] float64
    plans: list[ChunkPlan]
    prompt: str | None
    prompt_embeds: torch.Tensor | None  # [1, L, text_dim]


class MirageRollout:
    """Algorithm 1 over loaded :class:`~mirage_core.generator.loading.MirageModels`.

    Args:
        models: the loaded generator (transformer + side branch, VAE, text encoder).
        depth: a :class:`mirage_core.perception.DepthProvider` (DA3, simulator, given, ...).
        masks: a :class:`mirage_core.perception.MaskProvider` for dynamic objects, or ``None``.
        config: :class:`RolloutConfig`.
        memory_factory: ``None`` = an in-process memory per rollout; otherwise a callable
            returning a fresh memory for each rollout (called once per :meth:`run_prepared`),
            with the memory's ``update(Observation)``, ``readout(T_cam_world, K, (H, W)) ->
            Readout``, ``nbytes`` and ``num_points``; e.g. the ROS graph's memory node behind
            its services (:class:`mirage_ros.remote_memory.RemoteMemory`). Poses passed to it
            are in the rollout's world frame (the first pose's camera). Only with
            ``conditioning="latent"``.
    """

    def __init__(self, models: MirageModels, depth, masks=None,
                 config: RolloutConfig | None = None, memory_factory=None) -> None:
        self.models = models
        self.depth = depth
        self.masks = masks
        self.config = config or RolloutConfig()
        if memory_factory is not None and self.config.conditioning != "latent":
            raise MirageInputError("memory_factory needs conditioning='latent'")
        self.memory_factory = memory_factory
        self.memory: LatentSpatialMemory | RGBPointCache | None = None
        #: memory statistics right after the input frame was written (set by the rollout)
        self.initial_memory: dict[str, Any] = {}

    # ------------------------------------------------------------------ checks, no heavy work
    def prepare(
        self,
        image,
        trajectory: Trajectory,
        K=None,
        prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
    ) -> PreparedRollout:
        """Check every input; nothing heavy runs. Raises ``MirageInputError`` subclasses.

        Args:
            image: ``[H, W, 3]`` uint8 or ``[3, H, W]`` float in ``[0, 1]``; H, W multiples of 32.
            trajectory: RGB-frame poses; pose 0 is the input image's camera. Poses are
                re-expressed relative to pose 0 (Mirage's world frame).
            K: ``[3, 3]`` pixel intrinsics; default the trajectory's.
            prompt: text prompt, or ``None`` with ``prompt_embeds``.
            prompt_embeds: ``[1, L, text_dim]`` precomputed UMT5 states.
        """
        img = check_image(image)
        H, W = img.shape[-2:]
        trained_hw = self.models.image_hw
        if trained_hw is not None and tuple(trained_hw) != (H, W):
            log.warning("this model was trained at %dx%d; it runs on %dx%d images, but its "
                        "frames there are not what its figures describe (docs/model_card.md)",
                        trained_hw[0], trained_hw[1], H, W)
        if not isinstance(trajectory, Trajectory):
            raise MirageInputError(f"trajectory must be a Trajectory, got {type(trajectory)}")
        Kc = check_camera(trajectory, (H, W), K)
        plans = plan_chunks(len(trajectory), self.config.chunk_latent_frames,
                            self.config.num_chunks)
        used = plans[-1].rgb_frames[1] + 1
        if used < len(trajectory):
            log.warning("using the first %d of %d poses (whole chunks only)", used,
                        len(trajectory))
        traj = trajectory
        if not torch.allclose(traj.T_world_cam[0], torch.eye(4, dtype=torch.float64),
                              atol=1e-9):
            traj = traj.relative_to_first()
        if (prompt is None) == (prompt_embeds is None):
            raise MirageInputError("give exactly one of prompt or prompt_embeds")
        if prompt is not None:
            prompt = check_prompt(prompt)
        else:
            pe = torch.as_tensor(prompt_embeds)
            if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[-1] != self.models.text_dim:
                raise ShapeError(
                    f"prompt_embeds must be [1, L, {self.models.text_dim}], got {tuple(pe.shape)}"
                )
            if not torch.isfinite(pe).all():
                raise MirageInputError("prompt_embeds contain NaN/inf")
            prompt_embeds = pe.to(torch.float32)
        stride = self.models.vae.stride
        if H % stride or W % stride:
            raise ShapeError(f"image {H}x{W} not divisible by the VAE stride {stride}")
        return PreparedRollout(img, traj, Kc, plans, prompt, prompt_embeds)

    def run(self, image, trajectory: Trajectory, K=None, prompt: str | None = None,
            prompt_embeds: torch.Tensor | None = None) -> Iterator[ChunkResult]:
        """Check the inputs, then yield one :class:`ChunkResult` per chunk."""
        prep = self.prepare(image, trajectory, K, prompt, prompt_embeds)
        yield from self.run_prepared(prep)

    # ------------------------------------------------------------------ the loop
    def _new_memory(self):
        cfg = self.config
        if self.memory_factory is not None:
            return self.memory_factory()
        return memory_for(cfg.conditioning, self.models.vae, self.models.device,
                          cfg.memory_config)

    def _perceive(self, frames, K, T_world_cam, idx, ref_depth):
        """Depth, dynamic+sky mask for ``frames`` ``[N, 3, H, W]``; returns (depth, mask, t)."""
        t0 = time.perf_counter()
        est = self.depth.estimate(frames, K, T_world_cam, idx, reference_depth=ref_depth)
        t1 = time.perf_counter()
        N, _, H, W = frames.shape
        mask = torch.zeros((N, H, W), dtype=torch.bool)
        if est.sky is not None:
            mask |= est.sky.cpu().bool()
        if self.masks is not None:
            mask |= self.masks.masks(frames, K, T_world_cam, idx).cpu().bool()
        t2 = time.perf_counter()
        return est.depth.to(torch.float32).cpu(), mask, {"depth": t1 - t0, "masks": t2 - t1}

    def _write(self, latents, frames, depth, mask, K, T_cam_world):
        """Update the memory with N frames (latent memory: re-encoded latents)."""
        for i in range(depth.shape[0]):
            obs = Observation(
                depth=depth[i], K=K, T_cam_world=T_cam_world[i], mask=mask[i],
                latent=None if latents is None else latents[i],
                image=frames[i] if latents is None else None,
            )
            self.memory.update(obs)

    def _stats(self, prev_bytes: int) -> dict[str, Any]:
        mem = self.memory
        if mem is None:
            return {"points": 0, "bytes": 0, "growth_bytes": 0}
        b = int(mem.nbytes)
        return {"points": int(mem.num_points), "bytes": b, "growth_bytes": b - prev_bytes}

    def run_prepared(self, prep: PreparedRollout) -> Iterator[ChunkResult]:
        """The loop of Algorithm 1 over checked inputs (see the module docstring)."""
        cfg = self.config
        m = self.models
        dev = m.device
        cuda = dev.type == "cuda"
        K = prep.K
        T_wc = prep.trajectory.T_world_cam
        T_cw = se3_inverse(T_wc)
        H, W = prep.image.shape[-2:]
        h, w = m.vae.latent_hw((H, W))

        text = (
            m.encode_prompt(prep.prompt) if prep.prompt is not None else prep.prompt_embeds
        ).to(dev)

        # Lines 1-4: encode I_0, depth + masks, initialise the memory.
        img0 = prep.image[None]
        with m.placed("vae"):
            z0 = m.vae.encode(img0.to(m.vae.device)).to(dev)  # [1, 48, h, w]
        self.memory = None
        prev_bytes = 0
        if callable(getattr(self.depth, "reset", None)):
            self.depth.reset()  # per-rollout state, e.g. a relative-depth scale
        if cfg.memory:
            self.memory = self._new_memory()
            d0, mask0, _ = self._perceive(img0, K, T_wc[:1], [0], None)
            # Writing never runs the VAE (the latent is z0; the RGB cache stores pixels).
            self._write(
                z0 if cfg.conditioning == "latent" else None, img0, d0, mask0, K, T_cw[:1]
            )
            prev_bytes = int(self.memory.nbytes)
        self.initial_memory = self._stats(0)

        reference = z0[:, :, None]  # [1, 48, 1, h, w]
        preceding = z0[:, :, None]
        # One causal decoder state for the whole rollout (GiBs at 704x1280), parked on the CPU
        # between chunks when memory is short: model offload, or VAE tiling.
        park = "cpu" if cuda and (m.offload == "model" or m.vae.vae.use_tiling) else None
        stream = m.vae.stream_decoder(cache_device=park)
        n_new = cfg.chunk_latent_frames - 1
        labels = ([SegmentLabel.REFERENCE] if cfg.use_reference else []) + [
            SegmentLabel.PRECEDING
        ] + [SegmentLabel.TARGET] * n_new
        total_steps = cfg.sampler.steps_run * len(prep.plans)
        bar = _progress(total_steps, cfg.progress)
        try:
            for plan in prep.plans:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                t_chunk = time.perf_counter()
                timings: dict[str, float] = {}
                pose_idx = list(plan.pose_frames)

                # Lines 8-10: readout at latent resolution for every target latent.
                t0 = time.perf_counter()
                readout = mask = None
                readout_rgb = readout_mask = None
                holes = [1.0] * n_new
                ref_depth = None
                if self.memory is not None:
                    with (m.placed("vae") if cfg.conditioning == "rgb_cache"
                          else contextlib.nullcontext()):
                        r = self.memory.readout(T_cw[pose_idx], K, (H, W))
                    zhat = r.zhat.to(dev, torch.float32)  # [8, 48, h, w]
                    vis = r.mask.to(dev)  # [8, h, w]
                    holes = [1.0 - float(v.float().mean()) for v in vis]
                    ref_depth = r.depth.cpu() if cfg.conditioning == "latent" else None
                    n_clean = len(labels) - n_new
                    readout = torch.zeros((1, zhat.shape[1], len(labels), h, w), device=dev)
                    readout[0, :, n_clean:] = zhat.permute(1, 0, 2, 3)
                    mask = torch.zeros((1, len(labels), h, w), device=dev)
                    mask[0, n_clean:] = vis.to(torch.float32)
                if cuda:
                    torch.cuda.synchronize(dev)
                timings["readout"] = time.perf_counter() - t0
                if cfg.decode_readout and self.memory is not None:
                    t1 = time.perf_counter()
                    with m.placed("vae"):
                        rgb = m.vae.decode(zhat.to(m.vae.device))  # [8, 3, H, W]
                    readout_rgb = (rgb.permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5
                                   ).astype(np.uint8)
                    readout_mask = vis.cpu().numpy().astype(bool)
                    timings["readout_decode"] = time.perf_counter() - t1

                # Line 11: denoise the chunk.
                clean = torch.cat(
                    ([reference] if cfg.use_reference else []) + [preceding], dim=2
                )
                t0 = time.perf_counter()
                with m.placed("transformer"):
                    targets, step_s = denoise_chunk(
                        m.transformer, clean, labels, text, readout, mask,
                        cfg.sampler, seed=cfg.seed + plan.index,
                        step_callback=lambda i, n: bar.update(1),
                    )
                timings["denoise"] = time.perf_counter() - t0

                # Line 13: decode the targets as the continuation of one video. The preceding
                # latent was decoded already (chunk 0: z0, whose frame 0 is dropped; the input
                # image is frame 0), so only the targets emit frames: 4 each, 32 in all.
                t0 = time.perf_counter()
                with m.placed("vae"):
                    video = stream.decode(torch.cat([preceding, targets], dim=2),
                                          overlap=preceding.shape[2] if stream.latents_seen else 0)
                n_frames = m.vae.temporal_stride * n_new
                new = video[0, :, -n_frames:].permute(1, 0, 2, 3).cpu()  # [32, 3, H, W]
                timings["decode"] = time.perf_counter() - t0
                # RGB frame 4j of target latent j is new[4k - 1], k = 1..8.
                key = new[3::4]  # [8, 3, H, W]

                # Lines 14-17: depth, masks, re-encode, back-project.
                enc_s = upd_s = 0.0
                if self.memory is not None:
                    depth, dmask, tp = self._perceive(key, K, T_wc[pose_idx], pose_idx,
                                                      ref_depth)
                    timings.update(tp)
                    t0 = time.perf_counter()
                    ztil = None
                    if cfg.conditioning == "latent":
                        with m.placed("vae"):
                            ztil = m.vae.encode(key.to(m.vae.device)).to(dev)
                    enc_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._write(ztil, key, depth, dmask, K, T_cw[pose_idx])
                    if cuda:
                        torch.cuda.synchronize(dev)
                    upd_s = time.perf_counter() - t0
                else:
                    timings.update({"depth": 0.0, "masks": 0.0})
                timings["encode"] = enc_s
                timings["update"] = upd_s
                timings["total"] = (time.perf_counter() - t_chunk
                                    - timings.get("readout_decode", 0.0))  # looking, not work

                stats = self._stats(prev_bytes)
                prev_bytes = stats["bytes"]
                preceding = targets[:, :, -1:]
                frames = (new.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
                yield ChunkResult(
                    plan=plan,
                    frames=frames,
                    latents=targets[0].detach().cpu(),
                    readout_hole_rate=holes,
                    timings_s=timings,
                    step_s=step_s,
                    memory=stats,
                    peak_gpu_bytes=int(torch.cuda.max_memory_allocated(dev)) if cuda else None,
                    readout_rgb=readout_rgb,
                    readout_mask=readout_mask,
                )
        finally:
            bar.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="denoising", unit="step")
