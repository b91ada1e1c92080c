"""The benchmark's analytic scene, and the `mirage` command line."""

import json
import subprocess
import sys

import pytest
import torch

from mirage_core.bench.memory_bench import ROOM_MAX, BenchConfig, room_depth, run_memory_bench
from mirage_core.cli import build_parser
from mirage_core.geometry import backproject, intrinsics_from_fov, look_at


def test_room_depth_hits_the_walls():
    K = intrinsics_from_fov(64, 48, 60.0)
    T_world_cam = look_at([0.5, 0.2, 0.0], [1.0, 0.3, 5.0])
    d = room_depth(T_world_cam, K, 48, 64)
    assert torch.isfinite(d).all() and (d > 0).all()
    pts = backproject(d, K, T_world_cam).reshape(-1, 3).double()
    lo, hi = torch.tensor([-4.0, -1.6, -3.0]), torch.tensor(ROOM_MAX)
    on_wall = ((pts - lo).abs() < 1e-3) | ((pts - hi).abs() < 1e-3)
    assert on_wall.any(dim=1).all()  # every lifted cell lies on a face of the box


def test_cli_parses_and_rejects():
    args = build_parser().parse_args(["bench", "memory", "--quick", "--json", "x.json"])
    assert args.quick and args.json == "x.json"
    r = subprocess.run(
        [sys.executable, "-m", "mirage_core.cli", "frobnicate"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.slow
def test_quick_bench_writes_every_key(tmp_path):
    out = tmp_path / "bench.json"
    run_memory_bench(BenchConfig.make(quick=True), json_path=out, log=lambda *_: None)
    res = json.loads(out.read_text())
    for key in (
        "readout_ms_per_view",
        "update_ms_per_frame",
        "rgb_raster_ms_per_view",
        "rgb_encode_ms_per_frame",
        "speedup_vs_rgb",
        "latent_cache_bytes",
        "rgb_cache_bytes",
        "memory_ratio_vs_rgb",
        "growth_mib_per_chunk",
    ):
        assert key in res
    assert set(res["growth_mib_per_chunk"]) == {"union", "fill_empty", "voxel"}
    assert res["revisit_growth_mib_per_chunk"]["fill_empty"] == 0.0
    assert res["memory_ratio_vs_rgb"] > 30


def test_cli_delegates_data_eval_train_commands(tmp_path, capsys):
    from mirage_core.cli import DELEGATED, main

    assert main(["data"]) == 0 and "synth" in capsys.readouterr().out
    assert main(["eval", "bogus"]) == 2
    assert main(["data", "validate", str(tmp_path / "missing")]) == 1  # a broken store
    import importlib

    for cmds in DELEGATED.values():  # every wired command exists
        for module, func, _h in cmds.values():
            assert callable(getattr(importlib.import_module(module), func))
