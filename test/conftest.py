"""Test options: slow tests run with MIRAGE_SLOW=1 or --runslow; gpu tests need CUDA.

ROS 2 tests run on real rclpy (Fast DDS) on loopback only, each in its own domain
(``ros_domain``; test/ros_helpers.py)."""

import os

import pytest
import torch

# Loopback-only DDS discovery for every test and every node process the tests start (Jazzy's
# rmw reads it at context init). A user's own setting is replaced: tests never leave the host.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("MIRAGE_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: set MIRAGE_SLOW=1 or pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def _save_da3(net, d, model_name):
    """Save a DA3 network as ``DepthAnything3.save_pretrained`` does (``model.`` prefix, one
    copy of each shared tensor) plus ``config.json`` = ``{"model_name": ...}``."""
    import json

    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    seen, out = set(), {}
    for k, v in net.state_dict().items():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            out[f"model.{k}"] = v.contiguous()
    save_file(out, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_name": model_name}))


@pytest.fixture(scope="session")
def save_da3():
    """``save_da3(net, dir, model_name)``: write a DA3 weights directory."""
    return _save_da3


@pytest.fixture(scope="session")
def da3_small_dir(tmp_path_factory):
    """A da3-small weights directory with random weights (skips without depth-anything-3)."""
    pytest.importorskip("depth_anything_3")
    from mirage_core.perception._da3_import import import_da3

    m = import_da3()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = m.create_object(m.load_config(m.registry.MODEL_REGISTRY["da3-small"]))
    d = tmp_path_factory.mktemp("da3") / "DA3-SMALL"
    _save_da3(net, d, "da3-small")
    return d


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A tiny random-weight Wan2.2-TI2V directory with a zero (no-op) side branch, built once
    per session (training and trained-weight tests)."""
    from mirage_core.generator.loading import build_tiny_weights

    return build_tiny_weights(tmp_path_factory.mktemp("tiny") / "w", side_branch="zero")


def assert_resume_is_bit_for_bit(make_cfg, make_models, clips, tmp_path, stop: int = 2):
    """Train ``make_cfg(dir)`` straight to its end, and again stopped after ``stop`` steps
    then resumed: the losses and the final weights must be equal. Returns the two partial
    runs' results and the straight run's metrics records (none if it wrote none)."""
    import json

    from mirage_core.train import train

    straight = train(make_cfg(tmp_path / "a"), clips, m1 := make_models())
    cfg_b = make_cfg(tmp_path / "b")
    first = train(cfg_b, clips, make_models(), stop_after=stop)
    second = train(cfg_b, clips, m2 := make_models(), resume=True)
    assert first.step == stop and second.step == cfg_b.steps
    assert first.losses + second.losses == straight.losses
    s1, s2 = m1.transformer.state_dict(), m2.transformer.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    path = straight.metrics_path
    recs = ([json.loads(x) for x in path.read_text().splitlines()]
            if path is not None and path.is_file() else [])
    return first, second, recs


def make_lossless_store(path, hw=(32, 48), n=2, seed=0):
    """A ClipStore of ``n`` random-frame clips (9 frames) encoded with the lossless codec."""
    from dataclasses import replace

    from mirage_core.codecs import SpaceTimeToDepthCodec
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.prepare import meta_for
    from mirage_core.train.main import synthetic_clips

    codec = SpaceTimeToDepthCodec(2)
    g = torch.Generator().manual_seed(seed)
    with ClipStore(path, readonly=False) as st:
        st.init_meta(meta_for(codec, hw, note="test"))
        for clip in synthetic_clips(n, 3, image_hw=hw, channels=48, stride=2, seed=seed):
            video = torch.rand(1, 3, 9, *hw, generator=g)  # frames in [0, 1]
            z = codec.encode_video(video)[0].permute(1, 0, 2, 3)
            st.put(replace(clip, latents=z, frame_latents=z.clone(), prompt_embeds=None))
    return path


@pytest.fixture(scope="session")
def small_vae_run(tmp_path_factory):
    """A `mirage codec train` output (1 step, width 8; its ``vae/`` is a small-VAE folder),
    for recipes whose ``codec`` names one. Read-only: tests must not train it further."""
    from mirage_core.train.codec import CodecTrainConfig, train_codec

    tmp = tmp_path_factory.mktemp("small_vae")
    store = make_lossless_store(tmp / "store")
    out = tmp / "run"
    train_codec(CodecTrainConfig(data=str(store), out_dir=str(out), steps=1, batch_size=1,
                                 window=5, base_dim=8, decoder_base_dim=8, stats_clips=1,
                                 warmup_steps=1, progress=False))
    return out


@pytest.fixture
def ros_domain():
    """A ROS domain id no other test (in this or a parallel pytest run) holds meanwhile."""
    from ros_helpers import claim_domain

    with claim_domain() as d:
        yield d


@pytest.fixture
def ros_probe(ros_domain):
    """A plain rclpy node ``/mirage/probe`` spinning in its own context and domain."""
    from ros_helpers import Probe

    probe = Probe(ros_domain)
    try:
        yield probe
    finally:
        probe.close()
