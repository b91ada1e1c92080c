"""LPIPS v0.1 (mirage_core.eval.lpips) with random weights saved as the real files are laid out:
a torchvision backbone checkpoint (with ``classifier.*`` keys) + an lpips ``vgg.pth``/``alex.pth``,
and the packed single file. CPU, a few seconds, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError
from mirage_core.eval.closed_loop import ClosedLoopConfig, closed_loop_eval, frame_metrics
from mirage_core.eval.lpips import (
    CHANNELS,
    LPIPS,
    MIN_SIDE,
    expected_shapes,
    load_state_dict,
    lpips_reference,
    main,
    pack,
)

BACKBONE_NAME = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
SIDE = {"vgg": 32, "alex": 48}  # image side for the property tests (VGG16 is slow on CPU)


def _random_files(d, net, seed=0):
    """Write random weights as ``d/<torchvision name>`` + ``d/<net>.pth``; return the dicts."""
    torch.manual_seed(seed)
    model = LPIPS(net)  # default (random) conv init
    backbone = {f"features.{k}": v.clone() for k, v in model.features.state_dict().items()}
    backbone["classifier.0.weight"] = torch.randn(10, 7)  # torchvision's head: ignored
    backbone["classifier.0.bias"] = torch.randn(10)
    linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)  # non-negative, as v0.1's
              for i, c in enumerate(CHANNELS[net])}
    d.mkdir(parents=True, exist_ok=True)
    torch.save(backbone, d / BACKBONE_NAME[net])
    torch.save(linear, d / f"{net}.pth")
    return backbone, linear


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """``{net: (directory, packed .safetensors)}``."""
    root = tmp_path_factory.mktemp("lpips_weights")
    out = {}
    for net in ("vgg", "alex"):
        d = root / net
        _random_files(d, net)
        out[net] = (d, pack(net, d / BACKBONE_NAME[net], d / f"{net}.pth",
                            root / f"lpips_{net}.safetensors"))
    return out


@pytest.fixture(scope="module")
def models(weights):
    return {net: LPIPS.from_file(weights[net][0], net=net) for net in ("vgg", "alex")}


def _images(n=2, H=64, W=64, seed=0):
    """Smooth-ish random images ``[n, 3, H, W]`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, H // 8, W // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.rand(n, 3, H, W, generator=g)).clamp(0, 1)


def _noisy(x, sigma, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


# ------------------------------------------------------------------ fast path vs reference


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_fast_matches_reference(weights, models, net):
    m = models[net]
    h = MIN_SIDE[net]
    x0 = _images(2, h, h + 3, seed=2)  # tiny, and not square
    x1 = _noisy(x0, 0.2)
    ref = lpips_reference(m, x0, x1)  # [2] float64
    assert ref.shape == (2,) and (ref > 0).all()
    with torch.no_grad():
        d32 = m(x0, x1)
        d64 = LPIPS.from_file(weights[net][0], net=net).double()(x0.double(), x1.double())
    assert d32.shape == (2,) and d32.dtype == torch.float32
    torch.testing.assert_close(d64, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d32.double(), ref, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ loading


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_dir_packed_and_pth_identical(weights, models, net, tmp_path):
    d, packed = weights[net]
    single_pth = tmp_path / "both.pth"
    torch.save(load_state_dict(d, net), single_pth)
    x0 = _images(2, MIN_SIDE[net], MIN_SIDE[net])  # only the weights matter here
    x1 = _noisy(x0, 0.1)
    with torch.no_grad():
        a = models[net](x0, x1)
        b = LPIPS.from_file(packed, net=net)(x0, x1)
        c = LPIPS.from_file(single_pth, net=net)(x0, x1)
    assert torch.equal(a, b) and torch.equal(a, c)
    from safetensors import safe_open

    with safe_open(str(packed), framework="pt") as f:
        assert f.metadata()["net"] == net
        assert set(f.keys()) == set(expected_shapes(net))  # classifier.* dropped


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_torchvision_keys_load(weights, net):
    backbone = torch.load(weights[net][0] / BACKBONE_NAME[net], weights_only=True)
    assert any(k.startswith("classifier.") for k in backbone)
    m = LPIPS.from_file(weights[net][0], net=net)
    for k, v in m.features.state_dict().items():
        assert torch.equal(v, backbone[f"features.{k}"])
    lin = torch.load(weights[net][0] / f"{net}.pth", weights_only=True)
    for i, w in enumerate(m.linear_weights()):
        assert torch.equal(w, lin[f"lin{i}.model.1.weight"])


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_properties(models, net):
    m = models[net]
    x0 = _images(3, SIDE[net], SIDE[net], seed=3)
    x1 = _noisy(x0, 0.1)
    with torch.no_grad():
        assert torch.equal(m(x0, x0), torch.zeros(3))
        batch = m(x0, x1)
        torch.testing.assert_close(batch, m(x1, x0), rtol=1e-5, atol=1e-7)
        single = torch.cat([m(x0[i:i + 1], x1[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-7)
        d = [m(x0, _noisy(x0, s)) for s in (0.02, 0.08, 0.3)]
    assert (d[0] > 0).all() and (d[0] < d[1]).all() and (d[1] < d[2]).all()


# ------------------------------------------------------------------ errors


def test_weight_errors(weights, tmp_path):
    d, packed = weights["vgg"]
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        LPIPS.from_file(tmp_path / "nowhere", net="vgg")
    only_backbone = tmp_path / "only_backbone"
    only_backbone.mkdir()
    (only_backbone / BACKBONE_NAME["vgg"]).write_bytes((d / BACKBONE_NAME["vgg"]).read_bytes())
    with pytest.raises(WeightsNotFoundError, match=r"lpips/weights/v0\.1/vgg\.pth"):
        LPIPS.from_file(only_backbone, net="vgg")
    with pytest.raises(WeightsNotFoundError, match="model zoo"):
        LPIPS.from_file(d, net="alex")  # a VGG directory has no alexnet*.pth
    for bad_net in ("squeeze", "VGG"):
        with pytest.raises(MirageInputError, match="net must be one of"):
            LPIPS.from_file(d, net=bad_net)
    with pytest.raises(MirageInputError, match="LPIPS-vgg weights"):
        LPIPS.from_file(packed, net="alex")  # metadata says vgg

    good = load_state_dict(d, "vgg")
    cases = {
        "missing keys.*lin4": {k: v for k, v in good.items() if k != "lin4.model.1.weight"},
        "unexpected keys.*features.99": {**good, "features.99.weight": torch.zeros(1)},
        r"wrong shapes.*lin0.*\(1, 64, 1, 1\)": {**good, "lin0.model.1.weight": torch.ones(64)},
    }
    for pattern, sd in cases.items():
        f = tmp_path / "bad.pth"
        torch.save(sd, f)
        with pytest.raises(MirageInputError, match=pattern):
            LPIPS.from_file(f, net="vgg")
    (tmp_path / "w.bin").write_bytes(b"xx")
    with pytest.raises(MirageInputError, match="unknown weights file type"):
        LPIPS.from_file(tmp_path / "w.bin", net="vgg")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MirageInputError, match="cannot load"):
        LPIPS.from_file(tmp_path / "junk.pth", net="vgg")


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_image_errors(models, net):
    m = models[net]
    h = MIN_SIDE[net]
    x = _images(1, h, h)
    with torch.no_grad():
        m(x, x)  # the smallest size works
        with pytest.raises(ShapeError, match="at least"):
            m(x[..., :-1], x[..., :-1])
        with pytest.raises(ShapeError, match="same shape"):
            m(_images(1, 64, 64), _images(1, 64, 72))
        for c in (1, 4):
            y = torch.rand(1, c, 64, 64)
            with pytest.raises(ShapeError, match="3 \\(RGB\\) channels"):
                m(y, y)
        with pytest.raises(ShapeError, match="3 \\(RGB\\) channels"):
            m(torch.rand(1, 64, 64, 3), torch.rand(1, 64, 64, 3))  # [N, H, W, C]
        with pytest.raises(ShapeError, match=r"\[N, 3, H, W\]"):
            m(torch.rand(3, 64, 64), torch.rand(3, 64, 64))
        with pytest.raises(MirageInputError, match=r"in \[0, 1\]"):
            m(x * 255, x * 255)
        with pytest.raises(MirageInputError, match="floating"):
            m((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))


# ------------------------------------------------------------------ CLI and evaluation


def test_cli_pack_and_score(weights, tmp_path, capsys):
    from PIL import Image

    d, _ = weights["alex"]
    out = tmp_path / "lpips_alex.safetensors"
    assert main(["pack", "--net", "alex", "--backbone", str(d / BACKBONE_NAME["alex"]),
                 "--linear", str(d / "alex.pth"), "--out", str(out)]) == 0
    a = (_images(1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    b = (_noisy(_images(1), 0.2)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    capsys.readouterr()
    main(["score", "--weights", str(out), "--net", "alex", str(tmp_path / "a.png"),
          str(tmp_path / "a.png")])
    assert float(capsys.readouterr().out) == 0.0
    main(["score", "--weights", str(d), "--net", "alex", str(tmp_path / "a.png"),
          str(tmp_path / "b.png")])
    def to_tensor(img):  # uint8 [H, W, 3] -> [1, 3, H, W] float32 in [0, 1]
        return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]

    with torch.no_grad():
        expect = LPIPS.from_file(out, net="alex")(to_tensor(a), to_tensor(b))
    assert float(capsys.readouterr().out) == pytest.approx(float(expect), abs=1e-6)


def test_closed_loop_reports_lpips(weights, tmp_path):
    from mirage_core.rollout.outputs import RolloutWriter
    from mirage_core.trajectory import make_trajectory

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    cfg = ClosedLoopConfig(lpips_weights=str(weights["vgg"][1]), lpips_net="vgg")
    m = frame_metrics(frames, frames[::-1], cfg)
    assert len(m["lpips"]) == 3 and m["lpips"][1] == 0.0 and m["lpips"][0] > 0
    assert "LPIPS-vgg" in m["lpips_note"]

    traj = make_trajectory("loop", num_frames=3)
    w = RolloutWriter(tmp_path / "roll", fps=10.0, K=torch.eye(3), image_hw=(32, 48), meta={},
                      video=False)
    w.add_frames(0, frames, traj.T_world_cam, traj.timestamps)
    w.close()
    res = closed_loop_eval([tmp_path / "roll"],
                           ClosedLoopConfig(lpips_weights=str(weights["alex"][0]),
                                            lpips_net="alex"))
    lp = res["clips"][0]["lpips"]
    assert lp is not None and len(lp) == 1 and lp[0] > 0
    assert res["mean"]["lpips_mean"] == pytest.approx(lp[0])
