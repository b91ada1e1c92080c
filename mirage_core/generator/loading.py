"""Loading the generator's components from a local diffusers-format directory.

Layout (what ``huggingface-cli download Wan-AI/Wan2.2-TI2V-5B-Diffusers`` gives, plus the
Mirage side branch)::

    DIR/transformer/    config.json + diffusion_pytorch_model*.safetensors   (5.0B, bf16)
    DIR/vae/            config.json + diffusion_pytorch_model.safetensors    (705M)
    DIR/text_encoder/   config.json + model*.safetensors                     (UMT5-XXL encoder)
    DIR/tokenizer/      tokenizer.json ...
    DIR/mirage_side_branch.safetensors  (optional here; or --side-branch FILE|DIR)
    DIR/lora.safetensors                (optional: stage-2 LoRA, merged into the backbone)
    DIR/mirage_backbone.safetensors     (optional: a trained backbone that replaces transformer/'s
                                         weights; written by `mirage train` with train_backbone)

Trained weights (``side_branch=``): a side-branch ``.safetensors`` file (the branch alone), a
training checkpoint directory ``OUT/checkpoints/step_N`` (its side branch **and** its stage-2
LoRA or its trained backbone, if it has one), or a training output directory ``OUT`` (its
newest checkpoint). The LoRA is merged into the backbone's weights at load
(``W + alpha/r * B A``, no per-step cost). A trained backbone (a *full-model* checkpoint,
``train_backbone: true``) replaces the directory's transformer weights; the directory then
gives only the architecture (``transformer/config.json``), the VAE and the text encoder. Its
file records the transformer config and :data:`MODEL_CODE_VERSION`; a file for another config
or code version is refused naming both (:class:`TrainedWeightsMismatchError`).

:func:`build_tiny_weights` and :func:`build_small_weights` write the same layout with tiny /
small random-weight models (marked ``mirage_tiny.json``: sizes other than the 5B ones are
accepted only there), and :func:`load_models` loads all of them through the same code. Nothing
is ever downloaded.

GPU memory (``offload``): ``"none"`` keeps every component on the GPU; ``"model"`` keeps
them on the CPU and moves each one to the GPU only while it runs (the transformer for the
denoising loop, the VAE for decode/encode), which is what lets a 24-48 GB GPU run the 5B
model. ``text_encoder_device="cpu"`` runs UMT5 on the CPU (it is used once per rollout).

Precision, as the reference (Wan2.2's ``wan/textimage2video.py`` builds ``Wan2_2_VAE`` with
its default ``dtype=torch.float``, ``wan/modules/vae2_2.py``): the VAE runs in float32 on
every device (``vae_dtype`` trades this for memory); the transformer and side branch run in
``dtype`` (bf16 on CUDA) with their norms and modulation tables in float32
(``_keep_in_fp32_modules``).

Third-party directories are checked before the 5B load:
:func:`~mirage_core.generator.configs.check_transformer_config` and
:func:`~mirage_core.generator.configs.check_vae_config` refuse configs that are not
Wan2.2-TI2V-5B-shaped (an image-to-video transformer, a Wan2.1 VAE, ...), naming the key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mirage_core.codecs import (
    PCA_CODEC_FILE,
    PCA_CODEC_MARKER,
    PCAVideoCodec,
    VideoCodec,
    WanVAECodec,
    check_codec_spec,
    codec_from_spec,
    is_small_vae_dir,
    weights_sha256,
)
from mirage_core.devices import compute_device
from mirage_core.errors import MirageInputError, WeightsNotFoundError
from mirage_core.generator.configs import (
    SIZES,
    TI2V_SIZE_KEYS,
    TI2V_STRUCTURAL_KEYS,
    TINY_TEXT_ENCODER_CONFIG,
    WAN22_TI2V_WEIGHTS_HINT,
    _effective_config,
    _same,
    check_transformer_config,
    check_vae_config,
    side_layers_for_size,
    transformer_config,
)
from mirage_core.generator.segment_rope import SegmentRoPEConfig
from mirage_core.generator.side_branch import (
    MemorySideBranch,
    SideBranchConfig,
    SideBranchMismatchError,
    cast_keep_fp32,
)
from mirage_core.generator.text import PromptEncoder, build_tiny_tokenizer
from mirage_core.generator.transformer import MirageTransformer

__all__ = [
    "BACKBONE_FILENAME",
    "LORA_FILENAME",
    "MODEL_CODE_VERSION",
    "OFFLOAD_MODES",
    "SIDE_BRANCH_FILENAME",
    "MirageModels",
    "TrainedWeightFiles",
    "TrainedWeightsMismatchError",
    "build_small_weights",
    "build_tiny_weights",
    "check_backbone_file",
    "check_weights_dir",
    "load_backbone_file",
    "load_models",
    "random_models",
    "resolve_trained_model",
    "resolve_trained_weights",
    "save_backbone_file",
    "shipped_weights_dir",
    "weights_profile",
    "weights_size",
]

log = logging.getLogger(__name__)

SIDE_BRANCH_FILENAME = "mirage_side_branch.safetensors"
LORA_FILENAME = "lora.safetensors"
BACKBONE_FILENAME = "mirage_backbone.safetensors"
#: ``format`` metadata of a trained-backbone file, and the version of its layout.
BACKBONE_FORMAT = "mirage-backbone"
BACKBONE_FORMAT_VERSION = "1"
#: What trained weights *mean* to this code: bump it by hand whenever a change makes weights
#: trained before it compute something else (the readout layout, segment RoPE positions, the
#: flow target, the latent codec's scaling, ...). Trained-backbone files and trainer states
#: record it; loading or resuming one written under another version is refused naming both.
MODEL_CODE_VERSION = 1
OFFLOAD_MODES = ("none", "model")
_REQUIRED = {
    "transformer": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": (),
}


def check_weights_dir(root: str | Path, need_text_encoder: bool = True) -> Path:
    """Check the directory layout before loading anything heavy.

    Raises:
        WeightsNotFoundError: the directory or a required sub-folder/config is missing; the
            message lists what is missing and how to get the files.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise WeightsNotFoundError(
            f"weights directory {str(root)!r} does not exist.\n{WAN22_TI2V_WEIGHTS_HINT}"
        )
    missing = []
    analytic_codec = _read_marker(root).get("codec") is not None
    for sub, files in _REQUIRED.items():
        if not need_text_encoder and sub in ("text_encoder", "tokenizer"):
            continue
        if sub == "vae" and analytic_codec:  # the marker names an analytic codec: no weights
            continue
        if sub == "vae" and (root / sub / PCA_CODEC_MARKER).is_file():
            files = (PCA_CODEC_FILE,)  # a PCA codec (mirage codec fit-pca), not a VAE
        d = root / sub
        if not d.is_dir():
            missing.append(f"{sub}/")
            continue
        missing += [f"{sub}/{f}" for f in files if not (d / f).is_file()]
        if sub in ("transformer", "vae", "text_encoder") and not any(d.glob("*.safetensors")):
            missing.append(f"{sub}/*.safetensors")
    if missing:
        raise WeightsNotFoundError(
            f"weights directory {str(root)!r} is incomplete: missing {', '.join(missing)}.\n"
            f"{WAN22_TI2V_WEIGHTS_HINT}"
        )
    return root


@dataclass
class MirageModels:
    """Everything the rollout runs, with its device placement.

    Attributes:
        transformer: the DiT + side branch.
        vae: the Wan2.2 VAE codec.
        prompt_encoder: UMT5 (``None`` when prompts come as precomputed embeddings).
        device: the compute device (``cuda`` on the GPU host).
        offload: ``"none"`` or ``"model"`` (see the module docstring).
        source: where the weights came from (printed and written to the outputs).
        side_branch_source: the side-branch file, ``"zero"`` (untrained no-op) or ``"random"``.
        lora_source: the stage-2 LoRA file merged into the backbone, or ``None``.
        image_hw: the ``(H, W)`` a trained small model was trained at (its marker's
            ``image_hw``), else ``None`` (any multiple of 32).
        chunk_latent_frames: latent frames per chunk the model was trained with (the
            marker's, else the paper's 9 = 1 overlap + 8 targets).
        flow_shift: the sampler shift the model was trained for (the marker's, else 5.0).
        readout_hole_fill: the latent readout's hole-fill passes the model runs with (the
            marker's: those it was trained with unless its export set others, else 0: Eq. 5
            as written); ``MemoryConfig.hole_fill``.
    """

    transformer: MirageTransformer
    vae: VideoCodec
    prompt_encoder: PromptEncoder | None
    device: torch.device
    offload: str
    source: str
    side_branch_source: str
    lora_source: str | None = None
    image_hw: tuple[int, int] | None = None
    chunk_latent_frames: int = 9
    flow_shift: float = 5.0
    readout_hole_fill: int = 0

    @property
    def text_dim(self) -> int:
        return int(self.transformer.backbone.config.text_dim)

    @property
    def is_tiny(self) -> bool:
        return "tiny" in self.source

    @contextlib.contextmanager
    def placed(self, name: str) -> Iterator[None]:
        """Run a block with component ``name`` (``"transformer"``/``"vae"``) on :attr:`device`.

        With ``offload="model"`` the component is moved there for the block and back to the
        CPU after it; otherwise this does nothing.
        """
        if self.offload != "model" or self.device.type == "cpu":
            yield
            return
        mod = self.transformer if name == "transformer" else self.vae
        mod.to(self.device)
        try:
            yield
        finally:
            mod.to("cpu")
            torch.cuda.empty_cache()

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """``[1, 512, text_dim]`` float32 states on the CPU."""
        if self.prompt_encoder is None:
            raise MirageInputError(
                "no text encoder was loaded (load_text_encoder=False); pass precomputed prompt "
                "embeddings instead of a prompt"
            )
        return self.prompt_encoder.encode(prompt).cpu()

    def parameter_counts(self) -> dict[str, int]:
        def n(m: nn.Module | None) -> int:
            return 0 if m is None else sum(p.numel() for p in m.parameters())

        sb = self.transformer.side_branch
        return {
            "transformer": n(self.transformer.backbone),
            "side_branch": n(sb),
            "vae": self.vae.num_parameters(),
            "text_encoder": n(self.prompt_encoder.text_encoder) if self.prompt_encoder else 0,
        }


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class TrainedWeightsMismatchError(SideBranchMismatchError):
    """A trained-backbone file does not fit: another transformer config, another model code
    version (:data:`MODEL_CODE_VERSION`), or not such a file at all."""


@dataclass(frozen=True)
class TrainedWeightFiles:
    """The files a ``side_branch=`` argument names (:func:`resolve_trained_model`).

    Attributes:
        side_branch: the side-branch safetensors file.
        lora: the stage-2 LoRA beside it, or ``None``.
        backbone: the trained backbone beside it (a full-model checkpoint), or ``None``.
    """

    side_branch: Path
    lora: Path | None = None
    backbone: Path | None = None


def resolve_trained_weights(spec: str | Path, what: str = "side branch"
                            ) -> tuple[Path, Path | None]:
    """``(side_branch_file, lora_file | None)`` for a ``side_branch=`` argument (see
    :func:`resolve_trained_model`, which also finds a trained backbone)."""
    files = resolve_trained_model(spec, what)
    return files.side_branch, files.lora


def resolve_trained_model(spec: str | Path, what: str = "side branch") -> TrainedWeightFiles:
    """The trained files a ``side_branch=`` argument names.

    ``spec``: a side-branch ``.safetensors`` file (the branch alone); a directory holding
    ``mirage_side_branch.safetensors`` (a checkpoint ``step_N`` or a weights directory; its
    ``lora.safetensors`` and ``mirage_backbone.safetensors`` too when present); or a training
    output directory (its newest ``checkpoints/step_N``).

    Raises:
        WeightsNotFoundError: nothing found; names what was looked for.
        TrainedWeightsMismatchError: a side-branch file named alone that was trained together
            with the backbone beside it (the branch means nothing on another backbone).
    """
    p = Path(spec).expanduser()
    hint = ("Train one with `mirage train`, or pass --side-branch zero to run with an "
            "untrained, no-op branch (the memory then has no effect).")
    if p.is_file():
        if p.name == SIDE_BRANCH_FILENAME and (p.parent / BACKBONE_FILENAME).is_file():
            raise TrainedWeightsMismatchError(
                f"{str(p)!r} was trained together with the backbone beside it "
                f"({BACKBONE_FILENAME}, a full-model checkpoint); pass the directory "
                f"{str(p.parent)!r} to load both"
            )
        if (p.parent / LORA_FILENAME).is_file() and p.name == SIDE_BRANCH_FILENAME:
            log.warning("%s: loading the side branch only; pass its directory %s to also merge "
                        "the stage-2 LoRA beside it", p, p.parent)
        return TrainedWeightFiles(p)
    if not p.is_dir():
        raise WeightsNotFoundError(f"{what} {str(p)!r} does not exist. {hint}")
    if not (p / SIDE_BRANCH_FILENAME).is_file():
        steps = sorted(d for d in (p / "checkpoints").glob("step_*")
                       if (d / SIDE_BRANCH_FILENAME).is_file())
        if not steps:
            raise WeightsNotFoundError(
                f"{what} directory {str(p)!r} has neither {SIDE_BRANCH_FILENAME} nor "
                f"checkpoints/step_*/{SIDE_BRANCH_FILENAME} (a `mirage train` output). {hint}"
            )
        p = steps[-1]
    lora, backbone = p / LORA_FILENAME, p / BACKBONE_FILENAME
    return TrainedWeightFiles(p / SIDE_BRANCH_FILENAME, lora if lora.is_file() else None,
                              backbone if backbone.is_file() else None)


# ------------------------------------------------------------------- trained-backbone files
def _arch(config) -> dict:
    """The size and structural keys of a transformer config (what a backbone file records)."""
    from diffusers import WanTransformer3DModel

    eff = _effective_config(WanTransformer3DModel, dict(config))
    if eff.get("out_channels") is None:
        eff["out_channels"] = eff.get("in_channels")
    return {k: eff.get(k) for k in (*TI2V_SIZE_KEYS, *TI2V_STRUCTURAL_KEYS)}


def save_backbone_file(path: str | Path, tensors: dict[str, torch.Tensor], config) -> None:
    """Write a trained backbone (``WanTransformer3DModel`` state dict, float32 master weights)
    with its config and :data:`MODEL_CODE_VERSION` in the metadata; atomic (temp + rename).

    ``config``: the backbone's ``config`` (``backbone.config``) or the same keys as a dict.
    """
    from safetensors.torch import save_file

    from mirage_core import __version__

    path = Path(path)
    meta = {"format": BACKBONE_FORMAT, "format_version": BACKBONE_FORMAT_VERSION,
            "model_version": str(MODEL_CODE_VERSION), "mirage_version": __version__,
            "config": json.dumps(_arch(config), sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata=meta)
    tmp.replace(path)


def check_backbone_file(path: str | Path, config, where: str = "the backbone") -> dict:
    """Check a trained-backbone file's metadata against the model it is meant for, reading
    only its header; returns the metadata.

    ``config``: the transformer config of the model (``transformer/config.json`` as a dict, or
    ``backbone.config``); ``where``: what to call that model in a message.

    Raises:
        WeightsNotFoundError: the file does not exist.
        TrainedWeightsMismatchError: unreadable, not a backbone file, another format or model
            code version (both named), or another transformer config (the key and both values).
    """
    from safetensors import safe_open

    from mirage_core import __version__

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"trained backbone {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise TrainedWeightsMismatchError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e})"
        ) from None
    if meta.get("format") != BACKBONE_FORMAT:
        raise TrainedWeightsMismatchError(
            f"{path}: not a Mirage backbone file (metadata format {meta.get('format')!r}, "
            f"expected {BACKBONE_FORMAT!r})"
        )
    if meta.get("format_version") != BACKBONE_FORMAT_VERSION or meta.get("model_version") != \
            str(MODEL_CODE_VERSION):
        raise TrainedWeightsMismatchError(
            f"{path} was written by model code version {meta.get('model_version')} (file "
            f"format {meta.get('format_version')}, mirage {meta.get('mirage_version')}); this "
            f"code is model version {MODEL_CODE_VERSION} (file format "
            f"{BACKBONE_FORMAT_VERSION}, mirage {__version__}). Retrain it with this code, or "
            "load it with the mirage version that wrote it."
        )
    try:
        found = json.loads(meta["config"])
    except (KeyError, ValueError) as e:
        raise TrainedWeightsMismatchError(f"{path}: unreadable config metadata ({e})") from None
    want = _arch(config)
    diffs = [f"{k}: file {found.get(k)!r} vs model {want[k]!r}" for k in want
             if not _same(found.get(k), want[k])]
    if diffs:
        raise TrainedWeightsMismatchError(
            f"trained backbone {str(path)!r} was trained for another transformer config than "
            f"{where}: {'; '.join(diffs)}. Load it with the weights directory it was trained "
            "with (its transformer/config.json)."
        )
    return meta


def load_backbone_file(backbone: nn.Module, path: str | Path, where: str = "the backbone"
                       ) -> None:
    """Replace ``backbone``'s weights with a trained-backbone file's (checked first by
    :func:`check_backbone_file`; tensors cast to the parameters' dtypes). In place; nothing is
    changed when the file does not fit."""
    from mirage_core.safetensors_io import read_safetensors, state_dict_mismatch

    check_backbone_file(path, backbone.config, where)
    tensors, _ = read_safetensors(path, TrainedWeightsMismatchError)
    diff = state_dict_mismatch(backbone.state_dict(), tensors)
    if diff:
        raise TrainedWeightsMismatchError(f"trained backbone {str(path)!r} does not fit {where}: "
                                          f"{diff}")
    backbone.load_state_dict(tensors)


def _merge_lora_file(backbone: nn.Module, path: Path) -> None:
    """Merge a training ``lora.safetensors`` into ``backbone`` (metadata gives ``alpha / r``)."""
    from mirage_core.safetensors_io import read_safetensors
    from mirage_core.train.lora import LORA_FORMAT, merge_lora

    tensors, meta = read_safetensors(path, SideBranchMismatchError)
    try:
        if meta.get("format") != LORA_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {LORA_FORMAT!r}")
        scale = float(meta["alpha"]) / float(meta["rank"])
        merge_lora(backbone, tensors, scale)
    except (KeyError, ValueError, MirageInputError) as e:
        raise SideBranchMismatchError(f"{path}: not a LoRA for this backbone ({e})") from None


def load_models(
    weights_dir: str | Path,
    side_branch: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    offload: str = "none",
    text_encoder_device: str | torch.device | None = None,
    load_text_encoder: bool = True,
    vae_tiling: bool = False,
    rope_config: SegmentRoPEConfig | None = None,
    vae_dtype: torch.dtype = torch.float32,
) -> MirageModels:
    """Load the transformer, VAE, text encoder and side branch from local files.

    Args:
        weights_dir: diffusers-format Wan2.2-TI2V-5B directory (see the module docstring).
        side_branch: trained weights (:func:`resolve_trained_model`: a side-branch file, a
            checkpoint directory with its LoRA or trained backbone, or a ``mirage train``
            output directory); ``"zero"`` for an untrained (zero, no-op) branch; ``None`` =
            ``weights_dir`` itself (its ``mirage_side_branch.safetensors`` and, if present,
            ``lora.safetensors`` and ``mirage_backbone.safetensors``).
        device: compute device; default ``cuda`` when available, else ``cpu``.
        dtype: transformer/side-branch/text-encoder dtype; default bf16 on CUDA, float32 on
            CPU. Norms and modulation tables stay float32 (see the module docstring).
        offload: ``"none"`` or ``"model"`` (components wait on the CPU between uses).
        text_encoder_device: where UMT5 runs (default: ``device``, or CPU with offload).
        load_text_encoder: ``False`` when prompts come as precomputed embeddings.
        vae_tiling: diffusers' spatial VAE tiling (less memory at 704x1280).
        rope_config: segment positions (default :class:`SegmentRoPEConfig`).
        vae_dtype: VAE parameter dtype; float32 as the reference. ``torch.bfloat16`` halves
            the VAE's weight memory (2.8 GB -> 1.4 GB at full size) at the cost of precision in
            every encode and decode, so in every memory write.

    Raises:
        WeightsNotFoundError: missing directory/files (message says how to get them), or an
            unreadable ``config.json``.
        SideBranchMismatchError: the side-branch file does not fit the backbone.
        TrainedWeightsMismatchError: a trained backbone for another transformer config or
            model code version (both named).
        MirageInputError: bad option values, or a transformer/VAE config that is not
            Wan2.2-TI2V-5B-shaped (the message names the key).
    """
    from diffusers import WanTransformer3DModel

    if offload not in OFFLOAD_MODES:
        raise MirageInputError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    dev = compute_device(device)
    root = check_weights_dir(weights_dir, need_text_encoder=load_text_encoder)
    dtype = dtype or _default_dtype(dev)
    park = torch.device("cpu") if offload == "model" else dev

    # The trained files (if any) are resolved and checked for existence before the 5B load.
    sb_path = lora_path = bb_path = None
    files: TrainedWeightFiles | None = None
    if side_branch is None:
        if not (root / SIDE_BRANCH_FILENAME).is_file():
            raise WeightsNotFoundError(
                f"no side branch given and {str(root / SIDE_BRANCH_FILENAME)!r} does not exist. "
                "Pass --side-branch FILE|DIR (trained with `mirage train`), or --side-branch "
                "zero to run the backbone with an untrained, no-op branch (the memory then has "
                "no effect)."
            )
        files = resolve_trained_model(root)
    elif str(side_branch) != "zero":
        files = resolve_trained_model(side_branch)
    if files is not None:
        sb_path, lora_path, bb_path = files.side_branch, files.lora, files.backbone

    meta = _read_marker(root)
    tiny = bool(meta.get("tiny"))
    if meta.get("trained") and int(meta.get("code_version", 1)) != MODEL_CODE_VERSION:
        raise TrainedWeightsMismatchError(
            f"{root} holds a model trained for model code version {meta.get('code_version')}, "
            f"but this code is model version {MODEL_CODE_VERSION}: its weights would mean "
            f"something else. {TRAINED_REBUILD_HINT}"
        )
    tr_config = _read_config(root / "transformer")
    check_transformer_config(tr_config, str(root / "transformer"), tiny)
    codec_spec = meta.get("codec")
    pca_codec = codec_spec is None and (root / "vae" / PCA_CODEC_MARKER).is_file()
    if codec_spec is None and not pca_codec:
        check_vae_config(_read_config(root / "vae"), str(root / "vae"), tiny,
                         small=is_small_vae_dir(root / "vae"))
    if bb_path is not None:  # before the heavy load: header only
        check_backbone_file(bb_path, tr_config, str(root / "transformer" / "config.json"))
    try:
        backbone = WanTransformer3DModel.from_pretrained(
            str(root / "transformer"), torch_dtype=dtype, local_files_only=True
        )
    except (OSError, ValueError, RuntimeError) as e:  # missing, truncated or corrupt files
        hint = TRAINED_REBUILD_HINT if meta.get("trained") else WAN22_TI2V_WEIGHTS_HINT
        raise WeightsNotFoundError(
            f"could not load the transformer from {str(root / 'transformer')!r}: {e}\n{hint}"
        ) from e
    if bb_path is not None:
        load_backbone_file(backbone, bb_path, str(root / "transformer" / "config.json"))
    c = backbone.config
    expected = SideBranchConfig.for_backbone(backbone, meta.get("side_layers"))
    if sb_path is None:
        branch = MemorySideBranch(expected)
        branch.init_from_backbone(backbone)
        branch.cast(dtype)
        sb_source = "zero"
    else:
        branch = MemorySideBranch.load(sb_path, expected, dtype=dtype)
        sb_source = str(sb_path)
    if lora_path is not None:
        _merge_lora_file(backbone, lora_path)
    backbone.eval().requires_grad_(False)
    branch.eval().requires_grad_(False)
    transformer = MirageTransformer(backbone, branch, rope_config).to(park)

    if codec_spec is not None:
        vae = codec_from_spec(codec_spec, device=park)
    elif pca_codec:
        vae = PCAVideoCodec.from_dir(
            root / "vae", device=park,
            rebuild_hint=TRAINED_REBUILD_HINT if meta.get("trained") else "")
    else:
        try:
            vae = WanVAECodec.from_pretrained(root, device=park, dtype=vae_dtype,
                                              tiling=vae_tiling)
        except (WeightsNotFoundError, OSError, ValueError, RuntimeError) as e:
            if not meta.get("trained"):
                raise
            # a trained small model's own VAE (mirage codec train): not a download
            raise WeightsNotFoundError(
                f"could not load the VAE of {str(root)!r}: {e}\n{TRAINED_REBUILD_HINT}"
            ) from e
    prompt_encoder = None
    if load_text_encoder:
        te_dev = text_encoder_device or ("cpu" if offload == "model" else dev)
        prompt_encoder = PromptEncoder.from_pretrained(root, dtype=dtype, device=te_dev)
        if prompt_encoder.dim != int(c.text_dim):
            raise MirageInputError(
                f"text encoder width {prompt_encoder.dim} != transformer text_dim {c.text_dim}"
            )
    size = weights_size(root)
    if meta.get("trained"):
        source = f"trained {size} model from {root}"
    elif meta.get("tiny"):
        source = f"RANDOM {size} weights from {root}"
    else:
        source = f"weights from {root}"
    if bb_path is not None:
        source = f"trained {size} backbone {bb_path} (architecture from {root})"
    profile = weights_profile(root)
    return MirageModels(transformer, vae, prompt_encoder, dev, offload, source, sb_source,
                        None if lora_path is None else str(lora_path),
                        profile["image_hw"], profile["chunk_latent_frames"],
                        profile["flow_shift"], profile["readout_hole_fill"])


def _read_config(sub: Path) -> dict:
    """``sub/config.json`` as a dict; ``WeightsNotFoundError`` if it cannot be read."""
    p = sub / "config.json"
    try:
        conf = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(f"cannot read {str(p)!r}: {e}\n{WAN22_TI2V_WEIGHTS_HINT}") from e
    if not isinstance(conf, dict):
        raise WeightsNotFoundError(f"{str(p)!r} is not a JSON object\n{WAN22_TI2V_WEIGHTS_HINT}")
    return conf


def _read_marker(root: Path) -> dict:
    p = root / WEIGHTS_MARKER
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


#: how to get a trained small model's directory back (docs/model_card.md)
TRAINED_REBUILD_HINT = (
    "Restore the shipped model with `git checkout -- mirage_core/weights`, or rebuild it: "
    "`make train-small` (data, codec and three training stages: ~3 h on 2 CPU cores; it "
    "exports to out/mirage-small-rooms) then copy out/mirage-small-rooms over "
    "mirage_core/weights/mirage-small-rooms."
)

#: the marker file of a tiny/small weights directory (size, codec, training record)
WEIGHTS_MARKER = "mirage_tiny.json"

#: where the shipped trained model lives (docs/model_card.md)
DEFAULT_WEIGHTS_NAME = "mirage-small-rooms"


def default_weights_dir() -> Path:
    """The shipped small Mirage trained on simulated rooms (``mirage_core/weights/``)."""
    return Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS_NAME


def shipped_weights_dir() -> Path | None:
    """:func:`default_weights_dir` when this checkout ships a model there (its marker is
    present), else ``None``: what an empty ``weights`` means to ``mirage rollout``, the
    generator node and ``mirage launch``."""
    root = default_weights_dir()
    return root if (root / WEIGHTS_MARKER).is_file() else None


def weights_profile(root: str | Path) -> dict[str, Any]:
    """What a weights directory's marker says about running it, read without loading it.

    Returns:
        ``{"size", "trained", "image_hw" ((H, W) or None), "chunk_latent_frames" (9 unless
        the marker says), "scene" ("heldout": its default scene is a held-out procedural
        room, else None), "prompt" (the caption it was trained with, or None), "flow_shift"
        (the sampler's shift it was trained for; 5.0, Wan2.2's, unless the marker says),
        "readout_hole_fill" (the latent readout's hole-fill passes it runs with; 0, Eq. 5 as
        written, unless the marker says),
        "latent_stride" (pixels per latent cell of its codec: 16 for Wan2.2's VAE, 8 for the
        small model's; :func:`~mirage_core.codecs.codec_stride`; ``None`` when the directory
        has no codec files: loading it then says what is missing)}``.

    Raises:
        MirageInputError: the marker's ``readout_hole_fill`` is not an integer >= 0.
    """
    from mirage_core.codecs import codec_stride
    from mirage_core.memory.hole_fill import is_pass_count

    meta = _read_marker(Path(root))
    hw = meta.get("image_hw")
    fill = meta.get("readout_hole_fill", 0)
    if not is_pass_count(fill):
        raise MirageInputError(
            f"{str(Path(root) / WEIGHTS_MARKER)!r}: readout_hole_fill must be an integer >= 0 "
            f"(readout hole-fill passes), got {fill!r}. {TRAINED_REBUILD_HINT}"
        )
    try:
        stride: int | None = codec_stride(Path(root) / "vae")
    except MirageInputError:
        stride = None
    return {
        "latent_stride": stride,
        "size": weights_size(root),
        "trained": bool(meta.get("trained")),
        "image_hw": (int(hw[0]), int(hw[1])) if hw else None,
        "chunk_latent_frames": int(meta.get("chunk_latent_frames", 9)),
        "scene": meta.get("scene"),
        "prompt": meta.get("prompt"),
        "flow_shift": float(meta.get("flow_shift", 5.0)),
        "readout_hole_fill": fill,
    }


def weights_size(root: str | Path) -> str:
    """``"tiny"`` / ``"small"`` for a :func:`build_tiny_weights` / :func:`build_small_weights`
    directory (its ``mirage_tiny.json`` marker), else ``"full"``."""
    meta = _read_marker(Path(root))
    return str(meta.get("size", "tiny")) if meta.get("tiny") else "full"


def build_tiny_weights(root: str | Path, seed: int = 0, side_branch: str = "random") -> Path:
    """Write tiny random-weight models in the real layout (for tests and ``--tiny``).

    Transformer: :data:`~mirage_core.generator.configs.TINY_TRANSFORMER_OVERRIDES`; VAE:
    the tiny Wan2.2 VAE; text encoder: a tiny UMT5 with a byte-level tokenizer; side branch:
    ``"random"`` (non-zero hints, so the memory visibly changes the output) or ``"zero"``.
    The outputs of these models are noise; only shapes, timing and the code path are real.
    Idempotent: an existing complete directory for the same seed is reused.
    """
    return _build_random_weights(root, "tiny", seed, side_branch)


def build_small_weights(root: str | Path, seed: int = 0, side_branch: str = "zero",
                        codec: str | None = None) -> Path:
    """Write the *small* model (random weights, for training from scratch) in the real layout.

    Transformer: :data:`~mirage_core.generator.configs.SMALL_TRANSFORMER_OVERRIDES` (hidden
    192, 8 blocks), side branch on every 2nd block; VAE, text encoder and tokenizer: the tiny
    ones of :func:`build_tiny_weights`. The marker records ``size: small`` and the side-branch
    layers, so :func:`load_models` accepts the sizes and attaches the branch there. Idempotent
    for the same seed and ``side_branch``.
    """
    return _build_random_weights(root, "small", seed, side_branch, codec)


def _build_random_weights(root: str | Path, size: str, seed: int, side_branch: str,
                          codec: str | None = None) -> Path:
    from diffusers import WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    if size not in SIZES or size == "full":
        raise MirageInputError(f"random weight directories are 'tiny' or 'small', got {size!r}")
    root = Path(root)
    marker = root / WEIGHTS_MARKER
    want = {"tiny": True, "seed": int(seed), "side_branch": side_branch, "version": 1}
    layers = None
    if size != "tiny":  # tiny markers keep their old form, so existing directories are reused
        layers = side_layers_for_size(size)
        want.update(size=size, side_layers=list(layers))
    vae_src = None
    if codec is not None:  # a bad spec fails before anything is written
        vae_src = check_codec_spec(codec)
        if vae_src is None:  # an analytic codec instead of a vae/ folder
            want["codec"] = codec
        else:  # a trained small VAE, copied into vae/
            want["vae"] = {"from": str(vae_src), "sha256": weights_sha256(vae_src)}
    if marker.is_file() and _read_marker(root) == want:
        return root
    root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = WanTransformer3DModel(**transformer_config(size))
        backbone.save_pretrained(str(root / "transformer"))
        if codec is None:
            WanVAECodec.from_config("tiny", seed=seed).vae.save_pretrained(str(root / "vae"))
        elif vae_src is not None:
            if (root / "vae").exists():
                shutil.rmtree(root / "vae")
            shutil.copytree(vae_src, root / "vae")
        enc = UMT5EncoderModel(UMT5Config(**TINY_TEXT_ENCODER_CONFIG))
        enc.save_pretrained(str(root / "text_encoder"))
        build_tiny_tokenizer().save_pretrained(str(root / "tokenizer"))
        branch = MemorySideBranch(SideBranchConfig.for_backbone(backbone, layers))
        branch.init_from_backbone(backbone)
        if side_branch == "random":
            with torch.no_grad():
                for m in (branch.mask_embedding, branch.proj_in, *branch.proj_out):
                    m.weight.normal_(0.0, 0.05)
                    m.bias.zero_()
        elif side_branch != "zero":
            raise MirageInputError(f"side_branch must be 'random' or 'zero', got {side_branch!r}")
        branch.save(root / SIDE_BRANCH_FILENAME)
    (root / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "note": f"{size} random weights (Mirage)"})
    )
    marker.write_text(json.dumps(want))
    return root


def _cast_like_pretrained(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast to ``dtype`` but keep the tensors diffusers keeps in float32 when loading."""
    return cast_keep_fp32(model, dtype, getattr(model, "_keep_in_fp32_modules", None) or ())


def random_models(
    size: str = "tiny",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    offload: str = "none",
    seed: int = 0,
    vae_dtype: torch.dtype = torch.float32,
) -> MirageModels:
    """Random-weight models built in memory (no files, no text encoder): timing and memory only.

    ``size="full"`` is the real Wan2.2-TI2V-5B transformer (5.0B) + side branch (1.39B) +
    VAE (705M); prompts must then be passed as embeddings ``[1, 512, 4096]``. The side branch
    gets small random output projections so that it costs what a trained one costs. Dtypes as
    :func:`load_models` (``dtype`` for the transformer and branch, ``vae_dtype`` for the VAE).
    """
    from diffusers import WanTransformer3DModel

    if offload not in OFFLOAD_MODES:
        raise MirageInputError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    dev = compute_device(device)
    dtype = dtype or _default_dtype(dev)
    park = torch.device("cpu") if offload == "model" else dev
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(park):
            backbone = WanTransformer3DModel(**transformer_config(size))
            branch = MemorySideBranch(SideBranchConfig.for_backbone(
                backbone, side_layers_for_size(size)))
        branch.init_from_backbone(backbone)
        with torch.no_grad():
            for m in (branch.mask_embedding, branch.proj_in, *branch.proj_out):
                m.weight.normal_(0.0, 0.02)
    _cast_like_pretrained(backbone, dtype).eval().requires_grad_(False)
    branch.cast(dtype).eval().requires_grad_(False)
    transformer = MirageTransformer(backbone, branch)
    vae = WanVAECodec.from_config("full" if size == "full" else "tiny", seed=seed, device=park,
                                  dtype=vae_dtype)
    return MirageModels(
        transformer, vae, None, dev, offload, f"RANDOM {size} weights (in memory)", "random"
    )
