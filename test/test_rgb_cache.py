"""RGB point-cloud baseline: pixel-resolution store, rasterise-then-encode readout."""

import pytest
import torch

from mirage_core.codecs import SpaceToDepthCodec
from mirage_core.errors import DepthError, ShapeError
from mirage_core.geometry import intrinsics_matrix, pose_from_rt, se3_inverse
from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation, RGBPointCache

H, W = 32, 48
K = intrinsics_matrix(40.0, 40.0, W / 2, H / 2)
I4 = torch.eye(4, dtype=torch.float64)


def obs(seed=0, depth=None, mask=None, T=I4):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=g)
    d = depth if depth is not None else 1.0 + torch.rand(H, W, generator=g)
    return Observation(depth=d, K=K, T_cam_world=T, image=img, mask=mask)


def test_same_view_rasterises_the_image_and_encodes_it():
    codec = SpaceToDepthCodec(stride=4)
    cache = RGBPointCache(codec)
    o = obs(1)
    r = cache.update(o)
    assert r.added == H * W == cache.num_points and cache.nbytes == H * W * 15
    out = cache.readout(I4, K, (H, W))
    assert torch.equal((out.image * 255).round().to(torch.uint8), o.image)
    assert out.mask.all() and out.zhat.shape == (48, H // 4, W // 4)
    assert torch.allclose(out.zhat, codec.encode(o.image[None].float() / 255)[0])
    assert set(out.timings_ms) == {"rasterize", "encode"}


def test_latent_and_rgb_readouts_agree_through_a_lossless_codec():
    """Same frame, same depth, same view: the latent memory's readout equals the encoding of
    the RGB cache's rendering when the codec is lossless and depth is constant per cell."""
    codec = SpaceToDepthCodec(stride=4)
    depth = torch.full((H, W), 2.0)
    o = obs(2, depth=depth)
    rgb = RGBPointCache(codec)
    rgb.update(o)
    lat = LatentSpatialMemory(
        MemoryConfig(channels=48, stride=4, feature_dtype="float32"), codec=codec
    )
    lat.update(o)  # encodes the image with the codec
    T = se3_inverse(pose_from_rt(torch.eye(3), torch.tensor([0.0, 0.0, 0.0])))
    a, b = rgb.readout(T, K, (H, W)), lat.readout(T, K, (H, W))
    assert torch.allclose(a.zhat, b.zhat, atol=1e-6)


def test_mask_and_bad_input():
    cache = RGBPointCache(SpaceToDepthCodec())
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:4] = True
    assert cache.update(obs(0, mask=mask)).added == H * W - 4 * W
    n = cache.num_points
    bad_depth = torch.ones(H, W)
    bad_depth[0, 0] = float("nan")
    with pytest.raises(DepthError):
        cache.update(obs(0, depth=bad_depth))
    with pytest.raises(ShapeError):
        cache.update(obs(0, depth=torch.ones(H, W + 1)))
    with pytest.raises(ShapeError):
        cache.update(Observation(depth=torch.ones(H, W), K=K, T_cam_world=I4))
    assert cache.num_points == n


def test_save_load(tmp_path):
    cache = RGBPointCache(SpaceToDepthCodec())
    cache.update(obs(3))
    cache.save(tmp_path / "rgb.safetensors")
    back = RGBPointCache.load(tmp_path / "rgb.safetensors", SpaceToDepthCodec())
    assert torch.equal(back.xyz, cache.xyz)
    assert torch.equal(back.rasterize(I4, K, (H, W))[0], cache.rasterize(I4, K, (H, W))[0])
