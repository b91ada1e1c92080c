"""Launch parameters that follow from the generator's weights (mirage_ros.launch_specs.
model_params): the memory's stride and the simulated camera's size come from the model's
marker and codec files, so `mirage launch sim_rollout weights:=DIR` runs a small model without
hand-set node parameters; explicit arguments still win. No ROS needed."""

from __future__ import annotations

import json

import pytest

from mirage_core.codecs import (
    PCA_CODEC_MARKER,
    SMALL_VAE_MARKER,
    codec_stride,
)
from mirage_core.errors import MirageInputError
from mirage_core.generator import loading
from mirage_ros.launch_specs import LAUNCHES, model_params
from mirage_ros.launcher import overrides_yaml, parse_launch_args


def _small_dir(root, stride=8, hw=(64, 96)):
    """A weights directory's marker and codec marker only: what model_params reads."""
    (root / "vae").mkdir(parents=True)
    (root / "mirage_tiny.json").write_text(json.dumps(
        {"tiny": True, "size": "small", "image_hw": list(hw), "trained": {"steps": 1}}))
    (root / "vae" / PCA_CODEC_MARKER).write_text(json.dumps({"codec": "pca", "stride": stride}))
    return root


def test_codec_stride_reads_each_codec_kind(tmp_path):
    pca = _small_dir(tmp_path / "pca", stride=8)
    assert codec_stride(pca) == 8 and codec_stride(pca / "vae") == 8
    small = tmp_path / "small_vae"
    small.mkdir()
    (small / SMALL_VAE_MARKER).write_text("{}")
    assert codec_stride(small) == 8
    tiny = loading.build_tiny_weights(tmp_path / "tiny")  # the tiny Wan2.2 VAE: stride 16
    assert codec_stride(tiny) == 16
    with pytest.raises(MirageInputError, match="no codec"):
        codec_stride(tmp_path / "empty")


def test_small_model_sets_memory_stride_and_camera_size(tmp_path):
    w = _small_dir(tmp_path / "w")
    spec = LAUNCHES["sim_rollout"]
    got = model_params(spec, parse_launch_args(spec, [f"weights:={w}"]))
    assert got == {"memory": {"stride": 8, "hole_fill": 0},
                   "sim_camera": {"width": 96, "height": 64}}
    # bag replay has no simulated camera: the memory's stride only
    assert model_params(LAUNCHES["bag_replay"], {"weights": str(w)}) == {
        "memory": {"stride": 8, "hole_fill": 0}}


def test_explicit_node_params_win_over_the_model(tmp_path):
    w = _small_dir(tmp_path / "w")
    spec = LAUNCHES["sim_rollout"]
    v = parse_launch_args(spec, [f"weights:={w}", "memory.stride:=16", "sim_camera.width:=128"])
    y = overrides_yaml(spec, v)
    assert y["/**/memory"]["ros__parameters"]["stride"] == 16
    cam = y["/**/sim_camera"]["ros__parameters"]
    assert cam["width"] == 128 and cam["height"] == 64  # the unset one still follows the model
    assert y["/**/generator"]["ros__parameters"]["weights"] == str(w)


def test_nothing_derived_for_tiny_or_bare_weights_bad_ones_refused(tmp_path, monkeypatch):
    spec = LAUNCHES["sim_rollout"]
    assert model_params(spec, parse_launch_args(spec, ["tiny:=true"])) == {}
    # a missing directory (or a file): refused before any node starts
    for not_a_dir in (tmp_path / "missing", tmp_path / "file.txt"):
        if not_a_dir.name == "file.txt":
            not_a_dir.write_text("x")
        with pytest.raises(MirageInputError, match="is not a directory"):
            model_params(spec, {"weights": str(not_a_dir), "tiny": False})
    # a marker without codec files: the camera size is known, the stride is not (the
    # generator's load says what is missing)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "mirage_tiny.json").write_text(json.dumps({"tiny": True, "size": "small",
                                                       "image_hw": [64, 96]}))
    assert loading.weights_profile(bare)["latent_stride"] is None
    assert model_params(spec, {"weights": str(bare), "tiny": False}) == {
        "sim_camera": {"width": 96, "height": 64}}
    # a marker with a bad value is refused before any node starts, not launched on defaults
    bad = _small_dir(tmp_path / "bad")
    meta = json.loads((bad / "mirage_tiny.json").read_text())
    (bad / "mirage_tiny.json").write_text(json.dumps({**meta, "readout_hole_fill": -1}))
    with pytest.raises(MirageInputError, match="readout_hole_fill must be an integer"):
        model_params(spec, {"weights": str(bad), "tiny": False})
    # no weights given: the shipped model's, when one ships
    monkeypatch.setattr(loading, "shipped_weights_dir", lambda: None)
    assert model_params(spec, parse_launch_args(spec, [])) == {}
    w = _small_dir(tmp_path / "ship", hw=(128, 224))
    monkeypatch.setattr(loading, "shipped_weights_dir", lambda: w)
    assert model_params(spec, parse_launch_args(spec, []))["sim_camera"] == {
        "width": 224, "height": 128}


def test_both_launch_paths_pass_the_same_node_parameters(tmp_path):
    """`mirage launch` writes node_parameters to its second parameter file; ros2 launch's
    OpaqueFunction passes the same dict (mirage_ros.launch_specs.ros_launch_description)."""
    from mirage_ros.launch_specs import node_parameters

    w = _small_dir(tmp_path / "w")
    spec = LAUNCHES["sim_rollout"]
    v = parse_launch_args(spec, [f"weights:={w}", "steps:=3", "generator.seed:=5"])
    per_node = node_parameters(spec, v)
    assert per_node["memory"]["stride"] == 8 and per_node["sim_camera"]["height"] == 64
    assert per_node["generator"]["steps"] == 3 and per_node["generator"]["seed"] == 5
    assert overrides_yaml(spec, v) == {f"/**/{n}": {"ros__parameters": p}
                                       for n, p in per_node.items()}
