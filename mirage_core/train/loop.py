"""The training loop: flow matching on the TARGET latents of one chunk per step.

Per step (method.md section 5; with ``batch_size`` B, B chunks drawn so, the loss their mean):

1. pick a clip (seeded per-epoch permutation, or dataset order) and, with ``chunks="all"``, one
   of its chunks uniformly (:func:`~mirage_core.train.readouts.trainable_chunks`: every chunk
   when the clip stores ``frame_latents``, else the first);
2. build the chunk's inputs exactly as the rollout does for that chunk
   (:func:`~mirage_core.train.readouts.chunk_inputs`): memory from latent 0 and the earlier
   chunks' key frames, readout at the target poses, ``[REFERENCE, PRECEDING, TARGET x 8]``;
3. text: the clip's prompt embeddings, replaced by the empty prompt's with probability
   ``text_dropout``;
   with probability ``memory_dropout`` the step trains with no memory: the readout is emptied
   and the side branch's hints are multiplied by 0, so the model computes exactly what the
   rollout's ``memory=False`` computes (the branch skipped; it still runs, so every FSDP rank
   runs the same collectives, and its gradient is 0);
4. Wan's flow-matching objective: ``u ~ U(0, 1]``, ``sigma = s u / (1 + (s - 1) u)`` with the
   sampler's shift ``s = 5``, ``x_t = (1 - sigma) x0 + sigma eps``, timestep ``1000 sigma`` on the
   TARGET tokens and 0 on clean ones (:func:`~mirage_core.generator.transformer.
   per_token_timesteps`, as at inference), loss ``mean((v_theta - (eps - x0))^2)`` over the
   TARGET latents only;
5. AdamW step, cosine schedule with linear warmup;
6. with ``ema_decay`` > 0, the moving average of the trainable weights takes a step
   (``diffusers.training_utils.EMAModel``; checkpointed as ``mirage_ema.safetensors``, keyed
   by parameter name, and baked into exported weights).

What trains: the side branch (stage 1), + a LoRA on the backbone's self-attentions (stage 2),
or with ``train_backbone`` every weight of the transformer (from scratch with ``init:
random``); checkpoints then hold the whole model (``mirage_backbone.safetensors`` beside the
side branch, loadable for inference like any checkpoint).

Randomness is derived from ``(seed, step, rank)`` at every step, and all optimizer/scheduler
state is checkpointed, so a resumed run continues bit-for-bit on the CPU (tested).

Multi-process: launched with ``torchrun`` (``WORLD_SIZE > 1``) the transformer is sharded with
FSDP2 (``torch.distributed.fsdp.fully_shard``: one unit per Wan block of the backbone and of the
side branch, the rest in the root unit; frozen and trainable parameters share units). The
process group is ``nccl`` on CUDA and ``gloo`` on the CPU; FSDP2 is used rather than FSDP1
because FSDP1 refuses to run without an accelerator, and one code path serves both. Every rank
draws its own clip and noise (``(seed, step, rank)``); gradients are averaged over the ranks,
so one step on N ranks is one step on the mean gradient of N chunks (tested against a
single-process reference on the CPU, 2 gloo ranks). Only rank 0 writes metrics and
checkpoints; checkpoints have the same files and format as single-process ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mirage_core import __version__
from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError
from mirage_core.generator.loading import (
    BACKBONE_FILENAME,
    LORA_FILENAME,
    MODEL_CODE_VERSION,
    SIDE_BRANCH_FILENAME,
    MirageModels,
    load_backbone_file,
    save_backbone_file,
)
from mirage_core.generator.side_branch import MemorySideBranch
from mirage_core.memory import MemoryConfig
from mirage_core.train.config import RESUME_FREE_FIELDS, TrainConfig
from mirage_core.train.lora import LORA_FORMAT, apply_lora, load_lora_state_dict
from mirage_core.train.readouts import ChunkInputs, chunk_inputs, trainable_chunks

__all__ = [
    "EMA_FILENAME",
    "CheckpointMismatchError",
    "NonFiniteLossError",
    "TrainResult",
    "distributed_session",
    "encode_empty_prompt",
    "flow_matching_loss",
    "latest_checkpoint",
    "prepare_for_training",
    "sample_sigma",
    "train",
    "trainable_parameters",
]

log = logging.getLogger(__name__)

STATE_FILENAME = "trainer_state.pt"
#: a checkpoint's moving average of the trainable weights (``ema_decay`` > 0), keyed by the
#: transformer's parameter names (``backbone.*``, ``side_branch.*``), float32.
EMA_FILENAME = "mirage_ema.safetensors"
CONFIG_FILENAME = "config.json"


class CheckpointMismatchError(MirageInputError):
    """A checkpoint was written by a run with a different training config."""


class NonFiniteLossError(FloatingPointError):
    """The loss (or the gradient norm) became NaN/inf; the message names the step and clip."""

    def __init__(self, message: str, step: int, clip_key: str) -> None:
        super().__init__(message)
        self.step = step
        self.clip_key = clip_key


@dataclass
class TrainResult:
    """What a :func:`train` call did.

    Attributes:
        step: optimizer steps completed in total (including resumed ones).
        losses: loss of every step run by this call, in order.
        checkpoint: the last checkpoint written (``None`` if none).
        metrics_path: the JSONL metrics file.
        seconds: wall time of the steps run by this call.
    """

    step: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    metrics_path: Path | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------------------- objective
def sample_sigma(generator: torch.Generator, shift: float) -> float:
    """Wan's shifted flow sigma: ``u ~ U(0, 1]``, ``sigma = shift u / (1 + (shift - 1) u)``."""
    u = 1.0 - float(torch.rand((), generator=generator, dtype=torch.float64))
    return shift * u / (1.0 + (shift - 1.0) * u)


def flow_matching_loss(
    transformer: torch.nn.Module,
    inputs: ChunkInputs,
    text: torch.Tensor,
    sigma: float | torch.Tensor,
    noise: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
    conditioning_scale: float | torch.Tensor = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Flow-matching MSE on the TARGET latents of a batch of ``B`` chunks.

    Args:
        transformer: a :class:`~mirage_core.generator.transformer.MirageTransformer` (or its
            FSDP wrapper) predicting ``eps - x0``.
        inputs: clean ``[B, C, n_clean, h, w]``, targets ``x0`` ``[B, C, n_new, h, w]``,
            readout ``[B, C, F, h, w]``, mask ``[B, F, h, w]``, labels ``[F]`` (shared).
        text: ``[B, S, text_dim]`` prompt states.
        sigma: noise level in ``(0, 1]``, one number or ``[B]`` one per chunk; the model's
            timestep is ``1000 sigma`` on TARGET tokens and 0 on clean ones.
        noise: ``[B, C, n_new, h, w]`` standard normal ``eps``.
        autocast_dtype: ``torch.bfloat16`` for bf16 autocast (CUDA), ``None`` for fp32.
        conditioning_scale: multiplier on the side branch's hints, a number or ``[B]``; 0 = no
            memory (memory dropout), the backbone's output exactly.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (``[B]``, each chunk's mean).
    Returns:
        float32 loss: a scalar, or ``[B]`` with ``reduction="none"``.
    """
    if reduction not in ("mean", "none"):
        raise MirageInputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    x0 = inputs.targets
    B = x0.shape[0]
    dev = x0.device
    # sigma in float64, cast once: the same float32 factors as Python-float arithmetic gives
    sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(B)
    a = (1.0 - sig).to(torch.float32).to(dev).view(B, 1, 1, 1, 1)
    b = sig.to(torch.float32).to(dev).view(B, 1, 1, 1, 1)
    xt = a * x0 + b * noise
    full = torch.cat([inputs.clean, xt], dim=2)
    n_clean = inputs.clean.shape[2]
    t = (1000.0 * sig).to(torch.float32).to(dev)
    ctx = (torch.autocast(device_type=dev.type, dtype=autocast_dtype)
           if autocast_dtype is not None else _null())
    with ctx:
        pred = transformer(full, t, inputs.labels, text, inputs.readout, inputs.mask,
                           conditioning_scale=conditioning_scale)
    pred = pred[:, :, n_clean:].to(torch.float32)
    per_chunk = ((pred - (noise - x0)) ** 2).flatten(1).mean(1)
    return per_chunk if reduction == "none" else per_chunk.mean()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------- model setup
def prepare_for_training(models: MirageModels, config: TrainConfig) -> list[str]:
    """Freeze the backbone and VAE, unfreeze the side branch (fp32 master weights), add the
    stage-2 LoRA; with ``train_backbone`` unfreeze the backbone too (fp32 master weights),
    first re-initialising it with ``init: random``. Returns the LoRA-wrapped module names
    (empty in stage 1). In place."""
    tr = models.transformer
    if tr.side_branch is None:
        raise MirageInputError("training needs a transformer with a side branch")
    tr.requires_grad_(False)
    vae_module = getattr(models.vae, "vae", None)
    if isinstance(vae_module, torch.nn.Module):
        vae_module.requires_grad_(False).eval()
    if models.prompt_encoder is not None:
        models.prompt_encoder.text_encoder.requires_grad_(False)
    if config.train_backbone:
        if config.init == "random":
            _reinit_from_scratch(tr, config.seed)
        for p in tr.backbone.parameters():  # fp32 master weights; buffers (RoPE) as they are
            p.data = p.data.to(torch.float32)
        tr.backbone.requires_grad_(True)
    tr.side_branch.to(dtype=torch.float32).requires_grad_(True)
    names: list[str] = []
    if config.uses_lora:
        with torch.random.fork_rng(devices=[]):  # A's init depends on config.seed only
            torch.manual_seed(config.seed)
            names = apply_lora(tr.backbone, config.lora_rank, config.lora_alpha,
                               config.lora_dropout)
    tr.gradient_checkpointing = bool(config.gradient_checkpointing)
    tr.train()
    return names


def _reinit_from_scratch(transformer, seed: int) -> None:
    """Random backbone weights as diffusers initialises a new ``WanTransformer3DModel`` (from
    ``seed``, the global RNG untouched), then the side branch as ``load_models`` builds a zero
    one on it: blocks copied from the backbone's, projections zero."""
    from diffusers import WanTransformer3DModel

    bb = transformer.backbone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        fresh = WanTransformer3DModel.from_config(bb.config)
    with torch.no_grad():
        bb.load_state_dict(fresh.state_dict())
        transformer.side_branch.init_from_backbone(bb)
        transformer.side_branch.zero_init()


def trainable_parameters(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of every trainable parameter, in module order."""
    return [(n, p) for n, p in transformer.named_parameters() if p.requires_grad]


def _lr_lambda(config: TrainConfig):
    warm, total, floor = config.warmup_steps, config.steps, config.min_lr_ratio

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


# ------------------------------------------------------------------------------- checkpoints
def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest ``out_dir/checkpoints/step_*`` directory, or ``None``."""
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return None
    steps = sorted(p for p in d.glob("step_*") if (p / STATE_FILENAME).is_file())
    return steps[-1] if steps else None


def _save_checkpoint(out_dir: Path, step: int, transformer, scheduler, config: TrainConfig,
                     lora_names: list[str], keep_last: int, trainable: dict[str, torch.Tensor],
                     optim_state: dict, ema: tuple[dict[str, torch.Tensor], int] | None = None
                     ) -> Path:
    """Write ``checkpoints/step_N`` from full (gathered, CPU) state dicts.

    ``trainable``: the transformer's trainable tensors + buffers keyed by name
    (``side_branch.*``, ``backbone.*.lora_A/B``, or with ``train_backbone`` every
    ``backbone.*``, written as ``mirage_backbone.safetensors``); ``optim_state``: the optimizer
    state keyed by parameter name (``torch.distributed.checkpoint.state_dict`` format), so a
    checkpoint written by N ranks resumes on M ranks; ``ema``: the weight average's full
    tensors keyed by parameter name and its step count (``ema_decay`` > 0), written as
    ``mirage_ema.safetensors``.
    """
    from safetensors.torch import save_file

    ck_root = out_dir / "checkpoints"
    final = ck_root / f"step_{step:08d}"
    tmp = ck_root / f".tmp_step_{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sb: MemorySideBranch = transformer.side_branch
    branch = MemorySideBranch(sb.config)
    branch.load_state_dict({k[len("side_branch."):]: v for k, v in trainable.items()
                            if k.startswith("side_branch.")})
    branch.save(tmp / SIDE_BRANCH_FILENAME)
    lora = {k[len("backbone."):]: v.detach().contiguous().cpu() for k, v in trainable.items()
            if k.startswith("backbone.") and ".lora_" in k}
    if lora:
        meta = {"format": LORA_FORMAT, "rank": str(config.lora_rank),
                "alpha": str(config.lora_alpha), "modules": json.dumps(lora_names)}
        save_file(lora, str(tmp / LORA_FILENAME), metadata=meta)
    backbone = {k[len("backbone."):]: v for k, v in trainable.items()
                if k.startswith("backbone.") and ".lora_" not in k}
    if backbone:
        save_backbone_file(tmp / BACKBONE_FILENAME, backbone, transformer.backbone.config)
    if ema is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema[0].items()},
                  str(tmp / EMA_FILENAME), metadata={"ema_decay": str(config.ema_decay),
                                                     "ema_steps": str(ema[1])})
    torch.save({
        "step": step,
        "ema_steps": None if ema is None else ema[1],
        "model_version": MODEL_CODE_VERSION,
        "mirage_version": __version__,
        "optimizer": optim_state,
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }, tmp / STATE_FILENAME)
    config.save(tmp / CONFIG_FILENAME)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    old = sorted(p for p in ck_root.glob("step_*") if p != final)
    for p in old[: max(0, len(old) - (keep_last - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _check_resume(ckpt: Path, config: TrainConfig) -> dict:
    """Refuse a resume whose config differs from the checkpoint's, except bookkeeping fields
    and a longer ``steps`` (extending a run: allowed, with a warning, since the cosine schedule
    is then stretched over the new total and the run no longer equals a straight one), or
    whose model code version differs from this code's (both named). Returns the trainer
    state (optimizer, scheduler, step, RNG)."""
    try:
        saved = TrainConfig.from_file(ckpt / CONFIG_FILENAME)
    except (MirageInputError, json.JSONDecodeError) as e:
        raise CheckpointMismatchError(f"checkpoint {str(ckpt)!r} has an unreadable config: {e}"
                                      ) from e
    diffs = saved.differences(config, ignore=(*RESUME_FREE_FIELDS, "steps"))
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint {str(ckpt)!r} was written with a different training config; "
            f"differing fields (checkpoint vs now): {'; '.join(diffs)}. Resume with the same "
            "config, or start a new run in another out_dir."
        )
    done = int(ckpt.name.rsplit("_", 1)[-1])
    if config.steps < done:
        raise CheckpointMismatchError(
            f"checkpoint {str(ckpt)!r} is at step {done}, past steps={config.steps}; pass "
            f"steps >= {done} to continue it"
        )
    if config.steps != saved.steps:
        warnings.warn(
            f"resuming {str(ckpt)!r} (step {done}) with steps={config.steps} instead of "
            f"{saved.steps}: the cosine schedule now spans {config.steps} steps from here on "
            "(the run is no longer equal to a straight run of either length)",
            stacklevel=3,
        )
    state = torch.load(ckpt / STATE_FILENAME, map_location="cpu", weights_only=False)
    # checkpoints from before the field existed were written by version-1 code
    found = state.get("model_version", 1)
    if found != MODEL_CODE_VERSION:
        raise CheckpointMismatchError(
            f"checkpoint {str(ckpt)!r} was written by model code version {found} (mirage "
            f"{state.get('mirage_version', 'unknown')}); this code is model version "
            f"{MODEL_CODE_VERSION} (mirage {__version__}), whose weights mean something else. "
            "Resume it with the mirage version that wrote it, or start a new run in another "
            "out_dir."
        )
    return state


def _load_trainable(ckpt: Path, transformer, config: TrainConfig) -> None:
    from mirage_core.safetensors_io import read_safetensors

    bb_file = ckpt / BACKBONE_FILENAME
    if config.train_backbone:
        if not bb_file.is_file():
            raise CheckpointMismatchError(
                f"checkpoint {str(ckpt)!r} has no {BACKBONE_FILENAME}, but this run trains the "
                "backbone (train_backbone: true): it cannot be resumed"
            )
        load_backbone_file(transformer.backbone, bb_file, "this run's backbone")

    sb = transformer.side_branch
    loaded = MemorySideBranch.load(ckpt / SIDE_BRANCH_FILENAME, sb.config, dtype=torch.float32)
    with torch.no_grad():
        for k, v in sb.state_dict().items():
            v.copy_(loaded.state_dict()[k])
    lora_file = ckpt / LORA_FILENAME
    if lora_file.is_file():
        tensors, _ = read_safetensors(lora_file, CheckpointMismatchError)
        load_lora_state_dict(transformer.backbone, tensors)


def _make_ema(config: TrainConfig, params: list[torch.nn.Parameter]):
    """The weight average of ``params`` (``config.ema_decay`` > 0), else ``None``."""
    if not config.ema_decay:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=float(config.ema_decay), foreach=True)


def _ema_state(ema, names: list[str]) -> tuple[dict[str, torch.Tensor], int] | None:
    """The average's full tensors by parameter name (a collective under FSDP) and its steps."""
    if ema is None:
        return None
    return ({n: _full(s) for n, s in zip(names, ema.shadow_params, strict=True)},
            int(ema.optimization_step))


def _load_ema(ckpt: Path, ema, names: list[str], state: dict) -> None:
    """Restore the average written with ``ckpt`` into ``ema`` (sharded like the parameters
    under FSDP). Raises :class:`CheckpointMismatchError` when the checkpoint has none."""
    from mirage_core.safetensors_io import read_safetensors

    path = ckpt / EMA_FILENAME
    if not path.is_file() or state.get("ema_steps") is None:
        raise CheckpointMismatchError(
            f"checkpoint {str(ckpt)!r} has no {EMA_FILENAME}, but this run keeps a weight "
            "average (ema_decay > 0): it cannot be resumed with one"
        )
    tensors, _ = read_safetensors(path, CheckpointMismatchError)
    missing = sorted(set(names) - set(tensors))
    if missing:
        raise CheckpointMismatchError(
            f"{str(path)!r} lacks the average of {len(missing)} trainable parameters "
            f"(e.g. {missing[0]!r})"
        )
    with torch.no_grad():
        for n, s in zip(names, ema.shadow_params, strict=True):
            full = tensors[n].to(device=s.device, dtype=s.dtype)
            mesh = getattr(s, "device_mesh", None)
            if mesh is not None:  # FSDP2: a DTensor shard of the average
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full, mesh, s.placements)
            s.copy_(full)
    ema.optimization_step = int(state["ema_steps"])


# ------------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> tuple[_Dist, bool]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``.

    Backend ``nccl`` with ``cuda:LOCAL_RANK`` as the current device on CUDA, ``gloo`` on the CPU
    (no ``set_device`` there). Returns the ranks and whether this call created the group (the
    creator destroys it, see :func:`distributed_session`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), False
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)  # before init, so nccl binds the right GPU
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        created = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local), created


@contextlib.contextmanager
def distributed_session() -> Iterator[_Dist]:
    """``with distributed_session() as d:`` the process group of a ``torchrun`` launch.

    Single process (no ``WORLD_SIZE`` or 1): yields rank 0 of 1 and does nothing. Otherwise joins
    the group; on leaving, if this session created it: a barrier (after a normal exit or a NaN
    stop, which every rank raises at the same step) and ``destroy_process_group``. Nested
    sessions (``main_train`` around :func:`train`) share the outer one's group.
    """
    info, created = _init_distributed()
    try:
        yield info
    except NonFiniteLossError:
        if created:
            torch.distributed.barrier()
        raise
    else:
        if created:
            torch.distributed.barrier()
    finally:
        if created:
            torch.distributed.destroy_process_group()


def _wrap_fsdp(transformer: torch.nn.Module, dist_info: _Dist) -> torch.nn.Module:
    """Shard ``transformer`` in place with FSDP2: one unit per ``WanTransformerBlock`` (backbone
    and side branch), the root unit holds the rest (embeddings, heads, side-branch
    projections). Frozen (backbone, LoRA base) and trainable (side branch, LoRA A/B) parameters
    may share a unit; trainable ones must share a dtype (fp32 master weights, as here).
    """
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dev = next(transformer.parameters()).device
    mesh = init_device_mesh(dev.type, (dist_info.world,))
    blocks = [m for m in transformer.modules() if isinstance(m, WanTransformerBlock)]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(transformer, mesh=mesh)
    return transformer


def _full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """Trainable tensors (+ buffers) and optimizer state, gathered in full on the CPU, keyed by
    parameter name. Collective under FSDP (every rank must call it); only rank 0 gets the
    tensors then (other ranks get empty dicts)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return (get_model_state_dict(model, options=opts),
            get_optimizer_state_dict(model, optimizer, options=opts))


def _load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict
                    ) -> None:
    """Load a name-keyed full optimizer state (every rank reads the whole file and keeps its
    shard); an integer-keyed ``optimizer.state_dict()`` (older single-process checkpoints) is
    loaded directly."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if all(isinstance(k, int) for k in saved.get("state", {})) and saved.get("param_groups") \
            and all(isinstance(i, int) for i in saved["param_groups"][0]["params"]):
        optimizer.load_state_dict(saved)
        return
    set_optimizer_state_dict(model, optimizer, saved,
                             options=StateDictOptions(full_state_dict=True))


def _mean_over_ranks(x: float, dist_info: _Dist, device: torch.device
                     ) -> tuple[float, list[float]]:
    """``(mean, per-rank values)`` of a per-rank scalar; every rank gets the same answer (a NaN
    on one rank stays in its own slot)."""
    if dist_info.world == 1:
        return x, [x]
    v = torch.zeros(dist_info.world, dtype=torch.float64, device=device)
    v[dist_info.rank] = x
    torch.distributed.all_reduce(v)
    vals = v.cpu().tolist()
    return sum(vals) / len(vals), vals


# ------------------------------------------------------------------------------- the loop
def _step_seed(seed: int, step: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def _clip_index(config: TrainConfig, sample: int, n: int, dist_info: _Dist) -> int:
    """Clip of (0-based) ``sample`` on this rank (``step * batch_size + b``: with batch 1 the
    step): per-epoch seeded permutation or in order."""
    flat = sample * dist_info.world + dist_info.rank
    epoch, pos = divmod(flat, n)
    if not config.shuffle:
        return pos
    g = torch.Generator().manual_seed(_step_seed(config.seed, epoch, 0) + 17)
    return int(torch.randperm(n, generator=g)[pos])


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.mixed_precision == "fp32":
        return None
    if config.mixed_precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" else None


class _Metrics:
    def __init__(self, path: Path, use_tb: bool, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.tb = None
        if enabled and use_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(k, v, rec["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def encode_empty_prompt(models: MirageModels) -> torch.Tensor:
    """``[1, max_tokens, text_dim]`` float32 UMT5 states of the empty prompt (text dropout),
    through ``PromptEncoder.encode(..., allow_empty=True)``."""
    enc = models.prompt_encoder
    if enc is None:
        raise MirageInputError(
            "text_dropout > 0 needs the empty prompt's embeddings: load the text encoder or pass "
            "empty_prompt_embeds"
        )
    return enc.encode("", allow_empty=True).cpu()


def _text_for(models: MirageModels, clip: Clip, empty: torch.Tensor | None) -> torch.Tensor:
    """The clip's prompt states; an uncaptioned clip (``prompt == ""``) trains with the empty
    prompt's states, as text dropout does."""
    if clip.prompt_embeds is not None:
        return clip.prompt_embeds.to(torch.float32)
    if not clip.prompt:
        return empty if empty is not None else encode_empty_prompt(models)
    return models.encode_prompt(clip.prompt)


@dataclass
class _StepInputs:
    clip: Clip
    chunk: int
    inputs: ChunkInputs
    text: torch.Tensor  # [1, S, text_dim] on the device
    text_dropped: bool
    memory_dropped: bool  # memory dropout: empty readout, hints x 0 (= the rollout's no memory)
    sigma: float
    noise: torch.Tensor  # [1, C, n_new, h, w] on the device


def _memory_dropped(p: float, seed: int) -> bool:
    """Memory dropout of the step whose seed is ``seed``: ``u < p`` with ``u ~ U[0, 1)`` from its
    own stream (``seed + 3``), so runs without dropout keep every other draw."""
    if p <= 0:
        return False
    return float(torch.rand((), generator=torch.Generator().manual_seed(seed + 3))) < p


def _step_inputs(config: TrainConfig, clips: Sequence[Clip], sample: int, dist_info: _Dist,
                 models: MirageModels, empty: torch.Tensor | None) -> _StepInputs:
    """Everything random about (0-based) ``sample`` on this rank (``step * batch_size + b``:
    with batch 1 the step), from ``(seed, sample, rank)``; also re-seeds the global RNG
    (LoRA dropout) for the forward that follows."""
    dev = models.device
    clip = clips[_clip_index(config, sample, len(clips), dist_info)]
    seed = _step_seed(config.seed, sample, dist_info.rank)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1)  # LoRA dropout
    n_chunks = trainable_chunks(clip, config.chunk_latent_frames)
    if n_chunks == 0:
        raise MirageInputError(
            f"clip {clip.key!r} has {clip.num_latent_frames} latent frames; a training chunk "
            f"needs {config.chunk_latent_frames}"
        )
    chunk = 0
    if config.chunks == "all" and n_chunks > 1:  # own stream: "first" keeps its draws
        chunk = int(torch.randint(n_chunks, (), generator=torch.Generator().manual_seed(seed + 2)))
    inputs = chunk_inputs(clip, models.vae.channels, models.vae.stride, dev,
                          config.chunk_latent_frames, config.use_reference, chunk=chunk,
                          conditioning=config.conditioning, codec=models.vae,
                          memory_config=MemoryConfig(hole_fill=config.readout_hole_fill))
    dropped = _memory_dropped(config.memory_dropout, seed)
    if dropped:  # what the side branch sees; the hints are zeroed by conditioning_scale 0
        inputs = replace(inputs, readout=torch.zeros_like(inputs.readout),
                         mask=torch.zeros_like(inputs.mask),
                         hole_rate=[1.0] * len(inputs.hole_rate))
    drop = float(torch.rand((), generator=gen)) < config.text_dropout
    text = (empty if drop else _text_for(models, clip, empty)).to(dev)
    sigma = sample_sigma(gen, config.flow_shift)
    noise = torch.randn(inputs.targets.shape, generator=gen).to(dev)
    return _StepInputs(clip, chunk, inputs, text, drop, dropped, sigma, noise)


@dataclass
class _Batch:
    """``B`` :class:`_StepInputs` stacked for one forward."""

    inputs: ChunkInputs  # every tensor [B, ...]; labels shared
    text: torch.Tensor  # [B, S, text_dim], zero-padded to the longest S
    sigma: torch.Tensor  # [B] float64
    noise: torch.Tensor  # [B, C, n_new, h, w]
    scale: torch.Tensor  # [B] hints' multiplier: 0 where memory is dropped


def _collate(items: Sequence[_StepInputs]) -> _Batch:
    """Stack the chunks of one step. Prompt states of different lengths are zero-padded to
    the longest, as UMT5 states are padded (diffusers ``WanPipeline._get_t5_prompt_embeds``);
    with one item the tensors are its own."""
    labels = items[0].inputs.labels
    if any(list(it.inputs.labels) != list(labels) for it in items):
        raise MirageInputError("a training batch needs the same segment labels for every chunk")
    S = max(it.text.shape[1] for it in items)
    text = torch.cat([torch.nn.functional.pad(it.text, (0, 0, 0, S - it.text.shape[1]))
                      for it in items])

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(it.inputs, name) for it in items])

    inputs = ChunkInputs(cat("clean"), cat("targets"), cat("readout"), cat("mask"), labels,
                         [h for it in items for h in it.inputs.hole_rate])
    return _Batch(inputs, text, torch.tensor([it.sigma for it in items], dtype=torch.float64),
                  torch.cat([it.noise for it in items]),
                  torch.tensor([0.0 if it.memory_dropped else 1.0 for it in items]))


def _step_record(items: Sequence[_StepInputs], per_chunk: list[float]) -> dict:
    """What a metrics line says of the step's chunks: with batch 1 the chunk's own values;
    with more, lists (``memory_dropped`` as a count) and the mean loss of the chunks with
    and without memory (``loss_memory``, ``loss_no_memory``, where the batch has them)."""
    one = len(items) == 1
    rec = {"sigma": items[0].sigma if one else [it.sigma for it in items],
           "text_dropped": items[0].text_dropped if one else [it.text_dropped for it in items],
           "memory_dropped": items[0].memory_dropped if one
           else sum(it.memory_dropped for it in items),
           "clip": items[0].clip.key if one else [it.clip.key for it in items],
           "chunk": items[0].chunk if one else [it.chunk for it in items]}
    for key, dropped in (("loss_memory", False), ("loss_no_memory", True)):
        vals = [v for it, v in zip(items, per_chunk, strict=True) if it.memory_dropped == dropped]
        if vals:
            rec[key] = sum(vals) / len(vals)
    return rec


def train(
    config: TrainConfig,
    clips: Sequence[Clip],
    models: MirageModels,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    empty_prompt_embeds: torch.Tensor | None = None,
) -> TrainResult:
    """Train the side branch (stage 1), side branch + LoRA (stage 2), or with
    ``train_backbone`` the whole transformer, on ``clips``.

    Args:
        config: :class:`TrainConfig`; ``config.out_dir`` receives ``checkpoints/step_N/``
            (side-branch + LoRA or backbone safetensors, optimizer/scheduler/RNG state,
            config JSON), ``metrics.jsonl`` and ``config.json``.
        clips: any sequence of :class:`~mirage_core.data.clip.Clip` (``len`` + ``[i]``), e.g.
            an in-memory list or a dataset; each needs ``L >= chunk_latent_frames`` latents
            and ``prompt_embeds`` (or a loaded text encoder in ``models``).
        models: loaded generator; modified in place (:func:`prepare_for_training`).
        resume: continue from the newest checkpoint in ``out_dir`` (its config must match
            apart from :data:`~mirage_core.train.config.RESUME_FREE_FIELDS`).
        stop_after: stop once this many total steps are done (``None`` = ``config.steps``);
            the cosine schedule still spans ``config.steps``.
        empty_prompt_embeds: ``[1, S, text_dim]`` states of the empty prompt for text
            dropout; default ``models.encode_prompt("")``.
    Raises:
        CheckpointMismatchError: ``resume`` with a checkpoint from a different config or
            model code version.
        NonFiniteLossError: NaN/inf loss or gradient; names the step and clip; the last good
            checkpoint stays on disk.
    """
    if len(clips) == 0:
        raise MirageInputError("no training clips")
    with distributed_session() as dist_info:
        return _train(config, clips, models, dist_info, resume, stop_after, empty_prompt_embeds)


def _train(config: TrainConfig, clips: Sequence[Clip], models: MirageModels, dist_info: _Dist,
           resume: bool, stop_after: int | None, empty_prompt_embeds: torch.Tensor | None
           ) -> TrainResult:
    out_dir = Path(config.out_dir)
    dev = models.device
    lora_names = prepare_for_training(models, config)
    transformer = models.transformer

    ckpt = latest_checkpoint(out_dir) if resume else None
    if not resume and latest_checkpoint(out_dir) is not None:
        raise MirageInputError(
            f"{str(out_dir)!r} already holds checkpoints; pass resume=True (--resume) to "
            "continue that run, or choose another out_dir"
        )
    if resume and ckpt is None and dist_info.main:
        log.warning("--resume: no checkpoint in %s; starting from step 0", out_dir)
    state = None
    if ckpt is not None:
        state = _check_resume(ckpt, config)
        _load_trainable(ckpt, transformer, config)  # every rank loads in full, then shards
    model = _wrap_fsdp(transformer, dist_info) if dist_info.world > 1 else transformer
    named = trainable_parameters(model)
    params = [p for _, p in named]
    ema_names = [n for n, _ in named]
    optimizer = torch.optim.AdamW(params, lr=config.peak_lr, betas=config.betas,
                                  eps=config.eps, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    ema = _make_ema(config, params)
    step = 0
    if state is not None:
        _load_optimizer(model, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        if ema is not None:
            _load_ema(ckpt, ema, ema_names, state)

    if config.text_dropout > 0 and empty_prompt_embeds is None:
        empty_prompt_embeds = encode_empty_prompt(models)
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / CONFIG_FILENAME)
    metrics = _Metrics(out_dir / "metrics.jsonl", config.tensorboard, dist_info.main)
    ac_dtype = _autocast_dtype(config, dev)
    end = config.steps if stop_after is None else min(config.steps, int(stop_after))
    result = TrainResult(step=step, checkpoint=ckpt, metrics_path=metrics.path)
    bar = None
    if config.progress and dist_info.main:
        from tqdm.auto import tqdm

        what = "model" if config.train_backbone else f"stage {config.stage}"
        bar = tqdm(total=end, initial=step, desc=f"train {what}", unit="step")
    t_start = time.perf_counter()
    B = config.batch_size
    try:
        while step < end:
            t0 = time.perf_counter()
            items = [_step_inputs(config, clips, step * B + b, dist_info, models,
                                  empty_prompt_embeds) for b in range(B)]
            batch = _collate(items)
            per_chunk = flow_matching_loss(model, batch.inputs, batch.text, batch.sigma,
                                           batch.noise, ac_dtype, conditioning_scale=batch.scale,
                                           reduction="none")
            loss = per_chunk.mean()
            lv = float(loss.detach())
            # every rank sees every rank's loss, so a NaN anywhere stops all ranks at this step
            # (before the backward pass and its collectives)
            mean_loss, rank_losses = _mean_over_ranks(lv, dist_info, dev)
            _check_finite(rank_losses, "loss", step + 1, config, clips, dist_info,
                          result.checkpoint)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # FSDP: gradients averaged over the ranks
            max_norm = config.grad_clip if config.grad_clip is not None else float("inf")
            gnorm = _full(torch.nn.utils.clip_grad_norm_(params, max_norm))  # global norm
            _check_finite([float(gnorm)], "gradient norm", step + 1, config, clips, dist_info,
                          result.checkpoint, all_ranks=True)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.step(params)
            step += 1
            result.losses.append(lv)
            result.step = step
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if step % config.log_every == 0 or step == end:
                holes = batch.inputs.hole_rate
                rec = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": float(gnorm),
                       **_step_record(items, per_chunk.detach().tolist()),
                       "readout_hole_rate": sum(holes) / len(holes),
                       "step_s": time.perf_counter() - t0}
                if dist_info.world > 1:  # loss = mean over ranks; the rest: rank 0's
                    rec["rank_losses"] = rank_losses
                metrics.write(rec)
            if step % config.save_every == 0 or step == end:
                result.checkpoint = _checkpoint(out_dir, step, model, transformer, optimizer,
                                                scheduler, config, lora_names, dist_info,
                                                _ema_state(ema, ema_names))
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
        result.seconds = time.perf_counter() - t_start
    return result


def _full(x: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2's sharded gradients give a DTensor norm) as a plain tensor."""
    full = getattr(x, "full_tensor", None)
    return full() if callable(full) else x


def _check_finite(values: list[float], what: str, step: int, config: TrainConfig,
                  clips: Sequence[Clip], dist_info: _Dist, last: Path | None,
                  all_ranks: bool = False) -> None:
    """Raise :class:`NonFiniteLossError` if any value is NaN/inf; ``values`` are per rank
    (``all_ranks``: one value shared by every rank, e.g. the global gradient norm)."""
    bad = [r for r, v in enumerate(values) if not math.isfinite(v)]
    if not bad:
        return
    r = dist_info.rank if all_ranks else bad[0]
    B = config.batch_size
    key = ", ".join(clips[_clip_index(config, (step - 1) * B + b, len(clips),
                                      replace(dist_info, rank=r))].key for b in range(B))
    where = f" (rank {r} of {dist_info.world})" if dist_info.world > 1 else ""
    raise NonFiniteLossError(
        f"non-finite {what} ({values[r]}) at step {step} on clip{'s' if B > 1 else ''} "
        f"{key!r}{where}; "
        "training stopped. "
        f"Last good checkpoint: {str(last) if last else 'none written yet'}",
        step, key,
    )


def _checkpoint(out_dir, step, model, transformer, optimizer, scheduler, config, lora_names,
                dist_info: _Dist, ema: tuple[dict[str, torch.Tensor], int] | None = None
                ) -> Path:
    """Gather the trainable state (collective under FSDP), write it on rank 0, then wait for
    rank 0 so no rank runs ahead of a checkpoint it may be asked to resume from."""
    trainable, optim = _full_state(model, optimizer)
    path = out_dir / "checkpoints" / f"step_{step:08d}"
    if dist_info.main:
        path = _save_checkpoint(out_dir, step, transformer, scheduler, config, lora_names,
                                config.keep_last, trainable, optim, ema)
    if dist_info.world > 1:
        torch.distributed.barrier()
    return path
