"""Loading the generator from local files, prompts, chunk planning and input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError
from mirage_core.generator.loading import (
    SIDE_BRANCH_FILENAME,
    build_tiny_weights,
    check_weights_dir,
    load_models,
)
from mirage_core.generator.side_branch import SideBranchMismatchError
from mirage_core.generator.text import (
    check_prompt,
    load_prompt_embeddings,
    save_prompt_embeddings,
)
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.rollout.inputs import check_camera, check_image, load_image
from mirage_core.rollout.schedule import plan_chunks, pose_frame_of_latent
from mirage_core.trajectory import make_trajectory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_weights(tmp_path_factory.mktemp("tiny") / "w")


def test_tiny_weights_load_through_the_real_loader(tiny_dir):
    m = load_models(tiny_dir, device="cpu")
    assert "RANDOM tiny" in m.source and m.side_branch_source.endswith(SIDE_BRANCH_FILENAME)
    counts = m.parameter_counts()
    assert all(counts[k] > 0 for k in ("transformer", "side_branch", "vae", "text_encoder"))
    assert m.transformer.side_branch.config.layers == (0, 4)
    assert not m.transformer.side_branch.is_zero()
    states = m.encode_prompt("a small room")
    assert states.shape == (1, 512, m.text_dim)
    n = int((states.abs().sum(-1) > 0).sum())
    assert 0 < n < 512  # real tokens, then zeroed padding
    zero = load_models(tiny_dir, side_branch="zero", device="cpu", load_text_encoder=False)
    assert zero.side_branch_source == "zero" and zero.transformer.side_branch.is_zero()
    assert zero.prompt_encoder is None
    with pytest.raises(MirageInputError, match="precomputed"):
        zero.encode_prompt("x")


def test_build_tiny_weights_is_idempotent(tiny_dir):
    before = (tiny_dir / SIDE_BRANCH_FILENAME).stat().st_mtime_ns
    build_tiny_weights(tiny_dir)
    assert (tiny_dir / SIDE_BRANCH_FILENAME).stat().st_mtime_ns == before


def test_missing_weights_name_the_directory_and_how_to_get_them(tmp_path, tiny_dir):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        check_weights_dir(tmp_path / "absent")
    (tmp_path / "w" / "transformer").mkdir(parents=True)
    with pytest.raises(WeightsNotFoundError) as e:
        check_weights_dir(tmp_path / "w")
    msg = str(e.value)
    assert "vae/" in msg and "transformer/config.json" in msg and str(tmp_path / "w") in msg
    with pytest.raises(WeightsNotFoundError, match="--side-branch zero"):
        load_models(tiny_dir, side_branch=tmp_path / "none.safetensors", device="cpu")


def test_side_branch_for_another_backbone_is_rejected(tmp_path, tiny_dir):
    import shutil

    from diffusers import WanTransformer3DModel

    from mirage_core.generator.configs import transformer_config
    from mirage_core.generator.side_branch import MemorySideBranch, SideBranchConfig

    cfg = transformer_config("tiny")
    cfg["num_layers"] = 12  # -> side layers (0, 4, 8): does not fit the 8-block backbone
    other = MemorySideBranch(SideBranchConfig.for_backbone(WanTransformer3DModel(**cfg)))
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(SideBranchMismatchError, match="layers"):
        load_models(tiny_dir, side_branch=tmp_path / "other.safetensors", device="cpu")
    # A transformer that is not TI2V (16 latent channels, Wan2.1) is refused by name.
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    conf = json.loads((bad / "transformer" / "config.json").read_text())
    conf["in_channels"] = conf["out_channels"] = 16
    (bad / "transformer" / "config.json").write_text(json.dumps(conf))
    with pytest.raises((MirageInputError, RuntimeError, ValueError)):
        load_models(bad, side_branch="zero", device="cpu")


def test_prompts_and_precomputed_embeddings(tmp_path):
    assert check_prompt("  a   room \n") == "a room"
    for bad in ("", "   \n", None):
        with pytest.raises(MirageInputError):
            check_prompt(bad)
    states = torch.randn(1, 512, 32)
    save_prompt_embeddings(tmp_path / "p.safetensors", states, "a room")
    torch.testing.assert_close(load_prompt_embeddings(tmp_path / "p.safetensors", dim=32), states)
    with pytest.raises(ShapeError, match="text_dim"):
        load_prompt_embeddings(tmp_path / "p.safetensors", dim=4096)
    with pytest.raises(MirageInputError, match="does not exist"):
        load_prompt_embeddings(tmp_path / "q.safetensors")


def test_chunk_plan_and_pose_rule():
    plans = plan_chunks(1 + 32 * 3)
    assert [p.latent_indices for p in plans] == [
        tuple(range(1, 9)), tuple(range(9, 17)), tuple(range(17, 25))
    ]
    assert plans[1].pose_frames == (36, 40, 44, 48, 52, 56, 60, 64)
    assert plans[2].rgb_frames == (65, 96)
    assert pose_frame_of_latent(0) == 0 and pose_frame_of_latent(5) == 20
    assert len(plan_chunks(100)) == 3  # the 3 extra poses are unused
    with pytest.raises(MirageInputError, match="need 33"):
        plan_chunks(32)
    with pytest.raises(MirageInputError, match="need 97"):
        plan_chunks(70, num_chunks=3)


def test_image_checks(tmp_path):
    from PIL import Image

    ok = np.zeros((64, 96, 3), np.uint8)
    assert check_image(ok).shape == (3, 64, 96)
    with pytest.raises(ShapeError, match="multiples of 32"):
        check_image(np.zeros((60, 96, 3), np.uint8))
    with pytest.raises(ShapeError, match=r"\[H, W, 3\]"):
        check_image(np.zeros((64, 96), np.uint8))
    with pytest.raises(MirageInputError, match=r"\[0, 1\]"):
        check_image(torch.full((3, 64, 96), 2.0))
    Image.fromarray(np.zeros((64, 96, 4), np.uint8), "RGBA").save(tmp_path / "a.png")
    with pytest.raises(MirageInputError, match="mode 'RGBA'"):
        load_image(tmp_path / "a.png")
    Image.fromarray(np.zeros((64, 96), np.uint8), "L").save(tmp_path / "g.png")
    with pytest.raises(MirageInputError, match="mode 'L'"):
        load_image(tmp_path / "g.png")
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(MirageInputError, match="cannot read"):
        load_image(tmp_path / "x.png")
    Image.fromarray(ok).save(tmp_path / "ok.png")
    assert torch.equal(load_image(tmp_path / "ok.png"), check_image(ok))


def test_camera_checks():
    K = intrinsics_from_fov(96, 64, 60.0)
    traj = make_trajectory("pan_left", 5, K=K, image_hw=(64, 96))
    torch.testing.assert_close(check_camera(traj, (64, 96)), K)
    with pytest.raises(ShapeError, match="64x96 images but the image is 128x192"):
        check_camera(traj, (128, 192))
    far = K.clone()
    far[0, 2] = 500.0
    with pytest.raises(MirageInputError, match="principal point"):
        check_camera(traj, (64, 96), far)
    with pytest.raises(MirageInputError, match="no intrinsics"):
        check_camera(make_trajectory("pan_left", 5), (64, 96))
