"""Turn a ``mirage train`` run of a small model into a self-contained weights directory.

``python -m mirage_core.train.export RUN_DIR OUT_DIR`` writes the layout
:func:`~mirage_core.generator.loading.load_models` reads, with the run's newest checkpoint
baked in (its weight average, ``mirage_ema.safetensors``, when the run kept one with
``ema_decay`` > 0; ``--raw`` bakes the last step's weights instead): ``transformer/`` (the
trained backbone, diffusers format), the trained
``mirage_side_branch.safetensors``, the run's text encoder and tokenizer, and a marker
(``mirage_tiny.json``) that records the codec, the training resolution and chunk size, the
caption, the checkpoint step, :data:`~mirage_core.generator.loading.MODEL_CODE_VERSION` and
``"trained"``. Weights are stored in bf16 (norms and modulation tables in float32, as
diffusers keeps them) to halve the files; they load back as float32 on the CPU.

This is how ``mirage_core/weights/mirage-small-rooms`` (the shipped default) was made
(docs/model_card.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from mirage_core.errors import MirageInputError
from mirage_core.train.loop import EMA_FILENAME

__all__ = ["export_small_model", "main"]


def export_small_model(run_dir: str | Path, out_dir: str | Path, image_hw: tuple[int, int],
                       *, scene: str | None = "heldout", dtype: torch.dtype = torch.bfloat16,
                       extra: dict[str, Any] | None = None, use_ema: bool = True,
                       readout_hole_fill: int | None = None) -> Path:
    """Bake the newest checkpoint of ``run_dir`` into ``out_dir`` (module docstring).

    Args:
        run_dir: a ``mirage train`` output directory of a ``model_size: small`` run (its
            ``small_weights/``, ``config.json`` and ``checkpoints/step_N``).
        out_dir: the new weights directory (replaced if it exists).
        image_hw: ``(H, W)`` the model was trained at (its data's size).
        scene: the marker's default scene (``"heldout"``: held-out procedural room 0).
        dtype: storage dtype of the weights.
        extra: more marker fields (e.g. figures for the model card).
        use_ema: bake the checkpoint's weight average when it has one (``False``: the last
            step's weights). The marker's ``trained.weights`` says which.
        readout_hole_fill: the latent readout's hole-fill passes the model runs with (the
            marker's ``readout_hole_fill``, which rollout, eval and launch apply); ``None``:
            the passes it was trained with (its config's). Another value is a measured
            inference choice; the training config in the marker still says what it learnt on.

    Raises:
        MirageInputError: not a small run, no checkpoint, or a weight average that does not
            fit the model.
    """
    from mirage_core.generator.loading import (
        MODEL_CODE_VERSION,
        SIDE_BRANCH_FILENAME,
        load_models,
        resolve_trained_model,
    )
    from mirage_core.generator.side_branch import cast_keep_fp32

    run = Path(run_dir)
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("model_size") != "small":
        raise MirageInputError(f"{run} is not a model_size 'small' run ({cfg.get('model_size')})")
    # the run's starting weights: built from scratch in the run (small_weights/), or a
    # trained small model it continued (weights_dir, init: pretrained)
    src = Path(cfg["weights_dir"]) if cfg.get("weights_dir") else run / "small_weights"
    files = resolve_trained_model(run)
    models = load_models(src, side_branch=str(files.side_branch.parent), device="cpu")
    ckpt = files.side_branch.parent
    weights = "last step"
    if use_ema and (ckpt / EMA_FILENAME).is_file():
        weights = _bake_average(models.transformer, ckpt / EMA_FILENAME)
    out = Path(out_dir)
    if out.resolve() == src.resolve():
        raise MirageInputError(f"{out} is the run's starting weights directory; export the "
                               "continued model to another directory")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for sub in ("text_encoder", "tokenizer", "vae"):  # no vae/ with an analytic codec
        if (src / sub).is_dir():
            shutil.copytree(src / sub, out / sub)
    if (src / "model_index.json").is_file():
        shutil.copy(src / "model_index.json", out / "model_index.json")
    backbone = models.transformer.backbone
    keep = getattr(backbone, "_keep_in_fp32_modules", None) or ()
    cast_keep_fp32(backbone, dtype, keep)
    backbone.save_pretrained(str(out / "transformer"))
    branch = models.transformer.side_branch
    branch.cast(dtype)
    branch.save(out / SIDE_BRANCH_FILENAME)
    marker = json.loads((src / "mirage_tiny.json").read_text())
    trained = {"run": run.name, "checkpoint": ckpt.name, "steps": cfg.get("steps"),
               "weights": weights, "config": cfg}
    if marker.get("trained"):  # a continued model: keep its lineage
        before = marker["trained"]
        trained["continued_from"] = {k: before[k] for k in
                                     ("run", "checkpoint", "steps", "continued_from")
                                     if k in before}
        trained["total_steps"] = int(before.get("total_steps", before.get("steps") or 0)) + \
            int(cfg.get("steps") or 0)
    marker.update({
        "trained": trained,
        "code_version": MODEL_CODE_VERSION,
        "image_hw": [int(image_hw[0]), int(image_hw[1])],
        "chunk_latent_frames": int(cfg.get("chunk_latent_frames", 9)),
        "flow_shift": float(cfg.get("flow_shift", 5.0)),
        "readout_hole_fill": int(cfg.get("readout_hole_fill", 0) if readout_hole_fill is None
                                 else readout_hole_fill),
        "scene": scene,
        "prompt": _prompt(),
        "side_branch": "trained",
        **(extra or {}),
    })
    (out / "mirage_tiny.json").write_text(json.dumps(marker, indent=2) + "\n")
    return out


def _bake_average(transformer: torch.nn.Module, path: Path) -> str:
    """Copy a checkpoint's weight average into ``transformer`` (every tensor by name); returns
    what the marker records (``"ema (decay D, N steps)"``)."""
    from mirage_core.safetensors_io import read_safetensors

    tensors, meta = read_safetensors(path, MirageInputError)
    params = dict(transformer.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise MirageInputError(f"{path}: the weight average has tensors this model lacks "
                               f"({len(unknown)}, e.g. {unknown[0]!r})")
    with torch.no_grad():
        for name, t in tensors.items():
            p = params[name]
            if p.shape != t.shape:
                raise MirageInputError(f"{path}: {name} is {tuple(t.shape)} in the average, "
                                       f"{tuple(p.shape)} in the model")
            p.copy_(t.to(p.dtype))
    meta = meta or {}
    return f"ema (decay {meta.get('ema_decay', '?')}, {meta.get('ema_steps', '?')} steps)"


def _prompt() -> str:
    from mirage_core.data.synth import SYNTH_PROMPT

    return SYNTH_PROMPT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mirage_core.train.export",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="a `mirage train` output directory (model_size small)")
    ap.add_argument("out_dir", help="the weights directory to write")
    ap.add_argument("--image-hw", default="64x96", help="training resolution HxW (marker)")
    ap.add_argument("--raw", action="store_true",
                    help="bake the last step's weights even when the run kept a weight average")
    ap.add_argument("--readout-hole-fill", type=int, default=None, metavar="PASSES",
                    help="hole-fill passes the model runs its readouts with (default: those "
                         "it was trained with; docs/conventions.md)")
    a = ap.parse_args(argv)
    if a.readout_hole_fill is not None and a.readout_hole_fill < 0:
        ap.error(f"--readout-hole-fill must be >= 0, got {a.readout_hole_fill}")
    h, _, w = a.image_hw.partition("x")
    out = export_small_model(a.run_dir, a.out_dir, (int(h), int(w)), use_ema=not a.raw,
                             readout_hole_fill=a.readout_hole_fill)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
