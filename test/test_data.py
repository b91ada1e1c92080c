"""Training-data preparation: clip store, synthetic clips, real-footage preparation, validation.

Uses the tiny random-weight Wan2.2 VAE (48 channels, stride 16) at 32x48 pixels, 9 frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_core.data.clip import Clip
from mirage_core.data.lmdb_store import ClipStore, ClipStoreError, StoreMeta
from mirage_core.data.prepare import (
    PrepareConfig,
    PrepareError,
    ShortSequenceWarning,
    main_prepare,
    prepare_realestate10k,
    prepare_sequence,
    resize_crop_plan,
)
from mirage_core.data.synth import SynthConfig, main_synth, random_trajectory, synth_clips
from mirage_core.data.validate import format_report, main_validate, validate_store
from mirage_core.geometry import check_se3, intrinsics_matrix, resize_intrinsics
from mirage_core.trajectory import make_trajectory
from mirage_core.trajectory_io import write_trajectory

pytest.importorskip("lmdb")

pytestmark = pytest.mark.filterwarnings("ignore:ConstantDepth")
HW = (32, 48)


@pytest.fixture(scope="module")
def vae():
    from mirage_core.codecs import WanVAECodec

    return WanVAECodec.from_config("tiny", seed=0)


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory, vae):
    pytest.importorskip("pybullet")
    path = tmp_path_factory.mktemp("synth") / "store"
    cfg = SynthConfig(n_clips=2, frames=9, hw=HW, seed=3, progress=False)
    assert synth_clips(path, vae, cfg) == (2, 0)
    return path, cfg


def _clip(key="a/0", L=3, C=48, hw=HW) -> Clip:
    g = torch.Generator().manual_seed(0)
    H, W = hw
    return Clip(latents=torch.randn(L, C, H // 16, W // 16, generator=g),
                depth=torch.rand(L, H, W, generator=g) + 0.5,
                mask=torch.rand(L, H, W, generator=g) > 0.8,
                T_world_cam=torch.eye(4, dtype=torch.float64).repeat(L, 1, 1),
                K=intrinsics_matrix(40.0, 40.0, W / 2, H / 2), image_hw=hw, prompt="a room",
                prompt_embeds=torch.randn(1, 4, 8, generator=g), key=key)


# --------------------------------------------------------------------------- store


def test_store_roundtrip_meta_and_skip(tmp_path):
    clip = _clip()
    with ClipStore(tmp_path / "s", readonly=False, map_size=1 << 14) as st:  # tiny map: grows
        st.init_meta(StoreMeta(latent_channels=48, image_hw=HW, vae_source="test"))
        assert st.put(clip) is True
        assert st.put(clip) is False  # already present: skipped
        with pytest.raises(ClipStoreError, match="channels"):
            st.put(_clip(key="a/1", C=16))
        with pytest.raises(ClipStoreError, match="already holds"):
            st.init_meta(StoreMeta(latent_channels=48, image_hw=(64, 64), vae_source="x"))
        with pytest.raises(ClipStoreError, match="__"):
            st.put(_clip(key="__meta__"))
    with ClipStore(tmp_path / "s") as st:
        assert st.keys() == ["a/0"] and len(st) == 1 and "a/0" in st
        got = st.get("a/0")
        assert st.meta.latent_hw == (2, 3)
        with pytest.raises(KeyError):
            st.get("nope")
        with pytest.raises(ClipStoreError, match="read-only"):
            st.put(_clip(key="a/2"))
    for f in ("latents", "depth", "mask", "T_world_cam", "K", "prompt_embeds"):
        assert torch.equal(getattr(got, f), getattr(clip, f)), f
    assert (got.key, got.prompt, got.image_hw) == (clip.key, clip.prompt, clip.image_hw)


def test_open_missing_store_is_clear(tmp_path):
    with pytest.raises(ClipStoreError, match="not a clip store"):
        ClipStore(tmp_path / "none")


# --------------------------------------------------------------------------- synth + validate


def test_random_trajectory_is_continuous_se3():
    T = random_trajectory(np.random.default_rng(1), 33, max_segments=3)
    assert T.shape == (33, 4, 4)
    check_se3(T)
    assert torch.equal(T[0], torch.eye(4, dtype=torch.float64))
    steps = (T[1:, :3, 3] - T[:-1, :3, 3]).norm(dim=-1)
    assert float(steps.max()) < 0.2  # no jumps between segments


def test_synth_validate_get_and_resume(synth_store, vae):
    path, cfg = synth_store
    rep = validate_store(path)
    assert rep["ok"], format_report(rep)
    assert rep["keys"] == 2 and rep["latent_frames"] == {3: 2}
    assert rep["meta"]["latent_channels"] == 48 and "RANDOM" in rep["meta"]["vae_source"]
    assert 0.3 < rep["depth_positive_fraction"] <= 1.0
    with ClipStore(path) as st:
        clip = st.get("synth/3/000001")
    assert clip.latents.shape == (3, 48, 2, 3) and clip.depth.shape == (3, *HW)
    assert torch.equal(clip.T_world_cam[0], torch.eye(4, dtype=torch.float64))
    # per-frame key-frame encodings (later-chunk training); frame 0's equals video latent 0
    assert clip.frame_latents is not None and clip.frame_latents.shape == clip.latents.shape
    torch.testing.assert_close(clip.frame_latents[0], clip.latents[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(clip.frame_latents[1:], clip.latents[1:], atol=1e-3)
    # deterministic: the same (seed, index) gives the same clip as what was stored
    from mirage_core.data.synth import synth_clip

    again = synth_clip(vae, cfg, 1)
    assert torch.equal(again.depth, clip.depth) and torch.equal(again.mask, clip.mask)
    assert torch.allclose(again.latents, clip.latents)
    # resume: existing keys skipped, only new ones written
    cfg3 = SynthConfig(n_clips=3, frames=9, hw=HW, seed=3, progress=False)
    assert synth_clips(path, vae, cfg3) == (1, 2)
    assert main_validate([str(path)]) == 0


def test_validate_reports_corrupt_record(tmp_path, vae):
    import lmdb

    path = tmp_path / "s"
    with ClipStore(path, readonly=False) as st:
        st.init_meta(StoreMeta(latent_channels=48, image_hw=HW, vae_source="test"))
        st.put(_clip("a/0"))
        st.put(_clip("a/1"))
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(b"a/1"))
        raw[-10] ^= 0xFF
        txn.put(b"a/1", bytes(raw))
    env.close()
    rep = validate_store(path)
    assert not rep["ok"] and rep["keys"] == 2
    assert any("a/1" in e and "sha256" in e for e in rep["errors"]), rep["errors"]
    assert main_validate([str(path)]) == 1
    with ClipStore(path) as st, pytest.raises(ClipStoreError, match="sha256"):
        st.get("a/1")


def test_validate_flags_bad_pose(tmp_path):
    clip = _clip("a/0")
    clip.T_world_cam[1, :3, :3] *= 2.0  # not a rotation
    with ClipStore(tmp_path / "s", readonly=False) as st:
        st.init_meta(StoreMeta(latent_channels=48, image_hw=HW, vae_source="test"))
        st.put(clip)
    rep = validate_store(tmp_path / "s")
    assert not rep["ok"] and any("T_world_cam[1]" in e for e in rep["errors"]), rep["errors"]


def test_main_synth_cli(tmp_path, capsys):
    pytest.importorskip("pybullet")
    out = tmp_path / "cli"
    args = ["--out", str(out), "--vae", "tiny", "--n-clips", "1", "--frames", "5",
            "--height", "32", "--width", "48", "--no-progress"]
    assert main_synth(args) == 0
    assert main_synth(args) == 0
    assert "already present 1" in capsys.readouterr().out


# --------------------------------------------------------------------------- prepare


def _sequence(root, n=12, hw=(40, 56), fmt="tum"):
    """``n`` PNG frames of ``hw`` + a push-in trajectory file; returns (frames_dir, traj)."""
    from PIL import Image

    frames = root / "seq"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(
            frames / f"{i}.png")
    K = intrinsics_matrix(50.0, 50.0, hw[1] / 2, hw[0] / 2)
    traj = make_trajectory("push_in", num_frames=n, K=K, image_hw=hw)
    path = root / ("cams.txt" if fmt != "nerfstudio" else "transforms.json")
    write_trajectory(traj, path, fmt)
    return frames, path


def test_size_rule_and_K():
    (rh, rw), (top, left), out = resize_crop_plan((360, 640), (64, 96))
    assert out == (64, 96) and rh == 64 and rw == round(640 * 64 / 360) and top == 0
    assert left == (rw - 96) // 2
    assert resize_crop_plan((40, 56), None) == ((40, 56), (4, 4), (32, 48))
    K = resize_intrinsics(intrinsics_matrix(50.0, 50.0, 28.0, 20.0), (40, 56), (40, 56), (4, 4))
    assert K[0, 2] == 24.0 and K[1, 2] == 16.0  # centred principal point stays centred


def test_prepare_tum_constant_depth_and_resume(tmp_path, vae):
    frames, traj = _sequence(tmp_path)
    cfg = PrepareConfig(frames=5, depth="constant:2", fov_y_deg=60.0, progress=False)
    with ClipStore(tmp_path / "out", readonly=False) as st:
        rep = prepare_sequence(st, frames, traj, vae, cfg)
        assert (rep.written, rep.skipped_existing) == (2, 0)  # starts 0, 5 (10 + 4 > 11)
        rep = prepare_sequence(st, frames, traj, vae, cfg)
        assert (rep.written, rep.skipped_existing) == (0, 2)
        clip = st.get("seq/000005")
    assert clip.image_hw == (32, 48) and clip.latents.shape == (2, 48, 2, 3)
    assert clip.frame_latents is not None and clip.frame_latents.shape == (2, 48, 2, 3)
    torch.testing.assert_close(clip.frame_latents[0], clip.latents[0], rtol=1e-4, atol=1e-4)
    assert torch.all(clip.depth == 2.0) and not clip.mask.any()
    assert torch.equal(clip.T_world_cam[0], torch.eye(4, dtype=torch.float64))
    # push_in 0.04 m/frame: latent 1 = clip frame 4 is 0.16 m ahead of clip frame 0
    assert torch.allclose(clip.T_world_cam[1, :3, 3],
                          torch.tensor([0.0, 0.0, 0.16], dtype=torch.float64))
    assert validate_store(tmp_path / "out")["ok"]


def test_prepare_given_depth_resized(tmp_path, vae):
    frames, traj = _sequence(tmp_path, n=5, fmt="kitti")
    depth = np.arange(1, 6, dtype=np.float32)[:, None, None] * np.ones((5, 40, 56), np.float32)
    np.save(tmp_path / "d.npy", depth)
    cfg = PrepareConfig(frames=5, size=(64, 96), depth=f"given:{tmp_path / 'd.npy'}",
                        fov_y_deg=60.0, progress=False)
    with ClipStore(tmp_path / "out", readonly=False) as st:
        assert prepare_sequence(st, frames, traj, vae, cfg).written == 1
        clip = st.get("seq/000000")
    assert clip.image_hw == (64, 96)
    assert torch.all(clip.depth[0] == 1.0) and torch.all(clip.depth[1] == 5.0)  # frames 0, 4


def test_prepare_realestate10k_layout(tmp_path, vae):
    root = tmp_path / "re10k"
    frames, cams = _sequence(root / "tmp", n=9, fmt="realestate10k")
    (root / "cameras").mkdir()
    (root / "frames").mkdir()
    cams.rename(root / "cameras" / "abc.txt")
    frames.rename(root / "frames" / "abc")
    (root / "cameras" / "nofr.txt").write_text((root / "cameras" / "abc.txt").read_text())
    cfg = PrepareConfig(frames=9, depth="constant:3", errors="skip", progress=False)
    with ClipStore(tmp_path / "out", readonly=False) as st:
        rep = prepare_realestate10k(st, root, vae, cfg)
        assert rep.written == 1 and len(rep.failed) == 1 and "nofr" in rep.failed[0]
        clip = st.get("re10k/abc/000000")
    assert torch.allclose(clip.K, intrinsics_matrix(50.0, 50.0, 24.0, 16.0).to(torch.float64))


def test_prepare_bad_inputs(tmp_path, vae):
    frames, traj = _sequence(tmp_path, n=9)
    cfg = PrepareConfig(frames=5, depth="constant:2", fov_y_deg=60.0, progress=False)
    out = tmp_path / "out"
    # missing frame inside the second clip: first clip is kept, error names clip and frame
    (frames / "6.png").unlink()
    (frames / "extra").mkdir()
    with ClipStore(out, readonly=False) as st:
        with pytest.raises(PrepareError, match=r"8 frames .* 9 poses"):
            prepare_sequence(st, frames, traj, vae, cfg)
    from PIL import Image

    Image.new("RGB", (56, 40)).save(frames / "6.png")
    (frames / "3.png").write_bytes(b"not a png")
    with ClipStore(out, readonly=False) as st:
        with pytest.raises(PrepareError, match=r"clip seq/000000: frame 3 .* unreadable"):
            prepare_sequence(st, frames, traj, vae, cfg)
        # short sequence: warned and counted, no crash
        long_cfg = PrepareConfig(frames=33, depth="constant:2", fov_y_deg=60.0, progress=False)
        with pytest.warns(ShortSequenceWarning, match="9 frames, a clip needs 33"):
            rep = prepare_sequence(st, frames, traj, vae, long_cfg)
        assert rep.short_sequences == 1 and rep.written == 0
        # malformed camera file: error names the sequence and the file's line
        bad = tmp_path / "bad.txt"
        bad.write_text("https://x\n" + "0 " * 18 + "\n")
        with pytest.raises(PrepareError, match=r"sequence seq: camera file .*line 2.*19"):
            prepare_sequence(st, frames, bad, vae, cfg, trajectory_format="realestate10k")
        # no intrinsics and no fov
        with pytest.raises(PrepareError, match="fov"):
            prepare_sequence(st, frames, traj, vae, PrepareConfig(frames=5, progress=False))
    with pytest.raises(Exception, match="4k\\+1"):
        PrepareConfig(frames=6)


def test_main_prepare_cli(tmp_path, capsys):
    frames, traj = _sequence(tmp_path, n=5)
    out = tmp_path / "out"
    args = ["--frames-dir", str(frames), "--trajectory", str(traj), "--out", str(out),
            "--vae", "tiny", "--frames", "5", "--depth", "constant:2", "--fov-y", "60",
            "--no-progress"]
    assert main_prepare(args) == 0
    assert "written 1" in capsys.readouterr().out
    assert main_prepare([*args[:-1], "--frames", "9", "--no-progress"]) == 0  # short: warned
    (frames / "2.png").write_bytes(b"")
    assert main_prepare([*args, "--prefix", "other"]) == 2
    assert "frame 2" in capsys.readouterr().out
