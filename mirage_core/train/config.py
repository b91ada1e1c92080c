"""Typed training configuration (method.md section 5), loadable from YAML or JSON.

Every field is checked in ``__post_init__``; unknown keys in a file are an error that names
them. ``TrainConfig.stage1()`` / ``TrainConfig.stage2()`` give the paper's two recipes;
``config/train_small.yaml`` the from-scratch recipe of the small model (``train_backbone``,
``memory_dropout``; issue 12).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mirage_core.errors import MirageInputError
from mirage_core.memory import CONDITIONING_MODES
from mirage_core.memory.hole_fill import is_pass_count

__all__ = ["MODEL_SIZES", "RESUME_FREE_FIELDS", "STAGE_DEFAULT_LR", "TrainConfig"]

#: stage -> learning rate of the paper's recipe.
STAGE_DEFAULT_LR = {1: 1e-5, 2: 1e-4}

#: ``model_size`` values: the models ``mirage train`` loads (``generator.configs.SIZES``).
MODEL_SIZES = ("full", "small", "tiny")

#: Fields that may differ between a checkpoint and the run resuming it (bookkeeping only).
RESUME_FREE_FIELDS = ("log_every", "save_every", "keep_last", "out_dir", "progress",
                      "tensorboard")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Stage 1: side branch only; stage 2: + LoRA on the self-attentions;
    ``train_backbone``: the whole transformer (from scratch with ``init: random``).

    Attributes:
        stage: 1 (side branch only, backbone + VAE frozen) or 2 (+ LoRA on q, k, v, o of
            every backbone self-attention).
        model_size: which models ``mirage train`` loads: ``"full"`` (``weights_dir``, the
            Wan2.2-TI2V-5B layout) or ``"small"`` / ``"tiny"`` (random-weight directories of
            that size: ``weights_dir`` if given, else built in ``out_dir/<size>_weights`` with
            ``build_small_weights(seed=seed)`` / ``build_tiny_weights(seed=0)``).
            :func:`~mirage_core.train.loop.train` itself trains whatever models it is given.
        weights_dir: diffusers-format Wan2.2-TI2V-5B directory (``None`` with ``--tiny``).
        codec: the codec of random-weight directories built for ``"small"`` /``"tiny"``:
            ``None`` = the tiny random Wan2.2 VAE, ``"space_time_to_depth[:S]"`` (lossless,
            Wan's latent layout, stride ``S``, default 2), or a codec folder copied into the
            weights directory's ``vae/``: a PCA codec (``mirage codec fit-pca``; what
            ``config/train_small.yaml`` uses) or a small VAE (``mirage codec train``).
            Training data must be encoded with the same codec (checked against the store).
        side_branch: initial side branch: ``"zero"`` (untrained no-op; stage 1), a
            safetensors file, or a stage-1 checkpoint / output directory (stage 2 starts from
            the stage-1 branch; ``load_models``' ``side_branch`` argument).
        train_backbone: train every backbone weight too (fp32 master weights), not only the
            side branch; checkpoints then hold the whole model (``mirage_backbone.
            safetensors`` beside the side branch). Stage 1 only: a LoRA on a trained backbone
            is refused.
        init: the backbone's starting weights: ``"pretrained"`` (the directory's) or
            ``"random"`` (re-initialised from ``seed`` as diffusers initialises a new model;
            needs ``train_backbone`` and ``side_branch: zero``).
        memory_dropout: probability that a step trains with *no memory*: the side branch's
            hints are multiplied by 0, so the model computes exactly what the rollout's
            ``memory=False`` computes (where the branch is skipped); the readout is emptied
            (zeros, mask 0) too. Drawn from ``(seed, step, rank)``; recorded in metrics.jsonl.
        lr: peak learning rate; ``None`` = the stage's default (1e-5 / 1e-4).
        betas: AdamW betas (paper: (0.0, 0.999)).
        weight_decay: AdamW decoupled weight decay (1e-3).
        eps: AdamW epsilon.
        warmup_steps: linear warmup from 0 before the cosine decay.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        grad_clip: max global gradient norm; ``None`` = no clipping.
        ema_decay: keep an exponential moving average of the trainable weights
            (``diffusers.training_utils.EMAModel``: decay ``min(ema_decay, (1 + n) / (10 + n))``
            after ``n`` steps of this run, so it averages about the last ``n / 9`` steps until it
            reaches ``1 / (1 - ema_decay)``); 0 = off. Checkpoints then hold the average too
            (``mirage_ema.safetensors``) and ``python -m mirage_core.train.export`` bakes it
            into the weights instead of the last step's weights (``--raw`` for those). With
            batch size 1 the last step's weights carry that step's gradient noise; the
            average does not.
        lora_rank, lora_alpha, lora_dropout: stage-2 LoRA (64, 64, 0.05); scale = alpha/rank.
        mixed_precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"``, ``"fp32"``.
        gradient_checkpointing: recompute backbone blocks in the backward pass.
        text_dropout: probability of replacing the prompt with the empty prompt's embeddings.
        flow_shift: timestep shift of the sigma distribution (Wan2.2-TI2V-5B: 5.0, the
            sampler's value).
        chunk_latent_frames: latent frames per training chunk incl. the preceding frame (9).
        chunks: which chunk of a clip a step trains: ``"all"`` (uniformly among the clip's
            trainable chunks: all of them with ``frame_latents``, else the first) or
            ``"first"`` (chunk 0 only: memory from frame 0, PRECEDING = REFERENCE).
        use_reference: put latent 0 in the sequence as REFERENCE (as the rollout does).
        conditioning: what the side branch is trained on: ``"latent"`` (Mirage's latent
            memory readout) or ``"rgb_cache"`` (the RGB point-cloud baseline's readout: the
            frames decoded by the model's codec, cached as coloured points, rasterised at the
            targets' poses and encoded; ``mirage rollout --conditioning rgb_cache``), so the
            baseline can be compared with a model trained on its own readouts.
        readout_hole_fill: passes of the latent readout's hole fill
            (``MemoryConfig.hole_fill``, :mod:`mirage_core.memory.hole_fill`; ours): 0 trains
            on Eq. 5's readout as written. The export records it and the rollout applies the
            same fill to a model trained with it. ``"latent"`` conditioning only.
        seed: seed of every random draw (clip order, sigma, noise, text dropout, LoRA dropout).
        steps: total optimizer steps (the cosine schedule spans them).
        batch_size: chunks per step (per rank under ``torchrun``), each with its own clip,
            chunk, noise level, noise and dropouts (drawn from ``(seed, step * batch_size +
            b, rank)``, so batch 1 draws what it always drew); the loss is their mean. 1 for
            the paper recipe (a 704x1280 chunk fills a GPU); the small model uses more.
        shuffle: visit clips in a seeded random order per epoch (else in dataset order).
        log_every: write a metrics line every N steps.
        save_every: write a checkpoint every N steps (and always after the last step).
        keep_last: checkpoints kept on disk (older ones are deleted).
        out_dir: run directory (checkpoints/, metrics.jsonl, config.json).
        progress: show a tqdm progress bar.
        tensorboard: also log to TensorBoard when it is installed.
    """

    stage: int = 1
    model_size: str = "full"
    weights_dir: str | None = None
    codec: str | None = None
    side_branch: str = "zero"
    train_backbone: bool = False
    init: str = "pretrained"
    memory_dropout: float = 0.0
    lr: float | None = None
    betas: tuple[float, float] = (0.0, 0.999)
    weight_decay: float = 1e-3
    eps: float = 1e-8
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.0
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    text_dropout: float = 0.2
    flow_shift: float = 5.0
    chunk_latent_frames: int = 9
    chunks: str = "all"
    use_reference: bool = True
    conditioning: str = "latent"
    readout_hole_fill: int = 0
    seed: int = 0
    steps: int = 1000
    batch_size: int = 1
    shuffle: bool = True
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 2
    out_dir: str = "out/train"
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> MirageInputError:
            return MirageInputError(f"{name} must be {want}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.stage not in (1, 2):
            raise bad("stage", "1 or 2")
        if self.lr is not None and not (isinstance(self.lr, int | float) and self.lr > 0):
            raise bad("lr", "a positive number or None")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)")
        if not self.weight_decay >= 0 or not self.eps > 0:
            raise MirageInputError(
                f"weight_decay must be >= 0 and eps > 0, got {self.weight_decay}, {self.eps}"
            )
        for name in ("warmup_steps",):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "an integer >= 0")
        for name in ("steps", "log_every", "save_every", "keep_last", "lora_rank",
                     "chunk_latent_frames"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.chunk_latent_frames < 2:
            raise bad("chunk_latent_frames", "an integer >= 2 (1 preceding + targets)")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        if not is_int(self.seed):
            raise bad("seed", "an integer")
        if self.warmup_steps >= self.steps:
            raise MirageInputError(
                f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad("min_lr_ratio", "in [0, 1]")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "> 0 or None")
        if not (isinstance(self.ema_decay, int | float) and not isinstance(self.ema_decay, bool)
                and 0.0 <= self.ema_decay < 1.0):
            raise bad("ema_decay", "a number in [0, 1) (0 = no weight average)")
        if not self.lora_alpha > 0:
            raise bad("lora_alpha", "> 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise bad("lora_dropout", "in [0, 1)")
        if not 0.0 <= self.text_dropout <= 1.0:
            raise bad("text_dropout", "in [0, 1]")
        if not self.flow_shift > 0:
            raise bad("flow_shift", "> 0")
        if self.conditioning not in CONDITIONING_MODES:
            raise bad("conditioning", f"one of {CONDITIONING_MODES}")
        if not is_pass_count(self.readout_hole_fill):
            raise bad("readout_hole_fill", "an integer >= 0")
        if self.readout_hole_fill and self.conditioning != "latent":
            raise bad("readout_hole_fill", "0 with conditioning 'rgb_cache' (latent memory only)")
        if self.chunks not in ("all", "first"):
            raise bad("chunks", "'all' or 'first'")
        if self.mixed_precision not in ("auto", "bf16", "fp32"):
            raise bad("mixed_precision", "'auto', 'bf16' or 'fp32'")
        if not isinstance(self.side_branch, str) or not self.side_branch:
            raise bad("side_branch", "'zero', a safetensors file or a checkpoint directory")
        if self.model_size not in MODEL_SIZES:
            raise bad("model_size", f"one of {MODEL_SIZES}")
        if not isinstance(self.train_backbone, bool):
            raise bad("train_backbone", "true or false")
        if self.codec is not None:
            from mirage_core.codecs import codec_from_spec

            if not isinstance(self.codec, str) or not self.codec:
                raise bad("codec", "'space_time_to_depth[:S]' or a codec folder")
            if self.codec.partition(":")[0] == "space_time_to_depth":
                codec_from_spec(self.codec)  # MirageInputError naming the spec
            # a VAE folder is checked when the weights are built (it may not exist yet when
            # the config is written: `make train-small` trains it first)
            if self.model_size == "full":
                raise bad("codec", "None with model_size 'full' (its directory has the VAE)")
        if self.init not in ("pretrained", "random"):
            raise bad("init", "'pretrained' or 'random'")
        if not (isinstance(self.memory_dropout, int | float)
                and not isinstance(self.memory_dropout, bool)
                and 0.0 <= self.memory_dropout <= 1.0):
            raise bad("memory_dropout", "a number in [0, 1]")
        if self.train_backbone and self.stage == 2:
            raise MirageInputError(
                "train_backbone trains every backbone weight, and stage 2 adds a LoRA to the "
                "backbone: the two do not combine (the LoRA would be a redundant low-rank copy "
                "of weights that train anyway). Use stage: 1 with train_backbone: true, or "
                "stage: 2 with train_backbone: false"
            )
        if self.init == "random" and not self.train_backbone:
            raise MirageInputError(
                "init: random re-initialises the backbone, which then has to train: set "
                "train_backbone: true (or init: pretrained)"
            )
        if self.init == "random" and self.side_branch != "zero":
            raise MirageInputError(
                f"init: random starts the whole model from scratch, but side_branch is "
                f"{self.side_branch!r}: a trained branch means nothing on a random backbone; "
                "use side_branch: zero"
            )

    # -- derived -------------------------------------------------------------------------
    @property
    def peak_lr(self) -> float:
        """``lr``, or the stage's default (1e-5 for stage 1, 1e-4 for stage 2)."""
        return float(self.lr) if self.lr is not None else STAGE_DEFAULT_LR[self.stage]

    @property
    def uses_lora(self) -> bool:
        return self.stage == 2

    @classmethod
    def stage1(cls, **kw: Any) -> TrainConfig:
        """Paper stage 1: side branch only, lr 1e-5."""
        return cls(stage=1, **kw)

    @classmethod
    def stage2(cls, **kw: Any) -> TrainConfig:
        """Paper stage 2: side branch + rank-64 LoRA (dropout 0.05), lr 1e-4."""
        return cls(stage=2, **kw)

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise a ``MirageInputError`` naming them."""
        if not isinstance(d, dict):
            raise MirageInputError(f"a training config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise MirageInputError(
                f"unknown training config keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load ``.yaml``/``.yml``/``.json``; ``overrides`` replace the file's fields before
        the whole is checked (so they may fix what the file alone would fail)."""
        path = Path(path)
        if not path.is_file():
            raise MirageInputError(f"training config {str(path)!r} does not exist")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.from_dict({**data, **overrides} if isinstance(data, dict) else data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = RESUME_FREE_FIELDS
                    ) -> list[str]:
        """``"field: self_value vs other_value"`` for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]
