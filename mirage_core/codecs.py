"""Image <-> latent codecs shared by the latent spatial memory and the RGB point-cloud baseline.

A codec maps images ``[B, 3, H, W]`` (float, values in ``[0, 1]``) to a latent grid
``[B, C, H/s, W/s]`` with spatial stride ``s`` and back. Latent cell ``(u, v)`` covers image
pixels ``[s*u, s*(u+1)) x [s*v, s*(v+1))``, so the latent-resolution intrinsics are
``K_l = diag(w/W, h/H, 1) @ K`` (see :mod:`mirage_core.geometry`).

Implementations:

* :class:`SpaceToDepthCodec` -- analytic ``pixel_unshuffle`` with stride 4 (48 channels, the
  same channel count as Wan2.2's latent). Lossless, instant, no weights. It is NOT a learned
  VAE: it exists for CPU demos and geometric tests where an exact inverse is wanted.
* :class:`SpaceTimeToDepthCodec` -- the same idea with Wan2.2's causal temporal stride 4
  (lossless; the training data's storage format).
* :class:`PCAVideoCodec` -- a learned *linear* codec with Wan2.2's latent layout at stride 8
  (``mirage codec fit-pca``): the shipped small model's codec (issue 12).
* :class:`WanVAECodec` -- the Wan2.2-TI2V-5B VAE (diffusers ``AutoencoderKLWan``; z_dim 48,
  spatial stride 16, temporal stride 4), loaded from a local directory or built with random
  weights for tests, or a small VAE of the same family trained here (``mirage codec
  train``, stride 8). Latents are normalised with the checkpoint's per-channel
  ``latents_mean`` / ``latents_std``, i.e. they live in the space the Wan2.2 DiT sees.

Nothing here downloads anything. Build a codec by name with :func:`make_codec`.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError

__all__ = [
    "CODEC_NAMES",
    "PCA_CODEC_FILE",
    "PCA_CODEC_MARKER",
    "PCA_NORMALISATIONS",
    "SMALL_VAE_MARKER",
    "WAN22_LATENTS_MEAN",
    "WAN22_LATENTS_STD",
    "WAN22_SMALL_VAE_CONFIG",
    "WAN22_TINY_OVERRIDES",
    "WAN22_VAE_CONFIG",
    "WAN22_VAE_DOWNLOAD_HINT",
    "LatentCodec",
    "PCAVideoCodec",
    "SpaceTimeToDepthCodec",
    "SpaceToDepthCodec",
    "StreamDecoder",
    "VideoCodec",
    "WanVAECodec",
    "check_codec_spec",
    "codec_from_spec",
    "codec_stride",
    "fit_pca_codec",
    "is_small_vae_dir",
    "make_codec",
    "weights_sha256",
]

# Values in [0, 1] may overshoot by this much (float rounding in upstream resizes/conversions);
# they are clamped. Anything further out is rejected.
_RANGE_TOL = 1e-4

# ---------------------------------------------------------------------------------------------
# Wan2.2-TI2V-5B VAE configuration.
#
# Source: huggingface/diffusers, scripts/convert_wan_to_diffusers.py, dict
# `vae22_diffusers_config` (used by `convert_vae_22()` for "Wan-AI/Wan2.2-TI2V-5B"); the same
# values ship in `vae/config.json` of Wan-AI/Wan2.2-TI2V-5B-Diffusers. That dict also carries
# `"clip_output": False`, which AutoencoderKLWan in diffusers 0.42 does not accept (decode
# always clamps to [-1, 1]), so it is left out here. `dim_mult`, `num_res_blocks`,
# `temperal_downsample` are AutoencoderKLWan's defaults, written out so the dict is complete.
# ---------------------------------------------------------------------------------------------
WAN22_LATENTS_MEAN: tuple[float, ...] = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD: tuple[float, ...] = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip
assert len(WAN22_LATENTS_MEAN) == 48 and len(WAN22_LATENTS_STD) == 48

#: Keyword arguments of ``diffusers.AutoencoderKLWan`` for the real Wan2.2-TI2V-5B VAE
#: (705M parameters).
WAN22_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "latents_mean": list(WAN22_LATENTS_MEAN),
    "latents_std": list(WAN22_LATENTS_STD),
}

#: ``AutoencoderKLWan`` keyword arguments of the *small* Wan2.2-layout VAE trained here
#: (``mirage codec train``, issue 12): the same residual blocks, 2x2 patchify, 48 latent
#: channels and temporal stride 4 as :data:`WAN22_VAE_CONFIG`, but 3 levels (spatial stride 8:
#: 2 patchify x 2 x 2) with temporal downsampling at both, and widths for a CPU.
#: ``latents_mean`` / ``latents_std`` are measured on the training frames after training.
WAN22_SMALL_VAE_CONFIG: dict[str, Any] = {
    **WAN22_VAE_CONFIG,
    "base_dim": 32,
    "decoder_base_dim": 32,
    "dim_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "temperal_downsample": [True, True],
    "scale_factor_spatial": 8,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
}

#: File in a small VAE folder written by ``mirage codec train``; its presence lets
#: :func:`~mirage_core.generator.configs.check_vae_config` accept the small layout.
SMALL_VAE_MARKER = "mirage_small_vae.json"

#: Overrides giving the "tiny" variant: same layout, 48 channels, stride 16/4, ~8M params.
WAN22_TINY_OVERRIDES: dict[str, Any] = {"base_dim": 16, "decoder_base_dim": 32, "num_res_blocks": 1}

WAN22_VAE_DOWNLOAD_HINT = (
    "On a machine with internet access run\n"
    '  huggingface-cli download Wan-AI/Wan2.2-TI2V-5B-Diffusers --include "vae/*" '
    "--local-dir DIR\n"
    "copy DIR here and pass DIR (the pipeline root) or DIR/vae. Mirage never downloads weights."
)

_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.bin.index.json",
)


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------
def _check_float_tensor(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise MirageInputError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (divide uint8 images by 255 first)" if x.dtype == torch.uint8 else ""
        raise MirageInputError(f"{what} must be a floating-point tensor, got {x.dtype}{hint}")
    return x


def _check_unit_range(x: torch.Tensor, what: str) -> torch.Tensor:
    """Reject NaN/inf and values outside [0, 1] (beyond ``_RANGE_TOL``); clamp the rest."""
    if x.numel() == 0:
        raise ShapeError(f"{what} is empty: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise MirageInputError(f"{what} contains NaN or inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        raise MirageInputError(
            f"{what} must hold values in [0, 1], got min {lo:.4g} max {hi:.4g}"
            + (" (looks like 0..255 data: divide by 255)" if hi > 2.0 else "")
            + (" (looks like [-1, 1] data: map with (x + 1) / 2)" if lo < -0.5 else "")
        )
    return x.clamp(0.0, 1.0)


def _check_hw(hw: Sequence[int], stride: int, what: str) -> tuple[int, int]:
    if len(hw) != 2:
        raise ShapeError(f"{what} must be (H, W), got {tuple(hw)}")
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise ShapeError(
            f"{what} (H, W) = ({h}, {w}) must be positive multiples of the codec stride {stride}"
        )
    return h, w


# ---------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------
class LatentCodec(abc.ABC):
    """Maps images ``[B, 3, H, W]`` in ``[0, 1]`` to latents ``[B, C, H/s, W/s]`` and back.

    Attributes:
        name: short identifier (``"space_to_depth"``, ``"wan_tiny"``, ``"wan_full"``, ``"wan"``).
        stride: spatial stride ``s``; ``H`` and ``W`` must be multiples of it.
        channels: latent channels ``C``.
        device: where encode/decode run and where their outputs live.

    Subclasses implement :meth:`_encode` / :meth:`_decode` on validated input; the public
    :meth:`encode` / :meth:`decode` validate shapes, dtype and range, move data to
    :attr:`device`, and return float32.
    """

    name: str
    stride: int
    channels: int
    device: torch.device
    #: RGB frames per latent frame after the first (1: frame-wise; 4: the causal Wan2.2 VAE).
    temporal_stride: int = 1

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """One-line human description of what this codec is (for logs, plots, reports)."""

    def latent_hw(self, image_hw: Sequence[int]) -> tuple[int, int]:
        """Latent grid size ``(H/s, W/s)`` for an image of size ``(H, W)``.

        Raises:
            ShapeError: ``H`` or ``W`` is not a positive multiple of :attr:`stride`.
        """
        h, w = _check_hw(image_hw, self.stride, "image size")
        return h // self.stride, w // self.stride

    def image_hw(self, latent_hw: Sequence[int]) -> tuple[int, int]:
        """Image size ``(h*s, w*s)`` decoded from a latent grid of size ``(h, w)``."""
        h, w = _check_hw(latent_hw, 1, "latent size")
        return h * self.stride, w * self.stride

    def _validate_images(self, images: Any, what: str = "images") -> torch.Tensor:
        x = _check_float_tensor(images, what)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ShapeError(f"{what} must be [B, 3, H, W], got shape {tuple(x.shape)}")
        self.latent_hw(x.shape[-2:])
        return _check_unit_range(x, what)

    def _validate_latents(self, latents: Any, ndim: int = 4) -> torch.Tensor:
        z = _check_float_tensor(latents, "latents")
        layout = "[B, C, h, w]" if ndim == 4 else "[B, C, t, h, w]"
        if z.ndim != ndim or z.shape[1] != self.channels:
            raise ShapeError(
                f"latents must be {layout} with C = {self.channels} for codec {self.name!r}, "
                f"got shape {tuple(z.shape)}"
            )
        if z.numel() == 0:
            raise ShapeError(f"latents are empty: shape {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise MirageInputError("latents contain NaN or inf values")
        return z

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images ``[B, 3, H, W]`` (float, ``[0, 1]``) to latents ``[B, C, H/s, W/s]``.

        Returns float32 latents on :attr:`device`.

        Raises:
            ShapeError: not ``[B, 3, H, W]``, or ``H``/``W`` not multiples of :attr:`stride`.
            MirageInputError: not a float tensor, NaN/inf, or values outside ``[0, 1]``.
        """
        x = self._validate_images(images)
        with torch.no_grad():
            z = self._encode(x.to(self.device))
        return z.to(torch.float32)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents ``[B, C, h, w]`` to images ``[B, 3, h*s, w*s]``, float32 in ``[0, 1]``.

        Raises:
            ShapeError: not ``[B, C, h, w]`` with ``C`` = :attr:`channels`.
            MirageInputError: not a float tensor, or NaN/inf values.
        """
        z = self._validate_latents(latents)
        with torch.no_grad():
            x = self._decode(z.to(self.device))
        return x.to(torch.float32).clamp_(0.0, 1.0)

    def stream_decoder(self, cache_device: str | torch.device | None = None) -> StreamDecoder:
        """A :class:`StreamDecoder`: decode a latent video chunk by chunk, without seams.

        This codec is frame-wise (each latent frame decodes to one image on its own), so the
        stream holds no state besides the overlap bookkeeping; ``cache_device`` is accepted
        for a common interface and unused.
        """
        return _FrameWiseStreamDecoder(self)

    @abc.abstractmethod
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """Validated ``[B, 3, H, W]`` in ``[0, 1]`` on :attr:`device` -> ``[B, C, H/s, W/s]``."""

    @abc.abstractmethod
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Validated ``[B, C, h, w]`` on :attr:`device` -> ``[B, 3, h*s, w*s]`` (any range)."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, stride={self.stride}, "
            f"channels={self.channels}, device={str(self.device)!r})"
        )


# ---------------------------------------------------------------------------------------------
# Analytic codec
# ---------------------------------------------------------------------------------------------
class SpaceToDepthCodec(LatentCodec):
    """Analytic space-to-depth codec. NOT a learned VAE: there are no weights.

    ``encode`` maps ``[0, 1]`` to ``[-1, 1]`` and rearranges each ``s x s`` pixel block into
    channels with ``pixel_unshuffle``: ``[B, 3, H, W] -> [B, 3*s*s, H/s, W/s]`` (stride 4 gives
    48 channels, Wan2.2's latent channel count). ``decode`` is the exact inverse
    (``pixel_shuffle``, then back to ``[0, 1]``): ``[B, 3*s*s, h, w] -> [B, 3, h*s, w*s]``.
    The rearrangement is exact; the affine map loses at most float32 rounding
    (max abs error < 1e-7, and 8-bit images round-trip bit-exactly after ``round(x * 255)``).
    Channel ``c*s*s + i*s + j`` holds colour ``c`` of pixel ``(s*v + i, s*u + j)``.

    Use it for CPU demos and geometric tests of the memory (warping, splatting, occlusion),
    where an exact, deterministic inverse is what is wanted. It says nothing about how a
    learned latent behaves.
    """

    def __init__(self, stride: int = 4, device: str | torch.device = "cpu") -> None:
        """Args:
        stride: spatial stride ``s`` (>= 1); ``channels = 3 * s * s``.
        device: where encode/decode outputs live.
        """
        if int(stride) != stride or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        self.name = "space_to_depth"
        self.stride = int(stride)
        self.channels = 3 * self.stride * self.stride
        self.device = torch.device(device)

    @property
    def label(self) -> str:
        return (
            f"analytic space-to-depth (pixel_unshuffle, stride {self.stride}, "
            f"{self.channels} ch), lossless, NOT a learned VAE"
        )

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32) * 2.0 - 1.0
        return F.pixel_unshuffle(x, self.stride)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(latents.to(torch.float32), self.stride)
        return (x + 1.0) * 0.5


class VideoCodec(LatentCodec):
    """A :class:`LatentCodec` that also encodes and decodes videos, causally in time.

    Latent 0 encodes frame 0 alone; latent ``j >= 1`` encodes frames
    ``(j-1) r + 1 .. j r`` with ``r`` = :attr:`temporal_stride` (4 for the Wan2.2 VAE), so a
    ``T``-frame video (``T = r k + 1``) has ``1 + (T - 1) / r`` latent frames. Subclasses
    implement :meth:`_encode_video` / :meth:`_decode_video` on validated input.
    """

    def num_latent_frames(self, num_frames: int) -> int:
        """Latent frames ``1 + (T-1)//r`` for a ``T``-frame video; ``T`` must be ``r k + 1``.

        Raises:
            ShapeError: ``T`` is not ``r k + 1``.
        """
        t = int(num_frames)
        if t < 1 or (t - 1) % self.temporal_stride:
            raise ShapeError(
                f"video frame count must be {self.temporal_stride}k+1 (1, 5, 9, ...), got {t}"
            )
        return 1 + (t - 1) // self.temporal_stride

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Encode a video ``[B, 3, T, H, W]`` (float, ``[0, 1]``, ``T = 4k+1``).

        Returns float32 latents ``[B, C, 1 + (T-1)//r, H/s, W/s]`` on :attr:`device`
        (causal: latent frame 0 encodes video frame 0 alone; the Wan VAE's are normalised by
        its ``latents_mean``/``latents_std``).

        Raises:
            ShapeError: wrong layout, ``T`` not ``r k + 1``, or ``H``/``W`` not multiples of
                :attr:`stride`.
            MirageInputError: not a float tensor, NaN/inf, or values outside ``[0, 1]``.
        """
        x = _check_float_tensor(video, "video")
        if x.ndim != 5 or x.shape[1] != 3:
            raise ShapeError(f"video must be [B, 3, T, H, W], got shape {tuple(x.shape)}")
        self.num_latent_frames(x.shape[2])
        self.latent_hw(x.shape[-2:])
        x = _check_unit_range(x, "video")
        with torch.no_grad():
            z = self._encode_video(x)
        return z.to(torch.float32)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents ``[B, C, t, h, w]`` to a video ``[B, 3, 1 + r (t-1), s h, s w]``.

        Returns float32 in ``[0, 1]`` on :attr:`device`.

        Raises:
            ShapeError: not ``[B, C, t, h, w]``.
            MirageInputError: not a float tensor, or NaN/inf values.
        """
        z = self._validate_latents(latents, ndim=5)
        with torch.no_grad():
            x = self._decode_video(z)
        return x.to(torch.float32).clamp_(0.0, 1.0)

    @abc.abstractmethod
    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Validated ``[B, 3, T, H, W]`` in ``[0, 1]`` -> ``[B, C, t, h, w]``."""

    @abc.abstractmethod
    def _decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Validated ``[B, C, t, h, w]`` -> ``[B, 3, 1 + r (t-1), H, W]`` (any range)."""

    # the image API: an image is a 1-frame video (latent 0 of a causal video codec)
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode_video(images.unsqueeze(2)).squeeze(2)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._decode_video(latents.unsqueeze(2)).squeeze(2)


class SpaceTimeToDepthCodec(VideoCodec):
    """Analytic, lossless video codec with the Wan2.2 VAE's latent layout. NOT a learned VAE.

    Latents have the shape the Wan2.2-TI2V-5B VAE gives (48 channels at ``stride=2``, causal
    temporal stride 4: latent 0 <-> frame 0, latent ``j`` <-> frames ``4j-3 .. 4j``), so the
    whole Mirage pipeline (chunks of 8 latents = 32 frames, poses of frames ``4j``, the memory)
    runs unchanged on it, at a spatial stride a CPU can afford. Each latent cell holds the
    ``s x s`` pixel block of its 4 frames, mapped from ``[0, 1]`` to ``[-3, 3]``
    (:attr:`LATENT_SCALE` ``* (2 x - 1)``):

    - channel ``((c * 4 + k) * s + i) * s + j`` = colour ``c`` of pixel ``(s v + i, s u + j)``
      of the latent's ``k``-th frame;
    - latent 0 (and an image encoded alone, :meth:`encode`: what the rollout writes into the
      memory) holds its one frame in all 4 slots; decoding it averages the slots (exact for
      such latents).

    ``decode_video(encode_video(v)) == v`` up to float32 rounding; 8-bit frames round-trip
    bit-exactly after ``round(x * 255)``. A model trained on it learns the scene, not a codec:
    use it for small models trained here (issue 12), never as a stand-in for the Wan VAE's
    latent statistics.
    """

    temporal_stride = 4
    #: latents are ``(2 x - 1) * LATENT_SCALE``: rendered rooms then have about unit variance
    #: (the std of ``2 x - 1`` over the synthetic training rooms is 0.31), as a diffusion
    #: model's latents should against its unit-variance noise (Wan normalises its VAE's
    #: latents the same way, with ``latents_mean``/``latents_std``)
    LATENT_SCALE = 3.0

    def __init__(self, stride: int = 2, device: str | torch.device = "cpu") -> None:
        """Args:
        stride: spatial stride ``s`` (>= 1); ``channels = 3 * 4 * s * s`` (48 at ``s = 2``).
        device: where encode/decode outputs live.
        """
        if int(stride) != stride or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        self.name = "space_time_to_depth"
        self.stride = int(stride)
        self.channels = 3 * self.temporal_stride * self.stride * self.stride
        self.device = torch.device(device)
        self.dtype = torch.float32

    @property
    def label(self) -> str:
        return (
            f"analytic space-time-to-depth (stride {self.stride}, {self.temporal_stride} frames "
            f"per latent, {self.channels} ch, scale {self.LATENT_SCALE:g}), lossless, NOT a "
            f"learned VAE"
        )

    def to(self, device: str | torch.device) -> SpaceTimeToDepthCodec:
        """Set :attr:`device` (there are no weights to move); returns ``self``."""
        self.device = torch.device(device)
        return self

    def num_parameters(self) -> int:
        return 0

    # -- the packing ------------------------------------------------------------------------
    def _pack(self, groups: torch.Tensor) -> torch.Tensor:
        """``[B, 3, L, 4, H, W]`` -> ``[B, C, L, H/s, W/s]``."""
        B, _, L, k, H, W = groups.shape
        s = self.stride
        x = groups.reshape(B, 3, L, k, H // s, s, W // s, s)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [B, 3, 4, s, s, L, h, w]
        return x.reshape(B, self.channels, L, H // s, W // s)

    def _unpack(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, C, L, h, w]`` -> ``[B, 3, L, 4, h s, w s]``."""
        B, _, L, h, w = z.shape
        s, k = self.stride, self.temporal_stride
        x = z.reshape(B, 3, k, s, s, L, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(B, 3, L, k, h * s, w * s)

    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = (video.to(device=self.device, dtype=torch.float32) * 2.0 - 1.0) * self.LATENT_SCALE
        B, _, _, H, W = x.shape
        first = x[:, :, :1].expand(B, 3, self.temporal_stride, H, W)
        frames = torch.cat([first, x[:, :, 1:]], dim=2)  # [B, 3, 4 L, H, W]
        return self._pack(frames.reshape(B, 3, -1, self.temporal_stride, H, W))

    def _decode_video(self, latents: torch.Tensor, first: bool = True) -> torch.Tensor:
        """``first``: latent 0 starts the video (emits one frame, the mean of its slots)."""
        g = self._unpack(latents.to(self.device, torch.float32))  # [B, 3, L, 4, H, W]
        B, _, _, _, H, W = g.shape
        parts = []
        if first:
            parts.append(g[:, :, 0].mean(dim=2, keepdim=True))  # [B, 3, 1, H, W]
            g = g[:, :, 1:]
        parts.append(g.reshape(B, 3, -1, H, W))
        return (torch.cat(parts, dim=2) / self.LATENT_SCALE + 1.0) * 0.5

    def stream_decoder(self, cache_device: str | torch.device | None = None) -> StreamDecoder:
        """Latents decode independently; the stream only tracks the first latent (1 frame)."""
        return _PackedStreamDecoder(self)


# ---------------------------------------------------------------------------------------------
# Learned linear (PCA) codec
# ---------------------------------------------------------------------------------------------
#: Marker file of a :class:`PCAVideoCodec` folder (``mirage codec fit-pca``).
PCA_CODEC_MARKER = "mirage_pca_codec.json"
PCA_CODEC_FILE = "pca_codec.safetensors"


class PCAVideoCodec(VideoCodec):
    """A learned *linear* video codec with the Wan2.2 VAE's latent layout (issue 12).

    Each latent cell is the projection of its ``s x s`` pixel block over its 4 frames (the
    768 values :class:`SpaceTimeToDepthCodec` at stride ``s = 8`` packs into one cell, in its
    channel order and ``[-3, 3]`` scale) onto the first ``C = 48`` principal components of
    such blocks in the training frames, divided by each component's standard deviation (so
    latents have unit variance per channel, as Wan2.2's normalised latents do):

        ``z = ((u - mean) @ basis.T) / scale``,  ``u = (z * scale) @ basis + mean``

    with ``mean [D]``, ``basis [C, D]`` (orthonormal rows), ``scale [C]``, ``D = 3 * 4 * s^2``.
    It has Wan2.2's shapes (48 channels, causal temporal stride 4, latent 0 = frame 0 alone;
    an image encoded alone fills all 4 slots and decodes as their mean), at spatial stride 8,
    16x fewer numbers than pixels. It is the optimal *linear* code of that size for the
    training blocks (in squared error); decoding is a matrix product, so what a generator gets
    slightly wrong decodes to smooth block patterns, not pixel noise. It is NOT the Wan VAE
    (no nonlinearity, visible 8 x 8 block edges at low quality). Fit with :func:`fit_pca_codec`
    (``mirage codec fit-pca``).

    Shapes: as :class:`SpaceTimeToDepthCodec` with ``C = 48`` and ``s = 8``.
    """

    temporal_stride = 4

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor,
                 stride: int = 8, source: str = "", device: str | torch.device = "cpu") -> None:
        """Args:
        mean: ``[D]`` mean block (``D = 3 * 4 * stride^2``).
        basis: ``[C, D]`` principal directions (rows).
        scale: ``[C]`` std of each projection (> 0).
        stride: spatial stride ``s``.
        source: where the parameters came from (shown in :attr:`label`).
        device: where encode/decode run.

        Raises:
            ShapeError: inconsistent shapes. MirageInputError: non-finite values or scale <= 0.
        """
        self._blocks = SpaceTimeToDepthCodec(stride, device=device)
        D = self._blocks.channels
        if mean.shape != (D,) or basis.ndim != 2 or basis.shape[1] != D or scale.shape != (
                basis.shape[0],):
            raise ShapeError(
                f"PCA codec at stride {stride} needs mean [{D}], basis [C, {D}], scale [C]; got "
                f"{tuple(mean.shape)}, {tuple(basis.shape)}, {tuple(scale.shape)}"
            )
        for name, t in (("mean", mean), ("basis", basis), ("scale", scale)):
            if not bool(torch.isfinite(t).all()):
                raise MirageInputError(f"PCA codec {name} has NaN or inf values")
        if float(scale.min()) <= 0:
            raise MirageInputError("PCA codec scale must be > 0")
        self.name = "pca"
        self.stride = int(stride)
        self.channels = int(basis.shape[0])
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.source = source
        self.mean = mean.to(self.device, torch.float32)
        self.basis = basis.to(self.device, torch.float32)
        self.scale = scale.to(self.device, torch.float32)

    @property
    def label(self) -> str:
        return (f"PCA video codec ({self.channels} ch, stride {self.stride}, temporal "
                f"{self.temporal_stride}), {self.source}")

    def to(self, device: str | torch.device) -> PCAVideoCodec:
        """Move the parameters to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self._blocks.to(device)
        self.mean, self.basis, self.scale = (t.to(self.device)
                                             for t in (self.mean, self.basis, self.scale))
        return self

    def num_parameters(self) -> int:
        return int(self.mean.numel() + self.basis.numel() + self.scale.numel())

    # -- the projection ---------------------------------------------------------------------
    def _project(self, u: torch.Tensor) -> torch.Tensor:
        """``[B, D, L, h, w]`` packed blocks -> ``[B, C, L, h, w]`` latents."""
        x = u.movedim(1, -1) - self.mean
        return ((x @ self.basis.T) / self.scale).movedim(-1, 1)

    def _unproject(self, z: torch.Tensor) -> torch.Tensor:
        x = (z.movedim(1, -1) * self.scale) @ self.basis + self.mean
        return x.movedim(-1, 1)

    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return self._project(self._blocks._encode_video(video))

    def _decode_video(self, latents: torch.Tensor, first: bool = True) -> torch.Tensor:
        u = self._unproject(latents.to(self.device, torch.float32))
        return self._blocks._decode_video(u, first=first)

    def stream_decoder(self, cache_device: str | torch.device | None = None) -> StreamDecoder:
        """Latents decode independently; the stream only tracks the first latent (1 frame)."""
        return _PackedStreamDecoder(self)

    # -- files ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, marker: dict[str, Any] | None = None) -> Path:
        """Write ``folder/pca_codec.safetensors`` and the :data:`PCA_CODEC_MARKER`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.cpu().contiguous(), "basis": self.basis.cpu().contiguous(),
                   "scale": self.scale.cpu().contiguous()}, str(folder / PCA_CODEC_FILE),
                  metadata={"stride": str(self.stride), "format": "mirage-pca-codec-1"})
        info = {"codec": "pca", "version": 1, "stride": self.stride, "channels": self.channels,
                **(marker or {})}
        (folder / PCA_CODEC_MARKER).write_text(json.dumps(info, indent=2) + "\n")
        return folder

    @classmethod
    def from_dir(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                 rebuild_hint: str = "") -> PCAVideoCodec:
        """Load a folder written by :meth:`save`.

        Raises:
            WeightsNotFoundError: the folder, its marker or its safetensors file is missing or
                unreadable (message: the path, and ``rebuild_hint`` or how to fit one).
        """
        from mirage_core.safetensors_io import read_safetensors

        folder = Path(folder).expanduser()
        hint = rebuild_hint or ("Fit one with `mirage codec fit-pca --data STORE --out DIR` "
                                "(a lossless-codec store from `mirage data synth`).")
        f = folder / PCA_CODEC_FILE
        if not (folder / PCA_CODEC_MARKER).is_file() or not f.is_file():
            raise WeightsNotFoundError(
                f"{str(folder)!r} is not a PCA codec folder (needs {PCA_CODEC_MARKER} and "
                f"{PCA_CODEC_FILE}).\n{hint}")
        try:
            tensors, meta = read_safetensors(f, WeightsNotFoundError)
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(f"{e}\n{hint}") from None
        if set(tensors) != {"mean", "basis", "scale"} or "stride" not in meta:
            raise WeightsNotFoundError(f"{f}: not a PCA codec file (tensors {sorted(tensors)})."
                                       f"\n{hint}")
        source = f"fitted by `mirage codec fit-pca` (weights sha256 {weights_sha256(folder)[:16]})"
        return cls(tensors["mean"], tensors["basis"], tensors["scale"], int(meta["stride"]),
                   source=f"{source}, from {folder}", device=device)


#: how :func:`fit_pca_codec` scales the projections (see there)
PCA_NORMALISATIONS = ("global", "channel")


def fit_pca_codec(frames: torch.Tensor, channels: int = 48, stride: int = 8,
                  max_blocks: int = 200_000, seed: int = 0,
                  normalise: str = "global") -> PCAVideoCodec:
    """Fit a :class:`PCAVideoCodec` to uint8 clips ``frames [N, F, 3, H, W]`` (``F = 1 + 4k``).

    Every clip is packed into blocks exactly as :meth:`PCAVideoCodec.encode_video` packs them
    (latent 0 = frame 0 in all 4 slots); up to ``max_blocks`` blocks, drawn at random with
    ``seed``, give the mean and the top ``channels`` right singular vectors (float64 SVD).

    ``normalise``: ``"global"`` divides every projection by one number, the RMS of their
    standard deviations (latents then have unit variance on average, and each channel keeps
    its share: the coarse components dominate, as they dominate the image);
    ``"channel"`` divides each by its own standard deviation (unit variance per channel, as
    Wan2.2 normalises its VAE's latents). Measured on the held-out rooms (docs/model_card.md):
    with ``"channel"`` a memory readout explains half of a revisited cell's pixel energy but
    has a mean squared error of 1.7 in normalised latent units, worse than predicting zero,
    because the many fine components do not survive reprojection; the flow-matching loss
    weighs every channel alike, so it learns mostly what cannot be learnt.

    Raises:
        MirageInputError: fewer blocks than ``channels``, a bad shape, or an unknown
            ``normalise``.
    """
    if normalise not in PCA_NORMALISATIONS:
        raise MirageInputError(f"normalise must be one of {PCA_NORMALISATIONS}, got {normalise!r}")
    if frames.ndim != 5 or frames.shape[2] != 3 or frames.dtype != torch.uint8:
        raise MirageInputError(f"frames must be uint8 [N, F, 3, H, W], got {tuple(frames.shape)} "
                               f"{frames.dtype}")
    packer = SpaceTimeToDepthCodec(stride)
    blocks = []
    for clip in frames:
        u = packer.encode_video(clip.permute(1, 0, 2, 3).unsqueeze(0).float() / 255.0)
        blocks.append(u[0].flatten(1).T)  # [L h w, D]
    x = torch.cat(blocks).double()
    if x.shape[0] < channels:
        raise MirageInputError(f"{x.shape[0]} blocks are too few for {channels} components")
    if x.shape[0] > max_blocks:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_blocks]]
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    basis = vh[:channels]
    scale = ((x - mean) @ basis.T).std(0).clamp_min(1e-6)
    if normalise == "global":
        scale = scale.pow(2).mean().sqrt().expand_as(scale).clone()
    return PCAVideoCodec(mean.float(), basis.float(), scale.float(), stride,
                         source="fitted in memory")


# ---------------------------------------------------------------------------------------------
# Wan2.2 VAE
# ---------------------------------------------------------------------------------------------
def weights_sha256(vae_dir: str | os.PathLike) -> str:
    """SHA-256 of a learned codec folder's weights file (a VAE's
    ``diffusion_pytorch_model.safetensors`` or a PCA codec's ``pca_codec.safetensors``); it
    names the weights in codec labels, so clips encoded by one codec are not trained against
    another of the same shape."""
    import hashlib

    h = hashlib.sha256()
    name = PCA_CODEC_FILE if (Path(vae_dir) / PCA_CODEC_MARKER).is_file() else _WEIGHT_FILES[0]
    with open(Path(vae_dir) / name, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def codec_stride(vae_dir: str | os.PathLike) -> int:
    """Spatial stride (pixels per latent cell) of the codec in a weights directory's ``vae/``
    folder (or the folder itself), read from its files without loading it: a PCA codec's
    marker, a small VAE's layout (8), else the diffusers config's ``scale_factor_spatial``
    (Wan2.2-TI2V-5B: 16, the default when the config does not say).

    Raises:
        MirageInputError: no codec files there (names the folder).
    """
    d = Path(vae_dir)
    if not any((d / n).exists() for n in (PCA_CODEC_MARKER, SMALL_VAE_MARKER, "config.json")):
        d = d / "vae"
    if (d / PCA_CODEC_MARKER).is_file():
        return int(json.loads((d / PCA_CODEC_MARKER).read_text())["stride"])
    if (d / SMALL_VAE_MARKER).is_file():
        return int(WAN22_SMALL_VAE_CONFIG["scale_factor_spatial"])
    if (d / "config.json").is_file():
        return int(json.loads((d / "config.json").read_text()).get("scale_factor_spatial", 16))
    raise MirageInputError(f"no codec in {str(vae_dir)!r} (neither {PCA_CODEC_MARKER}, "
                           f"{SMALL_VAE_MARKER} nor a diffusers config.json)")


def is_small_vae_dir(vae_dir: str | os.PathLike) -> bool:
    """Whether ``vae_dir`` is a small VAE folder written by ``mirage codec train``."""
    return (Path(vae_dir) / SMALL_VAE_MARKER).is_file()


def _resolve_vae_dir(path: str | os.PathLike) -> Path:
    """Find the diffusers VAE folder: ``path`` itself or ``path/vae``. Checks files exist and
    that the config is the Wan2.2-TI2V-5B VAE's (``MirageInputError`` naming the key)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WeightsNotFoundError(
            f"Wan2.2 VAE directory {str(root)!r} does not exist. Expected a diffusers-format "
            f"VAE folder (config.json + diffusion_pytorch_model.safetensors) or a pipeline root "
            f"with a vae/ subfolder.\n{WAN22_VAE_DOWNLOAD_HINT}"
        )
    candidates = [root, root / "vae"]
    vae_dir = next((c for c in candidates if (c / "config.json").is_file()), None)
    if vae_dir is None:
        raise WeightsNotFoundError(
            f"No config.json in {str(root)!r} nor in {str(root / 'vae')!r}. Expected a "
            f"diffusers-format Wan2.2 VAE folder (config.json + "
            f"diffusion_pytorch_model.safetensors) or a pipeline root with a vae/ subfolder."
            f"\n{WAN22_VAE_DOWNLOAD_HINT}"
        )
    try:
        cfg = json.loads((vae_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(
            f"Cannot read {str(vae_dir / 'config.json')!r}: {e}\n{WAN22_VAE_DOWNLOAD_HINT}"
        ) from e
    cls_name = cfg.get("_class_name", "AutoencoderKLWan") if isinstance(cfg, dict) else None
    if cls_name != "AutoencoderKLWan":
        raise WeightsNotFoundError(
            f"{str(vae_dir / 'config.json')!r} describes {cls_name!r}, not AutoencoderKLWan; "
            f"this is not a Wan VAE folder.\n{WAN22_VAE_DOWNLOAD_HINT}"
        )
    from mirage_core.generator.configs import check_vae_config
    from mirage_core.generator.loading import _read_marker

    # a Wan2.1 VAE or another layout is refused naming the key, before any weights are read;
    # sizes may differ only in a build_tiny_weights directory (marker at the pipeline root)
    tiny = any(bool(_read_marker(d).get("tiny")) for d in (vae_dir, vae_dir.parent))
    check_vae_config(cfg, str(vae_dir), tiny=tiny, small=is_small_vae_dir(vae_dir))
    if not any((vae_dir / f).is_file() for f in _WEIGHT_FILES):
        raise WeightsNotFoundError(
            f"Wan2.2 VAE directory {str(vae_dir)!r} has config.json but no weights (expected one "
            f"of {', '.join(_WEIGHT_FILES)}).\n{WAN22_VAE_DOWNLOAD_HINT}"
        )
    return vae_dir


class WanVAECodec(VideoCodec):
    """The Wan2.2-TI2V-5B VAE (diffusers ``AutoencoderKLWan``) as a :class:`LatentCodec`.

    Spatial stride 16, temporal stride 4, 48 latent channels. Images ``[0, 1]`` are mapped to
    ``[-1, 1]``; single images are encoded as 1-frame videos. Latents are the posterior *mode*
    (deterministic), normalised per channel: ``z = (mode - latents_mean) / latents_std``
    (the space the Wan2.2 DiT works in); :meth:`decode` undoes that before the decoder.

    Shapes:
        encode:        ``[B, 3, H, W]``        -> ``[B, 48, H/16, W/16]``
        decode:        ``[B, 48, h, w]``       -> ``[B, 3, 16h, 16w]``
        encode_video:  ``[B, 3, T, H, W]``     -> ``[B, 48, 1 + (T-1)//4, H/16, W/16]``, T = 4k+1
        decode_video:  ``[B, 48, t, h, w]``    -> ``[B, 3, 1 + 4(t-1), 16h, 16w]``

    Build with :meth:`from_pretrained` (local weights) or :meth:`from_config` (random weights,
    tests and timing only). The wrapped model is in eval mode with ``requires_grad=False``;
    inference runs under ``torch.no_grad()``. Not thread-safe (the diffusers model keeps a
    per-call feature cache on itself).
    """

    def __init__(self, vae: Any, name: str, source: str, device: str | torch.device = "cpu"):
        """Wrap an existing ``AutoencoderKLWan``. Prefer the ``from_*`` constructors.

        Args:
            vae: a ``diffusers.AutoencoderKLWan`` (moved to ``device``, set to eval, frozen).
            name: codec name (``"wan"``, ``"wan_tiny"``, ``"wan_full"``).
            source: where the weights came from, shown in :attr:`label`.
            device: torch device for inference.
        """
        cfg = vae.config
        if cfg.latents_mean is None or cfg.latents_std is None:
            raise ValueError("AutoencoderKLWan config lacks latents_mean / latents_std")
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError(
                f"latents_mean/std have {len(cfg.latents_mean)}/{len(cfg.latents_std)} entries, "
                f"expected z_dim = {cfg.z_dim}"
            )
        self.device = torch.device(device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.name = name
        self.source = source
        self.channels = int(cfg.z_dim)
        self.stride = int(cfg.scale_factor_spatial)
        self.temporal_stride = int(cfg.scale_factor_temporal)
        self.dtype = next(self.vae.parameters()).dtype
        shape = (1, self.channels, 1, 1, 1)
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape).to(self.device)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape).to(self.device)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        tiling: bool = False,
    ) -> WanVAECodec:
        """Load a diffusers-format Wan VAE from a local directory. Never downloads.

        Args:
            path: the VAE folder itself (``config.json`` + ``diffusion_pytorch_model.*``) or a
                pipeline root holding it as ``vae/``.
            device: torch device to run on.
            dtype: parameter dtype (float32, or bfloat16 on GPU). Outputs are always float32.
            tiling: enable diffusers' spatial tiling (lower memory at large resolutions).

        Raises:
            WeightsNotFoundError: directory, ``config.json`` or weight file missing/unreadable;
                the message names the directory and how to fetch the files.
            MirageInputError: a config that is not the Wan2.2-TI2V-5B VAE (e.g. Wan2.1's,
                z_dim 16), naming the key (:func:`~mirage_core.generator.configs.
                check_vae_config`).
        """
        from diffusers import AutoencoderKLWan

        vae_dir = _resolve_vae_dir(path)
        try:
            vae = AutoencoderKLWan.from_pretrained(
                str(vae_dir), torch_dtype=dtype, local_files_only=True
            )
        except OSError as e:
            raise WeightsNotFoundError(
                f"Could not load the Wan VAE from {str(vae_dir)!r}: {e}\n{WAN22_VAE_DOWNLOAD_HINT}"
            ) from e
        if tiling:
            vae.enable_tiling()
        if is_small_vae_dir(vae_dir):
            source = (f"small VAE trained by `mirage codec train` (weights sha256 "
                      f"{weights_sha256(vae_dir)[:16]}), from {vae_dir}")
        else:
            source = f"pretrained weights from {vae_dir}"
        return cls(vae, name="wan", source=source, device=device)

    @classmethod
    def from_config(
        cls,
        size: str = "tiny",
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        tiling: bool = False,
    ) -> WanVAECodec:
        """Build the Wan2.2 VAE architecture with random weights (for tests and timing).

        Args:
            size: ``"full"`` = :data:`WAN22_VAE_CONFIG` (705M params), ``"tiny"`` = same layout
                with :data:`WAN22_TINY_OVERRIDES` (~8M params). Both: 48 channels, stride 16.
            seed: seed for the weight initialisation (the global RNG state is left untouched).
            device, dtype, tiling: as in :meth:`from_pretrained`.

        The outputs of a random-weight VAE are meaningless images; only shapes, timing and
        plumbing are real.
        """
        from diffusers import AutoencoderKLWan

        if size not in ("full", "tiny"):
            raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
        config = dict(WAN22_VAE_CONFIG)
        if size == "tiny":
            config.update(WAN22_TINY_OVERRIDES)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKLWan(**config)
        if dtype != torch.float32:
            # nn.Module.to: ModelMixin.to would warn about keep-in-fp32 modules (there are none).
            torch.nn.Module.to(vae, dtype=dtype)
        if tiling:
            vae.enable_tiling()
        return cls(
            vae,
            name=f"wan_{size}",
            source=f"RANDOM weights ({size} config, seed {seed})",
            device=device,
        )

    # -- description ----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return (
            f"Wan2.2 VAE (AutoencoderKLWan, {self.channels} ch, stride {self.stride}, "
            f"temporal {self.temporal_stride}), {self.source}"
        )

    def num_parameters(self) -> int:
        """Total parameter count of the wrapped VAE."""
        return sum(p.numel() for p in self.vae.parameters())

    def to(self, device: str | torch.device) -> WanVAECodec:
        """Move the VAE (and its normalisation constants) to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self.vae.to(self.device)
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        return self

    # -- normalisation --------------------------------------------------------------------------
    def _normalise(self, mode: torch.Tensor) -> torch.Tensor:
        return (mode.to(torch.float32) - self._mean) / self._std

    def _denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(torch.float32) * self._std + self._mean

    # -- video API ------------------------------------------------------------------------------
    def _encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = video.to(device=self.device, dtype=self.dtype) * 2.0 - 1.0
        posterior = self.vae.encode(x).latent_dist
        return self._normalise(posterior.mode())

    def _decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        z = self._denormalise(latents.to(self.device)).to(self.dtype)
        x = self.vae.decode(z).sample
        return (x.to(torch.float32) + 1.0) * 0.5

    def stream_decoder(self, cache_device: str | torch.device | None = None) -> StreamDecoder:
        """A :class:`StreamDecoder` that carries the causal decoder cache from call to call.

        Decoding a video chunk by chunk through it gives the frames of one
        :meth:`decode_video` of the whole latent video: no seam at chunk boundaries. Pass the
        previous chunk's overlap latents with ``overlap=`` (checked, not re-decoded).

        Args:
            cache_device: where the cache waits between calls (e.g. ``"cpu"`` when the VAE is
                offloaded between chunks); ``None`` = it stays on :attr:`device`.
        """
        return _WanStreamDecoder(self, cache_device)


# ---------------------------------------------------------------------------------------------
# Streaming (chunk-by-chunk) decoding
# ---------------------------------------------------------------------------------------------
class StreamDecoder(abc.ABC):
    """Decodes one latent video piece by piece, with the result of one continuous decode.

    A chunked rollout generates a video's latents a chunk at a time, and consecutive chunks
    overlap by the latent(s) the next chunk was conditioned on. Decoding each chunk on its own
    restarts a causal video decoder (the Wan2.2 VAE): the chunk's first latent, which
    summarises 4 frames of the continuous video, is decoded as if it were a lone first frame,
    and every later frame of the chunk sees a wrong temporal context. That is a seam at every
    chunk boundary. A stream decoder keeps the decoder's causal state between calls instead.

    Contract (``z`` = the whole latent video ``[B, C, t, h, w]``, split into consecutive
    pieces ``z[:, :, a_k : b_k]`` with ``a_0 = 0`` and ``a_{k+1} <= b_k``)::

        s = codec.stream_decoder()
        frames = [s.decode(z[:, :, a_k : b_k], overlap=b_{k-1} - a_k) for k ...]
        torch.cat(frames, dim=2) == codec.decode_video(z)   # up to float rounding

    The ``overlap`` leading latents of a call were already decoded: they must equal the last
    ``overlap`` latents passed to the previous call exactly (checked), and emit no frames.
    Every new latent emits :attr:`LatentCodec.temporal_stride` frames, except the very first
    latent of the stream, which emits one (causal VAE: latent 0 <-> frame 0, latent ``j`` <->
    frames ``4j-3 .. 4j``).

    Attributes:
        latents_seen: latent frames decoded so far.
        frames_emitted: RGB frames returned so far.
    """

    def __init__(self, codec: LatentCodec) -> None:
        self.codec = codec
        self.latents_seen = 0
        self.frames_emitted = 0
        self._tail: torch.Tensor | None = None  # the previous call's latents (overlap check)

    def reset(self) -> None:
        """Forget everything: the next call starts a new video."""
        self.latents_seen = 0
        self.frames_emitted = 0
        self._tail = None

    def decode(self, latents: torch.Tensor, overlap: int = 0) -> torch.Tensor:
        """Decode the next piece ``[B, C, t, h, w]`` of the video (see the class docstring).

        Args:
            latents: normalised latents; the first ``overlap`` frames were decoded already.
            overlap: number of leading latent frames shared with the previous call's trailing
                ones (0 on the first call).

        Returns:
            float32 frames ``[B, 3, n, h*s, w*s]`` in ``[0, 1]`` on the codec's device, with
            ``n = temporal_stride * (t - overlap)``, less ``temporal_stride - 1`` on the
            stream's first call (its first latent emits one frame).

        Raises:
            ShapeError: not ``[B, C, t, h, w]``, batch or grid size differ from earlier calls,
                or no new latent after the overlap.
            MirageInputError: NaN/inf, or the overlap latents differ from those decoded.
        """
        z = self.codec._validate_latents(latents, ndim=5)
        overlap = int(overlap)
        t = z.shape[2]
        if overlap < 0 or overlap >= t:
            raise ShapeError(
                f"overlap must be in [0, {t - 1}] for a piece of {t} latent frames (at least "
                f"one new latent per call), got {overlap}"
            )
        tail = self._tail
        if tail is not None and (z.shape[0], *z.shape[3:]) != (tail.shape[0], *tail.shape[3:]):
            raise ShapeError(
                f"latents {tuple(z.shape)} do not continue the stream's video "
                f"(B, h, w) = ({tail.shape[0]}, {tail.shape[3]}, {tail.shape[4]}); "
                f"call reset() to start a new one"
            )
        if overlap:
            have = 0 if tail is None else tail.shape[2]
            if overlap > have:
                raise ShapeError(
                    f"overlap {overlap} but the previous call passed {have} latent frame(s)"
                )
            prev = tail[:, :, have - overlap:]
            if not torch.equal(z[:, :, :overlap].to(prev.device, prev.dtype), prev):
                raise MirageInputError(
                    f"the {overlap} overlap latent frame(s) differ from the last ones decoded; "
                    f"pass the same tensors (or overlap=0 for a video that continues anew)"
                )
        new = z[:, :, overlap:].to(self.codec.device)
        with torch.no_grad():
            x = self._decode_new(new, first=self.latents_seen == 0)
        self._tail = z.detach().to(self.codec.device, torch.float32)
        self.latents_seen += new.shape[2]
        self.frames_emitted += x.shape[2]
        return x.to(torch.float32).clamp_(0.0, 1.0)

    @abc.abstractmethod
    def _decode_new(self, latents: torch.Tensor, first: bool) -> torch.Tensor:
        """New latents ``[B, C, t, h, w]`` on the codec's device -> ``[B, 3, n, H, W]``."""


class _FrameWiseStreamDecoder(StreamDecoder):
    """For codecs whose latent frames decode independently (:class:`SpaceToDepthCodec`)."""

    def _decode_new(self, latents: torch.Tensor, first: bool) -> torch.Tensor:
        B, C, t, h, w = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(B * t, C, h, w)
        x = self.codec._decode(flat)  # [B*t, 3, H, W]
        return x.reshape(B, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


class _PackedStreamDecoder(StreamDecoder):
    """For :class:`SpaceTimeToDepthCodec`: latents decode independently; only the stream's
    first latent is special (it emits one frame)."""

    def _decode_new(self, latents: torch.Tensor, first: bool) -> torch.Tensor:
        return self.codec._decode_video(latents, first=first)


class _WanStreamDecoder(StreamDecoder):
    """The Wan2.2 VAE's causal decoder with its feature cache carried across calls.

    This runs the loop of diffusers' ``AutoencoderKLWan._decode`` (and ``tiled_decode`` when
    tiling applies; diffusers 0.42) one call at a time: ``post_quant_conv`` and the decoder,
    one latent frame per step, with ``first_chunk=True`` only for the stream's first latent.
    The cache is this object's own list (one per spatial tile), not the model's ``_feat_map``,
    so ``encode``/``decode`` calls on the same VAE between pieces leave the stream intact.
    ``test_codecs.py`` pins the result to ``AutoencoderKLWan.decode`` of the whole video.

    Memory: the cache holds the last 2 time steps of every causal convolution's input, what a
    continuous decode holds anyway, but now also between calls: 6.0 GiB in float32 (3.0 in
    bfloat16) for the full VAE at 704x1280, measured on shapes; with diffusers' default
    spatial tiling one cache per tile, 1.65x that in all (the tiles overlap). With
    ``cache_device`` (e.g. ``"cpu"``) a cache is parked there except while its tile is being
    decoded.
    """

    def __init__(self, codec: WanVAECodec, cache_device: str | torch.device | None) -> None:
        super().__init__(codec)
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self._n_conv = sum(isinstance(mod, WanCausalConv3d) for mod in codec.vae.decoder.modules())
        self._cache_device = None if cache_device is None else torch.device(cache_device)
        self._caches: dict[tuple[int, int], list] = {}  # (tile row, tile col) -> feat_cache
        self._tiled: bool | None = None  # decided on the first call, as diffusers does

    def reset(self) -> None:
        super().reset()
        self._caches = {}
        self._tiled = None

    @staticmethod
    def _place(cache: list, device: torch.device) -> None:
        for i, c in enumerate(cache):
            if isinstance(c, torch.Tensor):  # entries may be None or diffusers' "Rep" marker
                cache[i] = c.to(device)

    def _frames(self, x: torch.Tensor, key: tuple[int, int], first: bool) -> torch.Tensor:
        """Denormalised latents ``[B, C, t, h, w]`` -> patchified decoder output, 1 step/frame."""
        vae = self.codec.vae
        cache = self._caches.setdefault(key, [None] * self._n_conv)
        self._place(cache, x.device)
        try:
            x = vae.post_quant_conv(x)  # 1x1x1: frame-wise
            out = []
            for i in range(x.shape[2]):
                out.append(vae.decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0],
                                       first_chunk=first and i == 0))
        finally:
            if self._cache_device is not None:
                self._place(cache, self._cache_device)
        return torch.cat(out, dim=2)

    def _tiled_frames(self, z: torch.Tensor, first: bool) -> torch.Tensor:
        """``AutoencoderKLWan.tiled_decode`` (diffusers 0.42) with a cache per tile."""
        vae = self.codec.vae
        height, width = z.shape[-2:]
        s = vae.spatial_compression_ratio
        p = vae.config.patch_size or 1
        sample_h, sample_w = height * s // p, width * s // p
        lat_min_h, lat_min_w = vae.tile_sample_min_height // s, vae.tile_sample_min_width // s
        lat_stride_h = vae.tile_sample_stride_height // s
        lat_stride_w = vae.tile_sample_stride_width // s
        stride_h, stride_w = vae.tile_sample_stride_height // p, vae.tile_sample_stride_width // p
        blend_h = vae.tile_sample_min_height // p - stride_h
        blend_w = vae.tile_sample_min_width // p - stride_w
        rows = []
        for i in range(0, height, lat_stride_h):
            rows.append([
                self._frames(z[:, :, :, i:i + lat_min_h, j:j + lat_min_w], (i, j), first)
                for j in range(0, width, lat_stride_w)
            ])
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
                if j > 0:
                    tile = vae.blend_h(row[j - 1], tile, blend_w)
                result_row.append(tile[:, :, :, :stride_h, :stride_w])
            result_rows.append(torch.cat(result_row, dim=-1))
        return torch.cat(result_rows, dim=3)[:, :, :, :sample_h, :sample_w]

    def _decode_new(self, latents: torch.Tensor, first: bool) -> torch.Tensor:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        codec, vae = self.codec, self.codec.vae
        x = codec._denormalise(latents).to(codec.dtype)
        if self._tiled is None:
            h, w = x.shape[-2:]
            s = vae.spatial_compression_ratio
            self._tiled = bool(vae.use_tiling) and (
                w > vae.tile_sample_min_width // s or h > vae.tile_sample_min_height // s
            )
        out = self._tiled_frames(x, first) if self._tiled else self._frames(x, (0, 0), first)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        out = torch.clamp(out, min=-1.0, max=1.0)
        return (out.to(torch.float32) + 1.0) * 0.5


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------
CODEC_NAMES = ("space_to_depth", "space_time_to_depth", "wan_tiny", "wan_full", "wan")


def codec_from_spec(spec: str, device: str | torch.device = "cpu") -> SpaceTimeToDepthCodec:
    """The analytic video codec a spec names: ``"space_time_to_depth"`` or
    ``"space_time_to_depth:S"`` (spatial stride ``S``, default 2). Used by weights markers,
    training configs and ``mirage data synth --vae``.

    Raises:
        MirageInputError: another name, or a stride that is not a positive integer.
    """
    name, _, arg = str(spec).partition(":")
    if name != "space_time_to_depth" or not (arg == "" or (arg.isdigit() and int(arg) > 0)):
        raise MirageInputError(
            f"unknown codec spec {spec!r}; expected 'space_time_to_depth' or "
            f"'space_time_to_depth:S' (S = spatial stride, a positive integer)"
        )
    return SpaceTimeToDepthCodec(int(arg or 2), device=device)


def check_codec_spec(spec: str) -> Path | None:
    """Check the codec a training config or weights builder names.

    Args:
        spec: ``"space_time_to_depth[:S]"`` (analytic, :func:`codec_from_spec`), a
            :class:`PCAVideoCodec` folder (``mirage codec fit-pca``), or a folder holding a
            small VAE written by ``mirage codec train`` (the VAE folder itself or the run's
            ``--out`` with ``vae/`` in it).
    Returns:
        ``None`` for an analytic spec, else the codec folder.
    Raises:
        MirageInputError: a bad analytic spec, a path that does not exist, or a VAE folder
            that is not a small one (the 5B VAE belongs in a ``model_size: full`` weights
            directory).
        WeightsNotFoundError: the VAE folder lacks its config or weights.
    """
    if str(spec).partition(":")[0] == "space_time_to_depth":
        codec_from_spec(spec)
        return None
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise MirageInputError(
            f"codec {spec!r} is neither 'space_time_to_depth[:S]' nor a folder; make one with "
            f"`mirage codec fit-pca --data STORE --out DIR` (or `mirage codec train`) and "
            f"give DIR"
        )
    if (path / PCA_CODEC_MARKER).is_file():
        PCAVideoCodec.from_dir(path)  # readable
        return path
    if (path / "vae" / SMALL_VAE_MARKER).is_file():
        path = path / "vae"
    vae_dir = _resolve_vae_dir(path)
    if not is_small_vae_dir(vae_dir):
        raise MirageInputError(
            f"codec {spec!r}: {vae_dir} has no {SMALL_VAE_MARKER}; only codecs written by "
            f"`mirage codec fit-pca` or `mirage codec train` can be a training codec"
        )
    return vae_dir


def make_codec(name: str, weights: str | os.PathLike | None = None, **kw: Any) -> LatentCodec:
    """Build a codec by name.

    Args:
        name: ``"space_to_depth"`` (kw: ``stride``, ``device``), ``"space_time_to_depth"``
            (the lossless video codec with Wan's latent layout; kw: ``stride``, ``device``),
            ``"wan_tiny"`` / ``"wan_full"``
            (random-weight Wan2.2 VAE; kw: ``seed``, ``device``, ``dtype``, ``tiling``), or
            ``"wan"`` (pretrained Wan2.2 VAE from ``weights``; kw: ``device``, ``dtype``,
            ``tiling``).
        weights: local directory with the VAE (only for ``"wan"``, where it is required).

    Raises:
        ValueError: unknown name, ``"wan"`` without ``weights``, or ``weights`` given for a
            codec that takes none.
        WeightsNotFoundError: ``"wan"`` and the directory lacks the files.
    """
    if name not in CODEC_NAMES:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODEC_NAMES)}")
    if name == "wan":
        if weights is None:
            raise ValueError(
                "codec 'wan' loads the pretrained Wan2.2 VAE and needs weights=DIR (a local "
                "diffusers VAE folder or pipeline root); use 'wan_tiny'/'wan_full' for random "
                f"weights.\n{WAN22_VAE_DOWNLOAD_HINT}"
            )
        return WanVAECodec.from_pretrained(weights, **kw)
    if weights is not None:
        raise ValueError(f"codec {name!r} takes no weights (got weights={str(weights)!r})")
    if name == "space_to_depth":
        return SpaceToDepthCodec(**kw)
    if name == "space_time_to_depth":
        return SpaceTimeToDepthCodec(**kw)
    return WanVAECodec.from_config(size=name.removeprefix("wan_"), **kw)
