"""Training's memory/precision switches on the CPU: gradient checkpointing and bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_core.generator.loading import load_models
from mirage_core.train import (
    TrainConfig,
    chunk_inputs,
    flow_matching_loss,
    synthetic_clips,
    train,
)
from mirage_core.train.loop import prepare_for_training, trainable_parameters

H, W = 64, 96


@pytest.fixture(scope="module")
def clip():
    return synthetic_clips(1, 9, (H, W), text_dim=32, seed=5)[0]


def _grads(tiny_weights, clip, checkpointing: bool) -> tuple[float, dict[str, torch.Tensor], dict]:
    models = load_models(tiny_weights, side_branch="zero", device="cpu", load_text_encoder=False)
    cfg = TrainConfig(stage=2, lora_rank=4, lora_alpha=4.0, lora_dropout=0.05,
                      gradient_checkpointing=checkpointing)
    prepare_for_training(models, cfg)
    tr = models.transformer
    with torch.no_grad():  # a non-zero branch and LoRA B, so every gradient path carries signal
        g = torch.Generator().manual_seed(1)
        for n, p in trainable_parameters(tr):
            if "proj_out" in n or "lora_B" in n or "proj_in" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    assert tr.gradient_checkpointing is checkpointing
    assert tr.side_branch.gradient_checkpointing is checkpointing
    tr.train()
    calls = {"backbone": 0, "side_branch": 0}  # forward runs of each tree's first block

    def counting(name, forward):  # (forward hooks do not fire in checkpoint recomputation)
        def run(*args, **kwargs):
            calls[name] += 1
            return forward(*args, **kwargs)
        return run

    for name, block in (("backbone", tr.backbone.blocks[0]),
                        ("side_branch", tr.side_branch.blocks[0])):
        block.forward = counting(name, block.forward)
    inp = chunk_inputs(clip, 48, 16, "cpu")
    noise = torch.randn(inp.targets.shape, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)  # LoRA dropout draws: the recomputation must replay the same masks
    loss = flow_matching_loss(tr, inp, clip.prompt_embeds, 0.6, noise)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainable_parameters(tr)}
    return float(loss.detach()), grads, calls


def test_gradient_checkpointing_gives_the_same_gradients(tiny_weights, clip):
    l0, g0, c0 = _grads(tiny_weights, clip, False)
    l1, g1, c1 = _grads(tiny_weights, clip, True)
    # checkpointed blocks run again in the backward pass, in both trees
    assert (c0, c1) == ({"backbone": 1, "side_branch": 1}, {"backbone": 2, "side_branch": 2})
    assert l0 == l1
    assert g0.keys() == g1.keys() and any("lora_A" in k for k in g0)
    assert any(k.startswith("side_branch.blocks") for k in g0)
    assert all(g0[k].abs().sum() > 0 for k in g0 if "lora_A" in k or "proj_in" in k)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7, msg=k)


def test_bf16_autocast_trains_with_float32_master_weights(tiny_weights, clip, tmp_path):
    runs = {}
    for mp in ("fp32", "bf16"):
        models = load_models(tiny_weights, side_branch="zero", device="cpu",
                             load_text_encoder=False)
        cfg = TrainConfig(stage=2, lora_rank=4, steps=3, lr=1e-3, text_dropout=0.0,
                          mixed_precision=mp, gradient_checkpointing=True, save_every=3,
                          log_every=1, progress=False, tensorboard=False,
                          out_dir=str(tmp_path / mp))
        res = train(cfg, [clip], models)
        assert all(np.isfinite(res.losses)) and res.step == 3
        assert {p.dtype for _, p in trainable_parameters(models.transformer)} == {torch.float32}
        runs[mp] = res.losses
    # bf16 rounds activations: close to the fp32 losses, but not bit-equal (autocast did act)
    assert runs["bf16"] != runs["fp32"]
    np.testing.assert_allclose(runs["bf16"], runs["fp32"], rtol=0.05)
