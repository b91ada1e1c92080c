"""One prepared training clip: everything training needs, computed once (method.md section 5).

A clip covers ``F = 1 + 4 (L - 1)`` RGB frames and their ``L`` VAE latent frames. Latent frame
``j`` uses the pose, depth and mask of RGB frame ``4 j`` (the rollout's convention,
mirage_core/rollout/schedule.py). Training never re-encodes: the latents are stored; the
memory readouts are computed at training time from the clip's own earlier frames exactly as
at inference (initialize with latent frame 0; for chunk ``k > 0`` also write the key frames of
chunks ``0 .. k-1``; read out at the target latent frames' poses; mirage_core/train/readouts.py).

Fields (CPU tensors):
    latents: ``[L, C, h, w]`` VAE latents (C = 48 for Wan2.2, h = H/16, w = W/16); latent 0 is
        the encoding of RGB frame 0 alone (causal VAE), latents 1.. of 4-frame groups.
    depth: ``[L, H, W]`` float32 metric z-depth of RGB frame ``4 j`` (0 = unknown).
    mask: ``[L, H, W]`` bool, True on dynamic objects and sky (never stored in the memory).
    T_world_cam: ``[L, 4, 4]`` float64 OpenCV camera-to-world pose of RGB frame ``4 j``.
    K: ``[3, 3]`` float64 pixel intrinsics of the ``H x W`` frames.
    image_hw: ``(H, W)``.
    prompt: the clip's caption ("" = none).
    prompt_embeds: optional ``[1, S, D]`` precomputed UMT5 states of ``prompt``.
    key: the clip's id in its dataset (e.g. ``"re10k/abc123/000"``).
    frame_latents: optional ``[L, C, h, w]`` VAE encodings of RGB frame ``4 j`` **alone**
        (image encodes), which is what the rollout writes into the memory after each chunk
        (it re-encodes each key frame by itself). Row 0 equals ``latents[0]``. Needed to train
        chunks after the first without train/test skew; clips without it train chunk 0 only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirage_core.errors import ShapeError

__all__ = ["Clip"]


@dataclass
class Clip:
    latents: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    T_world_cam: torch.Tensor
    K: torch.Tensor
    image_hw: tuple[int, int]
    prompt: str = ""
    prompt_embeds: torch.Tensor | None = None
    key: str = ""
    frame_latents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        L = self.latents.shape[0]
        H, W = self.image_hw
        if self.latents.ndim != 4:
            raise ShapeError(f"{self.key}: latents must be [L, C, h, w], got "
                             f"{tuple(self.latents.shape)}")
        if tuple(self.depth.shape) != (L, H, W) or tuple(self.mask.shape) != (L, H, W):
            raise ShapeError(f"{self.key}: depth/mask must be [{L}, {H}, {W}], got "
                             f"{tuple(self.depth.shape)} / {tuple(self.mask.shape)}")
        if tuple(self.T_world_cam.shape) != (L, 4, 4) or tuple(self.K.shape) != (3, 3):
            raise ShapeError(f"{self.key}: T_world_cam must be [{L}, 4, 4] and K [3, 3]")
        if self.frame_latents is not None and self.frame_latents.shape != self.latents.shape:
            raise ShapeError(f"{self.key}: frame_latents must be {tuple(self.latents.shape)} "
                             f"like latents, got {tuple(self.frame_latents.shape)}")

    @property
    def num_latent_frames(self) -> int:
        return int(self.latents.shape[0])

    @property
    def num_rgb_frames(self) -> int:
        return 1 + 4 * (self.num_latent_frames - 1)
