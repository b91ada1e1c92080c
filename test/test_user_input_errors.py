"""Bad user input is one clear error, early: devices, image paths, trajectories and prompts
checked before any model loads, a rerun into the same output directory, and the full-size
benchmark on a machine that cannot hold it (found by a new user's run of the README)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_core.devices import compute_device
from mirage_core.errors import MirageInputError


# ----------------------------------------------------------------------------- devices
def test_compute_device_defaults_and_accepts_the_cpu():
    assert compute_device(None) == compute_device("") == torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    assert compute_device("cpu") == compute_device(" cpu ") == torch.device("cpu")
    assert compute_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad, says", [("foo", "unknown device"), ("cuda:x", "unknown device"),
                                       ("mps", "not supported"), ("meta", "not supported")])
def test_compute_device_refuses_what_torch_cannot_run_here(bad, says):
    with pytest.raises(MirageInputError, match=says):
        compute_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only torch")
def test_cuda_on_a_cpu_only_torch_is_refused_by_every_entry_point(tmp_path):
    from mirage_core.cli import main
    from mirage_core.generator.loading import load_models
    from mirage_core.rollout.job import RolloutJobConfig

    with pytest.raises(MirageInputError, match="sees no CUDA GPU"):
        compute_device("cuda")
    with pytest.raises(MirageInputError, match="sees no CUDA GPU"):
        RolloutJobConfig(tiny=True, device="cuda")
    with pytest.raises(MirageInputError, match="sees no CUDA GPU"):
        RolloutJobConfig(tiny=True, text_encoder_device="cuda:1")
    with pytest.raises(MirageInputError, match="sees no CUDA GPU"):
        load_models(tmp_path, device="cuda")
    # the command line: a one-line error and exit status 2, no traceback
    assert main(["rollout", "--tiny", "--device", "cuda", "--out", str(tmp_path)]) == 2


def test_cli_device_typo_is_a_clean_error(tmp_path, capsys):
    from mirage_core.cli import main

    assert main(["rollout", "--tiny", "--device", "foo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'foo'" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- inputs
def test_an_image_path_that_is_a_directory_says_so(tmp_path):
    from mirage_core.rollout.inputs import load_image

    with pytest.raises(MirageInputError, match="is a directory, not an image file"):
        load_image(tmp_path)
    with pytest.raises(MirageInputError, match="does not exist"):
        load_image(tmp_path / "none.png")


def test_trajectory_length_and_prompt_are_refused_before_the_models_load(tmp_path,
                                                                         monkeypatch):
    """README: every input is checked before anything heavy is loaded."""
    from mirage_core.rollout import job
    from mirage_core.rollout.job import RolloutJobConfig, run_rollout_job

    def no_load(*a, **k):
        raise AssertionError("the models were loaded before the inputs were checked")

    monkeypatch.setattr(job, "load_models", no_load)
    monkeypatch.setattr(job, "build_tiny_weights", no_load)
    tum = tmp_path / "short.txt"  # 10 poses: one chunk needs 33
    tum.write_text("".join(f"{i / 10:.1f} {0.01 * i} 0 0 0 0 0 1\n" for i in range(10)))
    base = dict(tiny=True, height=64, width=96, out=str(tmp_path / "o"), progress=False,
                video=False)
    with pytest.raises(MirageInputError, match="need 33"):
        run_rollout_job(RolloutJobConfig(trajectory=str(tum), **base))
    with pytest.raises(MirageInputError, match="prompt is empty"):
        run_rollout_job(RolloutJobConfig(prompt="  \n ", chunks=1, **base))


# ----------------------------------------------------------------------------- outputs
def test_a_rerun_into_the_same_directory_replaces_the_earlier_rollout(tmp_path):
    from mirage_core.rollout.outputs import RolloutWriter

    out = tmp_path / "roll"
    (out / "frames").mkdir(parents=True)
    for i in range(65):  # an earlier, longer rollout
        (out / "frames" / f"{i:05d}.png").write_bytes(b"old")
    for name in ("readout.mp4", "video.mp4", "cameras.json", "memory_stats.json"):
        (out / name).write_bytes(b"old")
    (out / "notes.txt").write_text("mine")  # not the rollout's: kept
    (out / "frames" / "cover.png").write_bytes(b"mine")
    w = RolloutWriter(out, fps=10.0, K=torch.eye(3), image_hw=(32, 48), meta={}, video=False)
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    w.add_frames(0, frames, torch.eye(4).repeat(5, 1, 1).double(), torch.arange(5.0))
    w.flush()
    w.close()
    names = sorted(p.name for p in (out / "frames").iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "00003.png", "00004.png",
                     "cover.png"]
    assert not (out / "readout.mp4").exists() and not (out / "video.mp4").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "cameras.json").read_bytes() != b"old"


# ----------------------------------------------------------------------------- benchmark
def test_full_size_bench_on_a_cpu_without_the_ram_is_refused(monkeypatch, tmp_path):
    from mirage_core.bench import generator_bench as gb

    monkeypatch.setattr(gb, "FULL_CPU_RAM_BYTES", 2**62)  # more than any machine has
    loaded = []
    monkeypatch.setattr(gb, "random_models", lambda *a, **k: loaded.append(1))
    with pytest.raises(MirageInputError, match="--size full on the CPU needs more than"):
        gb.run_generator_bench(gb.GeneratorBenchConfig(size="full", device="cpu",
                                                       json_path=str(tmp_path / "b.json")))
    assert loaded == []
