"""Trained weights at inference: side branch + stage-2 LoRA from a `mirage train` checkpoint."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from mirage_core.errors import MirageInputError, WeightsNotFoundError
from mirage_core.generator.loading import (
    LORA_FILENAME,
    SIDE_BRANCH_FILENAME,
    load_models,
    resolve_trained_weights,
)
from mirage_core.generator.side_branch import SideBranchMismatchError
from mirage_core.train import TrainConfig, apply_lora, chunk_inputs, synthetic_clips, train
from mirage_core.train.lora import lora_state_dict, merge_lora

H, W = 64, 96


@pytest.fixture(scope="module")
def clip():
    return synthetic_clips(1, 9, (H, W), text_dim=32, seed=3)[0]


def _load(tiny_weights, side_branch="zero"):
    return load_models(tiny_weights, side_branch=side_branch, device="cpu", load_text_encoder=False)


def _forward(models, clip):
    models.transformer.eval()
    inp = chunk_inputs(clip, 48, 16, "cpu")
    x = torch.cat([inp.clean, inp.targets], dim=2)
    with torch.no_grad():
        return models.transformer(x, 500.0, inp.labels, clip.prompt_embeds, inp.readout,
                                  inp.mask)


def test_merged_lora_computes_what_the_adapters_compute(tiny_weights, clip):
    adapted, merged = _load(tiny_weights), _load(tiny_weights)
    base = _forward(merged, clip)
    apply_lora(adapted.transformer.backbone, rank=4, alpha=8.0, dropout=0.05)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, v in lora_state_dict(adapted.transformer.backbone).items():
            if k.endswith("lora_B"):
                v.copy_(torch.randn(v.shape, generator=g) * 0.05)
    tensors = lora_state_dict(adapted.transformer.backbone)
    names = merge_lora(merged.transformer.backbone, tensors, scale=8.0 / 4)
    assert len(names) == 4 * 8
    want, got = _forward(adapted, clip), _forward(merged, clip)
    assert not torch.allclose(want, base, atol=1e-4)  # the adapters do change the output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(MirageInputError, match="without LoRA"):
        merge_lora(adapted.transformer.backbone, tensors, 1.0)


def test_merge_lora_refuses_tensors_that_do_not_fit(tiny_weights):
    models = _load(tiny_weights)
    bb = models.transformer.backbone
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    adapted = _load(tiny_weights)
    apply_lora(adapted.transformer.backbone, rank=2)
    good = lora_state_dict(adapted.transformer.backbone)
    partial = {k: v for k, v in good.items() if not k.startswith("blocks.0.attn1.to_q")}
    with pytest.raises(MirageInputError, match="missing"):
        merge_lora(bb, partial, 1.0)
    with pytest.raises(MirageInputError, match="unpaired"):
        merge_lora(bb, {k: v for k, v in good.items() if k != "blocks.0.attn1.to_q.lora_B"}, 1.)
    with pytest.raises(MirageInputError, match="unexpected"):
        merge_lora(bb, {**good, "blocks.0.attn2.to_q.lora_A": torch.zeros(2, 3),
                        "blocks.0.attn2.to_q.lora_B": torch.zeros(3, 2)}, 1.0)
    wrong = dict(good)
    wrong["blocks.7.attn1.to_v.lora_A"] = torch.zeros(2, 5)
    with pytest.raises(MirageInputError, match="do not fit"):
        merge_lora(bb, wrong, 1.0)
    after = bb.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # nothing half-merged


def test_a_stage2_checkpoint_runs_at_inference_as_it_trained(tiny_weights, clip, tmp_path):
    trained = load_models(tiny_weights, side_branch="zero", device="cpu")  # UMT5 for text dropout
    cfg = TrainConfig(stage=2, lr=1e-3, steps=2, lora_rank=4, lora_alpha=8.0, save_every=2,
                      log_every=1, progress=False, tensorboard=False,
                      out_dir=str(tmp_path / "run"))
    res = train(cfg, [clip], trained)
    want = _forward(trained, clip)

    for spec in (res.checkpoint, tmp_path / "run"):  # a checkpoint, or the run's newest one
        models = _load(tiny_weights, side_branch=spec)
        assert models.lora_source == str(res.checkpoint / LORA_FILENAME)
        assert models.side_branch_source == str(res.checkpoint / SIDE_BRANCH_FILENAME)
        torch.testing.assert_close(_forward(models, clip), want, rtol=1e-4, atol=1e-5)

    # the side-branch file alone: no LoRA, so a different model (the adapters trained)
    alone = _load(tiny_weights, side_branch=res.checkpoint / SIDE_BRANCH_FILENAME)
    assert alone.lora_source is None
    assert not torch.allclose(_forward(alone, clip), want, atol=1e-5)

    # a weights directory with both files beside the backbone: side_branch=None takes both
    wdir = tmp_path / "weights_with_lora"
    shutil.copytree(tiny_weights, wdir)
    for name in (SIDE_BRANCH_FILENAME, LORA_FILENAME):
        shutil.copy(res.checkpoint / name, wdir / name)
    models = load_models(wdir, side_branch=None, device="cpu", load_text_encoder=False)
    assert models.lora_source == str(wdir / LORA_FILENAME)
    torch.testing.assert_close(_forward(models, clip), want, rtol=1e-4, atol=1e-5)


def test_trained_weight_errors_say_what_was_looked_for(tiny_weights, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match="checkpoints/step_"):
        resolve_trained_weights(empty)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        _load(tiny_weights, side_branch=tmp_path / "nope")
    # a LoRA file that is not one (no format metadata) or does not fit the backbone
    ck = tmp_path / "ck"
    ck.mkdir()
    _load(tiny_weights).transformer.side_branch.save(ck / SIDE_BRANCH_FILENAME)
    save_file({"blocks.0.attn1.to_q.lora_A": torch.zeros(2, 3)}, str(ck / LORA_FILENAME))
    with pytest.raises(SideBranchMismatchError, match="format"):
        _load(tiny_weights, side_branch=ck)
    save_file({"blocks.0.attn1.to_q.lora_A": torch.zeros(2, 3)}, str(ck / LORA_FILENAME),
              metadata={"format": "mirage-lora", "rank": "2", "alpha": "2"})
    with pytest.raises(SideBranchMismatchError, match="not a LoRA for this backbone"):
        _load(tiny_weights, side_branch=ck)
    (ck / LORA_FILENAME).write_bytes(b"garbage")
    with pytest.raises(SideBranchMismatchError, match="not a readable safetensors"):
        _load(tiny_weights, side_branch=ck)


@pytest.mark.parametrize("stage", [1, 2])
def test_shipped_training_configs_are_the_paper_recipe(stage):
    from pathlib import Path

    cfg = TrainConfig.from_file(Path(__file__).parents[1] / "config" / f"train_stage{stage}.yaml")
    assert cfg.stage == stage and cfg.peak_lr == (1e-5 if stage == 1 else 1e-4)
    assert cfg.betas == (0.0, 0.999) and cfg.weight_decay == 1e-3 and cfg.text_dropout == 0.2
    assert cfg.gradient_checkpointing and cfg.mixed_precision == "auto"
    if stage == 2:
        assert (cfg.lora_rank, cfg.lora_dropout) == (64, 0.05)
        assert cfg.side_branch == "out/stage1"  # starts from the stage-1 run
