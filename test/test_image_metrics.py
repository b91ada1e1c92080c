"""PSNR / SSIM (mirage_core.eval.image_metrics): fast path vs reference, closed forms, errors."""

import math

import numpy as np
import pytest
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.eval import image_metrics
from mirage_core.eval.image_metrics import (
    gaussian_window,
    psnr,
    ssim,
    ssim_reference,
    uint8_to_float,
)


def _pair(shape, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    b = (a + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return a, b


@pytest.mark.parametrize("shape", [(1, 3, 11, 11), (2, 3, 16, 20), (3, 1, 13, 17), (1, 4, 12, 14)])
@pytest.mark.parametrize("noise", [0.02, 0.3])
def test_ssim_fast_matches_reference(shape, noise):
    a, b = _pair(shape, noise)
    fast, ref = ssim(a, b), ssim_reference(a, b)
    assert fast.shape == (shape[0],) and fast.dtype == torch.float64
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)


def test_ssim_fast_matches_reference_with_max_val_255_and_float32_input():
    a, b = _pair((2, 3, 14, 15), 0.1, seed=3)
    ref = ssim_reference(a, b)
    torch.testing.assert_close(ssim((a * 255).float(), (b * 255).float(), max_val=255.0), ref,
                               rtol=0, atol=1e-6)


def test_ssim_batches_equal_single_images():
    # more images than one convolution batch: each result equals the image computed alone
    n = image_metrics._BATCH + 3
    a, b = _pair((n, 3, 12, 13), 0.1, seed=1)
    batched = ssim(a, b)
    single = torch.cat([ssim(a[i:i + 1], b[i:i + 1]) for i in range(n)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-14)


def test_ssim_matches_pinned_scikit_image_values():
    # Pinned from scikit-image 0.26 structural_similarity(..., gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=1.0) (channel_axis=0 for the colour case); the
    # test does not import scikit-image.
    rng = np.random.default_rng(1234)
    a = rng.random((3, 16, 20))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    got = ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None])
    assert got.item() == pytest.approx(0.9489654187272801, abs=1e-12)
    g = np.linspace(0, 1, 16 * 20).reshape(1, 1, 16, 20)
    got = ssim(torch.from_numpy(g), torch.from_numpy(g**2))
    assert got.item() == pytest.approx(0.7791496115823769, abs=1e-12)


def test_ssim_identical_is_one_symmetric_and_drops_with_noise():
    a, _ = _pair((1, 3, 24, 24))
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    values = [ssim(*_pair((1, 3, 24, 24), s, seed=2)).item() for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]
    a, b = _pair((2, 3, 16, 16), 0.1)
    torch.testing.assert_close(ssim(a, b), ssim(b, a), rtol=0, atol=1e-14)


def test_gaussian_window():
    g = gaussian_window()
    assert g.shape == (11,)
    assert g.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert torch.equal(g, g.flip(0)) and int(g.argmax()) == 5
    assert (g[6] / g[5]).item() == pytest.approx(math.exp(-1 / (2 * 1.5**2)), rel=1e-12)


def test_psnr_identical_is_inf_and_known_noise_matches_closed_form():
    a = torch.full((2, 3, 8, 10), 0.5, dtype=torch.float64)
    sign = torch.ones_like(a)
    sign[..., ::2] = -1  # alternating +-: every squared error equals the amplitude squared
    b = a.clone()
    b[0] += 0.1 * sign[0]  # MSE 0.01   -> 20 dB
    b[1] += 0.05 * sign[1]  # MSE 0.0025 -> 10 log10(400) dB
    got = psnr(a, b)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(20.0, abs=1e-9)
    assert got[1].item() == pytest.approx(10 * math.log10(400.0), abs=1e-9)
    assert psnr(a, a).tolist() == [math.inf, math.inf]
    torch.testing.assert_close(psnr(a * 255, b * 255, max_val=255.0), got)


def test_uint8_to_float_layout_and_scale():
    x = np.zeros((2, 4, 5, 3), np.uint8)
    x[1, 2, 3] = (255, 51, 0)
    t = uint8_to_float(x)
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float64
    assert t[1, :, 2, 3].tolist() == [1.0, 0.2, 0.0]
    assert t.sum().item() == pytest.approx(1.2)
    with pytest.raises(ShapeError, match=r"uint8 frames \[N, H, W, C\]"):
        uint8_to_float(x[0])
    with pytest.raises(ShapeError):
        uint8_to_float(x.astype(np.float32))


def test_bad_inputs_raise_clear_errors():
    a, b = _pair((1, 3, 12, 12))
    with pytest.raises(ShapeError, match="same shape"):
        psnr(a, b[..., :11])
    with pytest.raises(ShapeError, match=r"\[N, C, H, W\]"):
        ssim(a[0], b[0])
    with pytest.raises(ShapeError, match="at least 11 x 11"):
        ssim(a[..., :10], b[..., :10])
    with pytest.raises(ShapeError, match="looks like"):
        psnr(a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1))
    bad = b.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(MirageInputError, match="NaN or inf"):
        ssim(a, bad)
    with pytest.raises(MirageInputError, match="outside"):
        psnr(a * 2, b)
    with pytest.raises(MirageInputError, match="uint8_to_float"):
        psnr(a.numpy(), b.numpy())
    with pytest.raises(MirageInputError, match="floating point"):
        psnr((a * 255).to(torch.uint8), (b * 255).to(torch.uint8))
    with pytest.raises(MirageInputError, match="max_val"):
        psnr(a, b, max_val=0.0)
