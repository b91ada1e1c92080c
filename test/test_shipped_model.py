"""The shipped small model (mirage_core/weights/mirage-small-rooms, docs/model_card.md).

Skipped when the checkout carries no model there; they run against any directory put there
(e.g. `cp -r out/mirage-small-rooms mirage_core/weights/`).

It loads through the real loading path, its first chunk on a held-out room is deterministic
for a seed and far from noise, and weights from another code version or a corrupt file are
refused with a message that says how to get them back.

The floor (chunk-0 PSNR on held-out room 0, seed 0, 40 steps) comes from what was measured
(docs/model_card.md, "Tests"): the shipped model SHIPPED_DB, random small weights of the same
architecture and codec RANDOM_DB. It sits halfway between them, so it is generous both ways:
the model may lose half its margin over random weights before the test fails, and random
weights would have to gain as much to pass (checked here too, so the test shows the gap it
relies on). These are low PSNRs: the model's frames are not recognisable rooms yet.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mirage_core.codecs import PCAVideoCodec
from mirage_core.errors import WeightsNotFoundError
from mirage_core.generator.loading import (
    MODEL_CODE_VERSION,
    TrainedWeightsMismatchError,
    default_weights_dir,
    load_models,
    weights_profile,
)

#: chunk-0 PSNR (dB) against ground truth on held-out room 0, seed 0, measured with the
#: shipped model and with random small weights (docs/model_card.md, "Tests")
SHIPPED_DB, RANDOM_DB = 16.04, 12.30
#: the floor a shipped model must exceed and random weights must stay under: halfway
FIRST_CHUNK_FLOOR_DB = (SHIPPED_DB + RANDOM_DB) / 2


@pytest.fixture(scope="module")
def shipped():
    root = default_weights_dir()
    if not (root / "mirage_tiny.json").is_file():
        pytest.skip(f"no trained model ships in {root} yet (docs/model_card.md)")
    return root


@pytest.fixture(scope="module")
def case():
    from mirage_core.eval.heldout import heldout_case

    return heldout_case(0, (64, 96))


def _first_chunk(models, case, seed=0):
    from mirage_core.rollout.chunked import MirageRollout, RolloutConfig

    depth, masks = case.providers()
    ro = MirageRollout(models, depth, masks, RolloutConfig.for_models(
        models, 40, num_chunks=1, seed=seed, progress=False))
    prof = weights_profile(default_weights_dir())
    (ch,) = list(ro.run(case.image, case.trajectory, prompt=prof["prompt"]))
    return ch


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return 10.0 * np.log10(1.0 / mse)


def test_shipped_model_loads_through_the_real_path(shipped):
    prof = weights_profile(shipped)
    assert prof["trained"] and prof["size"] == "small"
    assert prof["image_hw"] == (64, 96) and prof["chunk_latent_frames"] == 9
    assert prof["readout_hole_fill"] == 1  # trained on Eq. 5's readouts, runs with one fill pass
    marker = json.loads((shipped / "mirage_tiny.json").read_text())
    assert marker["code_version"] == MODEL_CODE_VERSION
    models = load_models(shipped)
    assert models.source.startswith("trained small model")
    assert models.side_branch_source.endswith("mirage_side_branch.safetensors")
    assert isinstance(models.vae, PCAVideoCodec) and models.vae.stride == 8


def test_first_chunk_is_deterministic_and_far_from_noise(shipped, case):
    models = load_models(shipped)
    a = _first_chunk(models, case, seed=0)
    b = _first_chunk(models, case, seed=0)
    assert np.array_equal(a.frames, b.frames)
    lo, hi = a.plan.rgb_frames
    got = _psnr(a.frames, case.gt[lo:hi + 1])
    assert got > FIRST_CHUNK_FLOOR_DB, got


def test_random_small_weights_are_noise_on_the_same_frames(shipped, case, tmp_path):
    """The floor above means something: untrained weights of the same architecture and
    codec stay far below it."""
    from mirage_core.generator.loading import build_small_weights

    rnd = build_small_weights(tmp_path / "rnd", seed=0, side_branch="zero",
                              codec=str(shipped / "vae"))
    marker = json.loads((rnd / "mirage_tiny.json").read_text())
    marker.update(chunk_latent_frames=9, flow_shift=3.0)
    (rnd / "mirage_tiny.json").write_text(json.dumps(marker))
    ch = _first_chunk(load_models(rnd), case)
    lo, hi = ch.plan.rgb_frames
    assert _psnr(ch.frames, case.gt[lo:hi + 1]) < FIRST_CHUNK_FLOOR_DB


def test_weights_of_another_code_version_are_refused(shipped, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(shipped, copy)
    marker = json.loads((copy / "mirage_tiny.json").read_text())
    marker["code_version"] = MODEL_CODE_VERSION + 1
    (copy / "mirage_tiny.json").write_text(json.dumps(marker))
    with pytest.raises(TrainedWeightsMismatchError) as e:
        load_models(copy)
    msg = str(e.value)
    assert f"version {MODEL_CODE_VERSION + 1}" in msg and f"version {MODEL_CODE_VERSION}" in msg
    assert "git checkout -- mirage_core/weights" in msg


@pytest.mark.parametrize("part", ["transformer", "vae"])
def test_a_corrupt_weights_file_says_how_to_rebuild(shipped, tmp_path, part):
    copy = tmp_path / "bad"
    shutil.copytree(shipped, copy)
    f = next((copy / part).glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[:1000])  # truncated
    with pytest.raises(WeightsNotFoundError, match="make train-small"):
        load_models(copy)
