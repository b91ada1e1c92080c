"""``mirage train``: the command-line entry point (:func:`main_train`) and synthetic clips.

``--tiny`` trains tiny random-weight models (written with
:func:`~mirage_core.generator.loading.build_tiny_weights`) on synthetic in-memory clips: the
whole code path runs on a laptop CPU in seconds; the numbers mean nothing. ``--size small``
(or ``model_size: small`` in the config, e.g. ``config/train_small.yaml``) builds the small
model (:func:`~mirage_core.generator.loading.build_small_weights`) in ``OUT/small_weights`` and
trains it, from scratch with that recipe; without ``--data`` on synthetic clips (timing only).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset

from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError
from mirage_core.train.config import MODEL_SIZES, TrainConfig
from mirage_core.train.loop import NonFiniteLossError, distributed_session, train

__all__ = ["main_train", "synthetic_clips"]

log = logging.getLogger(__name__)


def synthetic_clips(n: int = 4, latent_frames: int = 9, image_hw: tuple[int, int] = (64, 96),
                    channels: int = 48, stride: int = 16, text_dim: int | None = 32,
                    seed: int = 0) -> list[Clip]:
    """``n`` random clips with a plausible camera motion (for ``--tiny`` and tests).

    Latents ``[L, C, h, w]`` and ``frame_latents`` (row 0 = latent 0) are N(0, 1); depth
    ``[L, H, W]`` is a tilted plane 1.5-3 m; no dynamic mask; poses are ``orbit_left`` RGB
    frames ``0, 4, ..., 4 (L - 1)``; prompt embeddings ``[1, 8, text_dim]`` are random
    (``text_dim=None``: none, the prompt is encoded instead).
    """
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.trajectory import make_trajectory

    H, W = image_hw
    h, w = H // stride, W // stride
    K = intrinsics_from_fov(W, H, 60.0)
    motions = ("orbit_left", "push_in", "pan_right", "move_left")
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        traj = make_trajectory(motions[i % len(motions)], 1 + 4 * (latent_frames - 1), K=K,
                               image_hw=(H, W))
        ramp = torch.linspace(1.5, 3.0, H)[:, None].expand(H, W)
        latents = torch.randn((latent_frames, channels, h, w), generator=g)
        frame_latents = torch.randn((latent_frames, channels, h, w), generator=g)
        frame_latents[0] = latents[0]
        out.append(Clip(
            latents=latents,
            depth=ramp[None].repeat(latent_frames, 1, 1).contiguous(),
            mask=torch.zeros((latent_frames, H, W), dtype=torch.bool),
            T_world_cam=traj.T_world_cam[::4].clone(),
            K=K.clone(),
            image_hw=(H, W),
            prompt=f"synthetic clip {i}",
            prompt_embeds=None if text_dim is None else torch.randn((1, 8, text_dim),
                                                                    generator=g),
            key=f"synthetic/{i:03d}",
            frame_latents=frame_latents,
        ))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage train",
        description="Train the Mirage memory side branch (stage 1) or side branch + LoRA "
                    "(stage 2) with flow matching (docs/training.md).",
    )
    p.add_argument("--config", type=Path, help="training config (.yaml/.yml/.json); fields of "
                   "mirage_core.train.TrainConfig")
    p.add_argument("--data", type=Path, nargs="+",
                   help="prepared clip dataset(s) (LMDB ClipStore directories; several are "
                   "trained on as one, in the order given, all encoded by the model's codec)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in out_dir (same config)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny random-weight models (+ synthetic clips if no --data): CPU smoke run;"
                   " the same as --size tiny, plus smoke-run defaults without --config")
    p.add_argument("--size", choices=MODEL_SIZES,
                   help="override config.model_size: 'small'/'tiny' build random-weight models "
                   "of that size in OUT/<size>_weights (config.weights_dir is then not used); "
                   "synthetic clips if no --data")
    p.add_argument("--steps", type=int, help="override config.steps")
    p.add_argument("--out", type=Path, help="override config.out_dir")
    p.add_argument("--stage", type=int, choices=(1, 2), help="override config.stage")
    return p


def _open_dataset(path: Path):
    try:
        from mirage_core.data.lmdb_store import ClipStore
    except ImportError as e:
        raise MirageInputError(f"cannot open {str(path)!r}: the clip store is unavailable: {e}"
                               ) from e
    store = ClipStore(path)
    if not (hasattr(store, "__len__") and hasattr(store, "__getitem__")):
        raise MirageInputError("the ClipStore does not support len() and [index] access yet")
    return store


def _check_store_codec(store, models, path) -> None:
    """Refuse clips encoded by another codec than the model's (channels, stride, label)."""
    meta = getattr(store, "meta", None)
    if meta is None:
        return
    codec = models.vae
    have = (int(meta.latent_channels), int(meta.spatial_stride))
    want = (int(codec.channels), int(codec.stride))
    analytic = "space-time-to-depth"
    sha = re.compile(r"sha256 ([0-9a-f]+)")
    tags = (sha.findall(meta.vae_source), sha.findall(codec.label))
    if (have != want or (analytic in meta.vae_source) != (analytic in codec.label)
            or tags[0] != tags[1]):
        raise MirageInputError(
            f"the clips in {str(path)!r} were encoded by {meta.vae_source!r} ({have[0]} "
            f"channels, stride {have[1]}) but the model's codec is {codec.label!r} "
            f"({want[0]} channels, stride {want[1]}); encode the data with the model's codec "
            f"(mirage data synth --vae ...) or set the config's codec"
        )


def _load_models(config: TrainConfig, dist_info):
    """The models ``config.model_size`` names: ``weights_dir`` (``"full"``, or a marked
    directory of that size), or random weights of that size built in
    ``out_dir/<size>_weights`` (rank 0 writes them, the other ranks wait and reuse them)."""
    from mirage_core.generator.loading import (
        build_small_weights,
        build_tiny_weights,
        load_models,
        weights_size,
    )

    size = config.model_size
    if size == "full" or config.weights_dir is not None:
        if config.weights_dir is None:
            raise MirageInputError("set weights_dir in the config (or use --tiny / --size small)")
        found = weights_size(config.weights_dir)
        if found != size:
            raise MirageInputError(
                f"model_size is {size!r} but weights_dir {config.weights_dir!r} holds "
                f"{found!r} models" + ("" if found != "full" else " (no mirage_tiny.json marker)")
            )
        return load_models(config.weights_dir, side_branch=config.side_branch,
                           device="cpu" if size == "tiny" else None)
    wdir = Path(config.out_dir) / f"{size}_weights"
    # tiny: seed 0 whatever the run's seed, as before; small: the run's seed
    builder, seed = ((build_tiny_weights, 0) if size == "tiny"
                     else (build_small_weights, config.seed))
    kw = {"codec": config.codec} if config.codec is not None else {}
    if config.codec is not None and size != "small":
        raise MirageInputError("codec is supported for model_size 'small' only")
    if dist_info.main:  # rank 0 writes them, the others reuse the directory
        builder(wdir, seed=seed, side_branch="zero", **kw)
    if dist_info.world > 1:
        torch.distributed.barrier()
    weights = builder(wdir, seed=seed, side_branch="zero", **kw)  # idempotent: checks marker
    return load_models(weights, side_branch=config.side_branch,
                       device="cpu" if size == "tiny" else None)


def main_train(argv: list[str] | None = None) -> int:
    """Run ``mirage train``; returns the process exit code (0 ok, 1 NaN stop, 2 bad input).

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank runs this; the process group is joined
    before the models are loaded (each rank on its own GPU) and left after training.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with distributed_session() as dist_info:
        return _main_train(args, dist_info)


def _main_train(args: argparse.Namespace, dist_info) -> int:
    say = print if dist_info.main else (lambda *a, **k: None)
    try:
        over = {}
        if args.steps is not None:
            over["steps"] = args.steps
        if args.out is not None:
            over["out_dir"] = str(args.out)
        if args.stage is not None:
            over["stage"] = args.stage
        if args.tiny and args.size not in (None, "tiny"):
            raise MirageInputError(f"--tiny is --size tiny; it contradicts --size {args.size}")
        size = "tiny" if args.tiny else args.size
        if size is not None:
            over["model_size"] = size
            if size != "full":  # random weights of that size, built in out_dir
                over["weights_dir"] = None
        if args.tiny and args.config is None:
            over.update(steps=over.get("steps", 8), log_every=1, save_every=4,
                        out_dir=over.get("out_dir", "out/train_tiny"))
        # the command line's values replace the file's before it is checked, so a file whose
        # steps the command line raises is not refused for what it no longer says
        config = (TrainConfig.from_file(args.config, **over) if args.config
                  else replace(TrainConfig(), **over))
        models = _load_models(config, dist_info)
        if args.data is not None:
            stores = [_open_dataset(path) for path in args.data]
            for store, path in zip(stores, args.data, strict=True):
                _check_store_codec(store, models, path)
            clips = stores[0] if len(stores) == 1 else ConcatDataset(stores)
        elif config.model_size != "full":
            clips = synthetic_clips(4, config.chunk_latent_frames, text_dim=models.text_dim,
                                    channels=models.vae.channels, stride=models.vae.stride,
                                    seed=config.seed)
        else:
            raise MirageInputError("give --data DIR (a prepared clip dataset), or use --tiny")
        what = ("the whole model" + (" from scratch" if config.init == "random" else "")
                if config.train_backbone else f"stage {config.stage}")
        say(f"training {what} on {len(clips)} clips with {models.source}; "
            f"out: {config.out_dir}" + (f"; {dist_info.world} ranks" if dist_info.world > 1
                                        else ""))
        res = train(config, clips, models, resume=args.resume)
    except NonFiniteLossError as e:
        say(f"error: {e}", file=sys.stderr)
        return 1
    except MirageInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    say(f"done: step {res.step}, last loss {res.losses[-1] if res.losses else float('nan'):.4f}"
        f", {len(res.losses) / max(res.seconds, 1e-9):.2f} steps/s, checkpoint "
        f"{res.checkpoint}")
    return 0
