"""Training batches of several chunks (``TrainConfig.batch_size``): the batched loss is the
mean of the chunks' own losses, memory dropout per chunk, batch 1 unchanged, resume, metrics
and the loss plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_resume_is_bit_for_bit

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.loading import load_models
from mirage_core.train import TrainConfig, flow_matching_loss, synthetic_clips, train
from mirage_core.train.loop import NonFiniteLossError, _collate, _Dist, _step_inputs
from mirage_core.train.plot import _loss_series


@pytest.fixture(scope="module")
def clips():
    return synthetic_clips(5, 9, (64, 96), text_dim=32, seed=2)


def _models(weights):
    m = load_models(weights, side_branch="zero", device="cpu", load_text_encoder=False)
    g = torch.Generator().manual_seed(0)  # a branch that acts, so memory dropout matters
    sb = m.transformer.side_branch
    with torch.no_grad():
        for mod in (sb.mask_embedding, sb.proj_in, *sb.proj_out):
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.05)
    return m


def _cfg(out: Path, **kw) -> TrainConfig:
    base = dict(stage=1, lr=1e-3, steps=4, log_every=1, save_every=2, progress=False,
                tensorboard=False, text_dropout=0.0, train_backbone=True, memory_dropout=0.5,
                seed=3, out_dir=str(out))
    base.update(kw)
    return TrainConfig(**base)


def test_batched_loss_is_the_mean_of_each_chunks_own_loss(tiny_weights, clips):
    """Slow reference: every chunk through the model alone (batch 1, its own float sigma and
    memory switch), against one batched forward with per-chunk sigma and hint scale."""
    models = _models(tiny_weights)
    models.transformer.eval()
    cfg = _cfg(Path("unused"), batch_size=4)
    items = [_step_inputs(cfg, clips, s, _Dist(), models, None) for s in range(4)]
    assert {it.memory_dropped for it in items} == {True, False}  # both kinds in the batch
    assert len({it.sigma for it in items}) == 4
    tr = models.transformer
    with torch.no_grad():
        alone = torch.stack([flow_matching_loss(
            tr, it.inputs, it.text, it.sigma, it.noise,
            conditioning_scale=0.0 if it.memory_dropped else 1.0) for it in items])
        b = _collate(items)
        batched = flow_matching_loss(tr, b.inputs, b.text, b.sigma, b.noise,
                                     conditioning_scale=b.scale, reduction="none")
        mean = flow_matching_loss(tr, b.inputs, b.text, b.sigma, b.noise,
                                  conditioning_scale=b.scale)
    assert batched.shape == (4,)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, alone.mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(MirageInputError, match="reduction"):
        flow_matching_loss(tr, b.inputs, b.text, b.sigma, b.noise, reduction="sum")
    with pytest.raises(ShapeError, match="conditioning_scale"):
        flow_matching_loss(tr, b.inputs, b.text, b.sigma, b.noise,
                           conditioning_scale=torch.ones(3))


def test_batch_one_draws_what_it_always_drew(tiny_weights, clips):
    """Sample ``step * B + b``: batch 2's first step holds batch 1's steps 0 and 1."""
    models = _models(tiny_weights)
    one = _cfg(Path("unused"))
    two = replace(one, batch_size=2)
    for s in range(4):
        a = _step_inputs(one, clips, s, _Dist(), models, None)
        b = _step_inputs(two, clips, s, _Dist(), models, None)
        assert a.clip.key == b.clip.key and a.sigma == b.sigma and a.chunk == b.chunk
        assert a.memory_dropped == b.memory_dropped and torch.equal(a.noise, b.noise)


def test_batched_training_resumes_bit_for_bit_and_logs_both_losses(tiny_weights, clips,
                                                                     tmp_path):
    _, _, recs = assert_resume_is_bit_for_bit(lambda d: _cfg(d, batch_size=3),
                                              lambda: _models(tiny_weights), clips, tmp_path)
    assert len(recs) == 4 and all(len(r["clip"]) == len(r["sigma"]) == 3 for r in recs)
    for r in recs:
        parts = [r[k] for k in ("loss_memory", "loss_no_memory") if k in r]
        assert parts and min(parts) - 1e-6 <= r["loss"] <= max(parts) + 1e-6
        assert 0 <= r["memory_dropped"] <= 3
    assert any("loss_memory" in r for r in recs) and any("loss_no_memory" in r for r in recs)
    # the plot's series take the batch's per-kind means
    x, y = _loss_series(recs, dropped=True)
    assert list(y) == [r["loss_no_memory"] for r in recs if "loss_no_memory" in r]
    assert list(x) == [r["step"] for r in recs if "loss_no_memory" in r]
    # a resumed run must keep its batch size
    with pytest.raises(Exception, match="batch_size"):
        train(_cfg(tmp_path / "b", batch_size=2, steps=6), clips, _models(tiny_weights),
              resume=True)


def test_a_nan_in_a_batch_names_the_batchs_clips(tiny_weights, clips, tmp_path):
    from mirage_core.data.clip import Clip

    bad = Clip(**{**clips[1].__dict__, "prompt_embeds": torch.full((1, 8, 32), float("nan")),
                  "key": "synth/bad/001"})
    cfg = _cfg(tmp_path / "run", batch_size=2, shuffle=False, save_every=1)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, [clips[0], bad, clips[2]], _models(tiny_weights))
    assert e.value.step == 1 and "synth/bad/001" in e.value.clip_key
    assert "clips" in str(e.value) and "step 1" in str(e.value)


def test_loss_series_of_batch_one_records_split_by_memory_dropped():
    recs = [{"step": 1, "loss": 1.0, "memory_dropped": False},
            {"step": 2, "loss": 2.0, "memory_dropped": True},
            {"step": 3, "loss": 3.0, "memory_dropped": 1, "loss_memory": 2.5,
             "loss_no_memory": 4.0}]
    x, y = _loss_series(recs, dropped=False)
    assert list(x) == [1, 3] and list(y) == [1.0, 2.5]
    x, y = _loss_series(recs, dropped=True)
    assert list(x) == [2, 3] and list(y) == [2.0, 4.0]
    assert isinstance(x, np.ndarray)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_batch_size_must_be_a_positive_integer(bad):
    with pytest.raises(MirageInputError, match="batch_size"):
        TrainConfig(batch_size=bad)
