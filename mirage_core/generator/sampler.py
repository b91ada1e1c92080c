"""UniPC flow-matching sampler for one chunk (method.md section 4; ml-stack-notes.md).

``diffusers.UniPCMultistepScheduler`` configured as Wan2.2 ships it: flow prediction,
second-order bh2 corrector, final sigma 0; 40 steps with shift 5 by default; no
classifier-free guidance (one model call per step; ``SamplerConfig.memory_guidance`` is an
opt-in of ours). Only the TARGET frames are integrated; clean frames
(reference, preceding) are passed unchanged at every step with timestep 0.

The noise levels are pinned to Wan2.2's own grid (:func:`wan22_sampling_schedule`), passed to
the scheduler as explicit sigmas, not left to diffusers' ``set_timesteps(steps)``: diffusers
0.42.1 starts its grid at sigma 1 (then 0.999999) where Wan2.2 starts at 0.999 shifted
(0.99980), and its timesteps differ from Wan2.2's at 25 of 40 steps (by 1 to 4). The model is
given Wan2.2's integer timesteps; the scheduler steps with Wan2.2's float32 sigmas.

Determinism: the initial noise comes from a ``torch.Generator`` on the CPU seeded per call,
so a given ``seed`` gives the same noise on any device; on CPU the whole chunk is bit-for-bit
reproducible (tested).
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.segment_rope import SegmentLabel, _as_labels

__all__ = ["SamplerConfig", "denoise_chunk", "make_scheduler", "wan22_sampling_schedule"]

#: Wan2.2's ``num_train_timesteps`` (the model's timestep scale, 0..1000).
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class SamplerConfig:
    """UniPC flow-matching settings.

    Attributes:
        steps: denoising steps (paper: 40).
        flow_shift: timestep shift of the flow sigmas (Wan2.2-TI2V-5B: 5.0).
        solver_order: UniPC order (2).
        conditioning_scale: multiplier on the side branch's hints (1.0).
        memory_guidance: guidance weight ``w`` on the memory (ours, not the paper's, which
            samples without guidance): with ``w != 1`` and a readout, every step runs the
            model twice, with the memory (``v_mem``) and without it (``v_none``: the side
            branch skipped, as memory dropout trains it), and integrates
            ``v_none + w (v_mem - v_none)`` (classifier-free guidance, Ho & Salimans 2022,
            with the memory as the condition). 1.0 = one call, the paper's sampler.
        stop_sigma: noise level at which to stop integrating (ours, not the paper's, which
            integrates to 0): at the first grid level ``sigma_i <= stop_sigma`` the sampler
            returns the model's estimate of the clean latents there, ``x - sigma_i v``
            (on Wan's flow path ``x_t = (1 - sigma) x0 + sigma eps`` the model predicts
            ``v = E[eps - x0 | x_t]``, so this is the posterior mean ``E[x0 | x_t]``, Tweedie's
            formula for this path) and skips the remaining steps. The posterior mean is the
            minimum-squared-error estimate given ``x_t``: the higher ``stop_sigma``, the more
            detail the model cannot predict is averaged out rather than drawn (higher PSNR,
            blurrier frames; the perception-distortion trade-off, Blau & Michaeli 2018).
            0.0 = integrate to the end, the paper's sampler; must be in ``[0, 1)``.
    """

    steps: int = 40
    flow_shift: float = 5.0
    solver_order: int = 2
    conditioning_scale: float = 1.0
    memory_guidance: float = 1.0
    stop_sigma: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise MirageInputError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not self.flow_shift > 0:
            raise MirageInputError(f"flow_shift must be > 0, got {self.flow_shift!r}")
        if self.solver_order not in (1, 2, 3):
            raise MirageInputError(f"solver_order must be 1, 2 or 3, got {self.solver_order!r}")
        g = self.memory_guidance
        if not _is_real(g) or not np.isfinite(g) or g < 0:
            raise MirageInputError(f"memory_guidance must be a finite number >= 0, got {g!r}")
        s = self.stop_sigma
        if not _is_real(s) or not 0 <= s < 1:
            raise MirageInputError(f"stop_sigma must be a number in [0, 1), got {s!r}")
        object.__setattr__(self, "memory_guidance", float(g))
        object.__setattr__(self, "stop_sigma", float(s))

    @property
    def steps_run(self) -> int:
        """Steps :func:`denoise_chunk` takes: :attr:`steps`, or with :attr:`stop_sigma` up to
        and including the first grid level at or below it."""
        if self.stop_sigma <= 0:
            return self.steps
        sigmas, _ = wan22_sampling_schedule(self.steps, self.flow_shift)
        return min(self.steps, int((sigmas[:-1] > self.stop_sigma).sum()) + 1)


def _is_real(x) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)


def wan22_sampling_schedule(
    steps: int, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan2.2's UniPC noise levels and model timesteps for ``steps`` steps with ``shift``.

    The recipe of ``FlowUniPCMultistepScheduler`` in Wan2.2 (Wan-Video/Wan2.2,
    ``wan/utils/fm_solvers_unipc.py``: ``__init__`` and ``set_timesteps``), as
    ``wan/textimage2video.py`` calls it (built with ``shift=1``, then
    ``set_timesteps(sampling_steps, shift=shift)``):

    * ``sigma_max = float32(1 - 1/N)`` (= 0.99900001), ``sigma_min = 0``, ``N`` =
      ``num_train_timesteps``;
    * ``s = linspace(sigma_max, sigma_min, steps + 1)[:-1]`` (float64), then
      ``s' = shift s / (1 + (shift - 1) s)``;
    * timesteps ``= int64(s' N)`` (truncated), sigmas ``= float32([s', 0])``.

    Returns:
        ``(sigmas, timesteps)``: ``[steps + 1]`` float32 (last 0) and ``[steps]`` int64.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MirageInputError(f"steps must be an integer >= 1, got {steps!r}")
    if not shift > 0:
        raise MirageInputError(f"shift must be > 0, got {shift!r}")
    sigma_max = float(np.float32(1.0 - 1.0 / num_train_timesteps))
    s = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    timesteps = torch.from_numpy(s * num_train_timesteps).to(torch.int64)
    sigmas = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))
    return sigmas, timesteps


def make_scheduler(config: SamplerConfig | None = None, device=None):
    """A ``UniPCMultistepScheduler`` with Wan2.2's settings, set to Wan2.2's sigma grid.

    The grid is :func:`wan22_sampling_schedule`'s, passed as explicit sigmas; the scheduler's
    own ``flow_shift`` is 1 (the identity), as Wan2.2 builds its scheduler with ``shift=1``, so
    the shift is applied exactly once whatever diffusers does with passed sigmas.

    Raises:
        RuntimeError: the installed diffusers did not take the sigmas as given (checked
            after ``set_timesteps``, so a diffusers upgrade cannot change the grid silently).
    """
    from diffusers import UniPCMultistepScheduler

    cfg = config or SamplerConfig()
    sched = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        flow_shift=1.0,
        solver_order=cfg.solver_order,
        solver_type="bh2",
        final_sigmas_type="zero",
    )
    sigmas, _ = wan22_sampling_schedule(cfg.steps, cfg.flow_shift)
    sched.set_timesteps(sigmas=sigmas[:-1].to(torch.float64).numpy().copy(), device=device)
    # Walk the grid by position, never by timestep value: with many steps (>= 251 at shift 5)
    # the integer timesteps repeat (999, 999, 998, ...), and diffusers' index_for_timestep
    # would start at the second 999, skip sigma[1] and overrun the grid at the last step.
    sched.set_begin_index(0)
    if not torch.equal(sched.sigmas.cpu().to(torch.float32), sigmas):
        import diffusers

        raise RuntimeError(
            f"diffusers {diffusers.__version__} changed the sigmas passed to "
            "UniPCMultistepScheduler.set_timesteps; the sampler grid would no longer be Wan2.2's"
        )
    return sched


def denoise_chunk(
    model,
    clean: torch.Tensor,
    labels: Sequence[int],
    text_states: torch.Tensor,
    readout: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    config: SamplerConfig | None = None,
    seed: int = 0,
    step_callback: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Denoise the TARGET frames of one chunk.

    Args:
        model: a :class:`~mirage_core.generator.transformer.MirageTransformer`.
        clean: ``[1, 48, F_clean, h, w]`` clean latents, in the order their labels appear.
        labels: ``[F]`` labels of the whole sequence; clean labels first (REFERENCE and/or
            PRECEDING), then the TARGET frames.
        text_states: ``[1, L, text_dim]``.
        readout, mask: ``[1, 48, F, h, w]`` / ``[1, F, h, w]`` side-branch input (zeros on
            clean frames), or ``None`` for no memory conditioning.
        config: :class:`SamplerConfig` (noise levels: :func:`wan22_sampling_schedule`; the
            model gets Wan2.2's integer timesteps, 999, 994, ... for 40 steps with shift 5;
            with ``stop_sigma > 0`` the steps after the first level at or below it are
            skipped and the posterior-mean estimate there is returned).
        seed: seed of the initial noise (CPU generator).
        step_callback: called as ``step_callback(i, steps)`` after each step.
    Returns:
        ``(targets, step_seconds)``: ``[1, 48, F_target, h, w]`` float32 denoised latents
        on the model's device, and the wall time of every step (model call) taken.
    """
    cfg = config or SamplerConfig()
    labs = _as_labels(labels)
    n_clean = sum(1 for lab in labs if lab != SegmentLabel.TARGET)
    if any(lab != SegmentLabel.TARGET for lab in labs[n_clean:]) or n_clean == len(labs):
        raise MirageInputError(
            "labels must list the clean frames first and at least one TARGET frame after them, "
            f"got {[lab.name for lab in labs]}"
        )
    if clean.ndim != 5 or clean.shape[0] != 1 or clean.shape[2] != n_clean:
        raise ShapeError(
            f"clean must be [1, C, {n_clean}, h, w] for labels {[lab.name for lab in labs]}, "
            f"got {tuple(clean.shape)}"
        )
    device = model.device
    _, C, _, h, w = clean.shape
    n_target = len(labs) - n_clean
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    x = torch.randn((1, C, n_target, h, w), generator=gen, dtype=torch.float32).to(device)
    clean = clean.to(device=device, dtype=torch.float32)
    if readout is not None:
        readout = readout.to(device)
        mask = mask.to(device)

    guided = readout is not None and cfg.memory_guidance != 1.0
    sched = make_scheduler(cfg, device=device)
    sigmas, model_timesteps = wan22_sampling_schedule(cfg.steps, cfg.flow_shift)
    if 0 < cfg.stop_sigma < float(sigmas[-2]):  # the grid never gets down to it
        warnings.warn(f"stop_sigma {cfg.stop_sigma} is below every noise level the sampler "
                      f"evaluates with {cfg.steps} steps and shift {cfg.flow_shift} (the "
                      f"lowest: {float(sigmas[-2]):.3g}); it has no effect", stacklevel=2)
    times = []
    with torch.no_grad():
        for i, (t, t_model) in enumerate(zip(sched.timesteps, model_timesteps, strict=True)):
            t0 = time.perf_counter()
            full = torch.cat([clean, x], dim=2)
            flow = model(
                full, float(t_model), labs, text_states, readout, mask, cfg.conditioning_scale
            )[:, :, n_clean:].to(torch.float32)
            if guided:
                flow_none = model(full, float(t_model), labs, text_states)[:, :, n_clean:]
                flow_none = flow_none.to(torch.float32)
                flow = flow_none + cfg.memory_guidance * (flow - flow_none)
            sigma = float(sigmas[i])
            stop = cfg.stop_sigma > 0 and sigma <= cfg.stop_sigma
            # stopping: the posterior mean E[x0 | x_t] = x_t - sigma v (SamplerConfig)
            x = x - sigma * flow if stop else sched.step(flow, t, x, return_dict=False)[0]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            if step_callback is not None:
                step_callback(i, cfg.steps)
            if stop:
                break
    if not torch.isfinite(x).all():
        raise FloatingPointError("the sampler produced NaN/inf latents")
    return x, times
