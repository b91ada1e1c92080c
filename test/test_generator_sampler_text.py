"""The sampler's noise grid against Wan2.2's published schedule, and prompt cleaning.

Reference for the grid: Wan-Video/Wan2.2 (commit 42bf4cf), ``wan/utils/fm_solvers_unipc.py``,
``FlowUniPCMultistepScheduler.__init__`` (``alphas = np.linspace(1, 1/N, N)[::-1]``,
``sigmas = 1 - alphas`` in float32, ``sigma_max = sigmas[0].item()``, ``sigma_min =
sigmas[-1].item()``) and ``set_timesteps`` (``sigmas = np.linspace(sigma_max, sigma_min,
steps + 1)[:-1]``, ``sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)``, ``timesteps =
int64(sigmas * N)``, ``sigmas = float32([sigmas, 0])``), called from ``wan/textimage2video.py``
as ``FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1)`` then
``set_timesteps(40, shift=5.0)`` (TI2V-5B: ``sample_shift=5.0``, ``sample_steps=40``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError
from mirage_core.generator.sampler import (
    SamplerConfig,
    denoise_chunk,
    make_scheduler,
    wan22_sampling_schedule,
)
from mirage_core.generator.segment_rope import SegmentLabel
from mirage_core.generator.text import PromptEncoder, check_prompt, clean_prompt

R, P, T = SegmentLabel.REFERENCE, SegmentLabel.PRECEDING, SegmentLabel.TARGET

#: Wan2.2's timesteps for 40 steps, shift 5 (the formula above, evaluated once and written out).
WAN22_T40_SHIFT5 = [
    999, 994, 989, 983, 978, 972, 965, 959, 952, 944, 937, 929, 920, 911, 902, 892, 882, 870,
    859, 846, 833, 818, 803, 786, 768, 749, 728, 706, 681, 654, 624, 591, 555, 514, 468, 416,
    356, 288, 208, 113,
]


def _wan22_reference(steps: int, shift: float, n: int = 1000):
    """A transcription of Wan2.2's FlowUniPCMultistepScheduler(shift=1).set_timesteps."""
    alphas = np.linspace(1, 1 / n, n)[::-1].copy()
    train = torch.from_numpy(1.0 - alphas).to(dtype=torch.float32)
    train = 1 * train / (1 + (1 - 1) * train)  # __init__ with shift=1
    sigma_max, sigma_min = train[0].item(), train[-1].item()
    sigmas = np.linspace(sigma_max, sigma_min, steps + 1).copy()[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    timesteps = torch.from_numpy(sigmas * n).to(dtype=torch.int64)
    return torch.from_numpy(np.concatenate([sigmas, [0]]).astype(np.float32)), timesteps


def test_grid_is_wan22s_published_schedule():
    sigmas, timesteps = wan22_sampling_schedule(40, 5.0)
    assert timesteps.tolist() == WAN22_T40_SHIFT5
    assert sigmas.dtype == torch.float32 and sigmas.shape == (41,)
    # first noise level: 5 * 0.999 / (1 + 4 * 0.999) = 0.9998, not diffusers' 0.999999
    assert float(sigmas[0]) == pytest.approx(4.995 / 4.996, abs=1e-7)
    assert float(sigmas[-1]) == 0.0
    for steps, shift in ((40, 5.0), (50, 3.0), (4, 5.0), (1, 1.0), (25, 12.0)):
        ref_s, ref_t = _wan22_reference(steps, shift)
        got_s, got_t = wan22_sampling_schedule(steps, shift)
        assert torch.equal(got_s, ref_s) and torch.equal(got_t, ref_t), (steps, shift)
    with pytest.raises(MirageInputError):
        wan22_sampling_schedule(0, 5.0)
    with pytest.raises(MirageInputError):
        wan22_sampling_schedule(40, 0.0)


def test_scheduler_steps_on_the_wan22_sigmas():
    """The diffusers scheduler holds exactly Wan2.2's float32 sigmas (any diffusers version:
    make_scheduler raises if a version rewrites them)."""
    for cfg in (SamplerConfig(), SamplerConfig(steps=50, flow_shift=3.0)):
        s = make_scheduler(cfg)
        ref_s, _ = _wan22_reference(cfg.steps, cfg.flow_shift)
        assert torch.equal(s.sigmas.to(torch.float32), ref_s)
        assert len(s.timesteps) == cfg.steps


@pytest.mark.parametrize("steps,shift", [(251, 5.0), (92, 12.0), (40, 5.0)])
def test_scheduler_walks_every_sigma_once_even_when_timesteps_repeat(steps, shift):
    """At 251 steps with shift 5 (92 with shift 12) the integer timesteps start 999, 999, ...;
    diffusers then located step 0 at the second 999, skipped sigma[1] and failed at the last
    step (``assert self.this_order > 0``). Each step must take the next sigma, in order."""
    s = make_scheduler(SamplerConfig(steps=steps, flow_shift=shift))
    ref_s, _ = _wan22_reference(steps, shift)
    x = torch.ones(1, 4, 1, 2, 2)
    seen = []
    for i, t in enumerate(s.timesteps):
        seen.append(float(s.sigmas[s.step_index if s.step_index is not None else 0]))
        x = s.step(torch.zeros_like(x), t, x, return_dict=False)[0]
        assert s.step_index == i + 1
    assert seen == [float(v) for v in ref_s[:-1]]
    if steps == 251:
        assert int(s.timesteps[0]) == int(s.timesteps[1]) == 999  # the case that broke


class _RecordingModel:
    """Stands in for MirageTransformer: records the timesteps, predicts flow = x (any)."""

    device = torch.device("cpu")

    def __init__(self):
        self.timesteps: list[float] = []

    def __call__(self, latents, timestep, labels, text, readout, mask, scale):
        self.timesteps.append(float(timestep))
        return 0.1 * latents


def test_denoise_chunk_gives_the_model_wan22s_integer_timesteps():
    model = _RecordingModel()
    clean = torch.zeros(1, 48, 2, 2, 2)
    x, _ = denoise_chunk(model, clean, [R, P, T], torch.zeros(1, 3, 8), seed=0)
    assert model.timesteps == [float(t) for t in WAN22_T40_SHIFT5]
    assert x.shape == (1, 48, 1, 2, 2) and torch.isfinite(x).all()


# ----------------------------------------------------------------------------- prompts
_PROMPTS = [
    "rock &amp; roll",
    "rock &amp;amp; roll",  # unescaped twice, as diffusers and Wan2.2 do
    "  a   room \n\t with a lamp ",
    "caf&eacute; &lt;night&gt; &quot;x&quot;",
    "tab\there&nbsp;nbsp",
]


def test_prompt_cleaning_is_the_wan_pipelines():
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    assert check_prompt("rock &amp; roll") == "rock & roll"
    assert check_prompt("rock &amp;amp; roll") == "rock & roll"
    assert check_prompt("  a   room \n") == "a room"
    for p in _PROMPTS:
        assert check_prompt(p) == prompt_clean(p) == clean_prompt(p), p
    for bad in ("", " &nbsp; ", None):  # &nbsp; unescapes to whitespace: empty after cleaning
        with pytest.raises(MirageInputError):
            check_prompt(bad)


def test_escaped_and_plain_prompts_tokenise_and_encode_alike():
    from transformers import UMT5Config, UMT5EncoderModel

    from mirage_core.generator.configs import TINY_TEXT_ENCODER_CONFIG
    from mirage_core.generator.text import build_tiny_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = PromptEncoder(build_tiny_tokenizer(), UMT5EncoderModel(
            UMT5Config(**TINY_TEXT_ENCODER_CONFIG)), max_tokens=32)
    a = enc.encode("rock &amp; roll")
    b = enc.encode("rock & roll")
    assert torch.equal(a, b)
    assert not torch.equal(a, enc.encode("rock and roll"))
    # training's text dropout: a prompt that is empty once cleaned encodes as "" (it used to
    # be refused, since the emptiness check came before the cleaning)
    empty = enc.encode("", allow_empty=True)
    assert torch.equal(enc.encode(" &nbsp; ", allow_empty=True), empty)
    with pytest.raises(MirageInputError):
        enc.encode(" &nbsp; ")
