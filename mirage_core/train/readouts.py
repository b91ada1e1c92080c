"""Training inputs of one chunk, built exactly as :class:`~mirage_core.rollout.MirageRollout`
builds them for its first chunk (no train/test skew).

Per clip (``L >= chunk_latent_frames`` latent frames; latent ``j`` at the pose of RGB frame
``4 j``):

1. poses re-expressed relative to latent 0 (the rollout's world frame,
   ``Trajectory.relative_to_first``);
2. a fresh :class:`~mirage_core.memory.LatentSpatialMemory` (the rollout's ``MemoryConfig``
   with the models' device, channels and stride) is initialised with latent 0, its depth,
   dynamic/sky mask and pose -- the same :class:`~mirage_core.memory.Observation` the rollout
   writes for the input image;
3. one batched readout at the poses of target latents ``1 .. n_new``;
4. the sequence ``[REFERENCE, PRECEDING, TARGET x n_new]`` (REFERENCE = PRECEDING = latent 0
   for the first chunk), readout and mask zero on the clean frames.

``test/test_train.py`` checks that :func:`chunk_inputs` returns the very tensors the rollout
passes to the sampler for the same image, depth, poses and intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mirage_core.data.clip import Clip
from mirage_core.errors import ShapeError
from mirage_core.generator.segment_rope import SegmentLabel
from mirage_core.geometry import se3_inverse
from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation

__all__ = ["ChunkInputs", "chunk_inputs", "chunk_labels"]


def chunk_labels(chunk_latent_frames: int = 9, use_reference: bool = True) -> list[SegmentLabel]:
    """``[REFERENCE?, PRECEDING, TARGET x (chunk_latent_frames - 1)]`` as the rollout uses."""
    return ([SegmentLabel.REFERENCE] if use_reference else []) + [SegmentLabel.PRECEDING] + [
        SegmentLabel.TARGET
    ] * (chunk_latent_frames - 1)


@dataclass
class ChunkInputs:
    """One training chunk.

    Attributes:
        clean: ``[1, C, n_clean, h, w]`` float32 clean latents (reference?, preceding).
        targets: ``[1, C, n_new, h, w]`` float32 ground-truth target latents ``x0``.
        readout: ``[1, C, F, h, w]`` float32 memory readout, zeros on clean frames.
        mask: ``[1, F, h, w]`` float32 visibility (1 = a memory point projects there).
        labels: ``[F]`` segment labels, ``F = n_clean + n_new``.
        hole_rate: per target latent, fraction of cells with no memory point.
    """

    clean: torch.Tensor
    targets: torch.Tensor
    readout: torch.Tensor
    mask: torch.Tensor
    labels: list[SegmentLabel]
    hole_rate: list[float]


def _relative_poses(T_world_cam: torch.Tensor) -> torch.Tensor:
    """``[L, 4, 4]`` float64 poses relative to pose 0, as ``Trajectory.relative_to_first``."""
    T = T_world_cam.to(torch.float64)
    if torch.allclose(T[0], torch.eye(4, dtype=torch.float64), atol=1e-9):
        return T
    out = se3_inverse(T[0]) @ T
    out[0] = torch.eye(4, dtype=torch.float64)
    return out


def chunk_inputs(
    clip: Clip,
    latent_channels: int,
    stride: int,
    device: torch.device | str = "cpu",
    chunk_latent_frames: int = 9,
    use_reference: bool = True,
    memory_config: MemoryConfig | None = None,
) -> ChunkInputs:
    """Build the first-chunk training inputs of ``clip`` (see the module docstring).

    Args:
        clip: latents ``[L, C, h, w]``, depth/mask ``[L, H, W]``, T_world_cam ``[L, 4, 4]``,
            K ``[3, 3]``; ``L >= chunk_latent_frames``.
        latent_channels, stride: the VAE's ``C`` and spatial stride (``models.vae``).
        device: where the memory and the returned tensors live (``models.device``).
        chunk_latent_frames: 9 (1 preceding + 8 targets), as :class:`RolloutConfig`.
        use_reference: prepend latent 0 as REFERENCE, as :class:`RolloutConfig`.
        memory_config: the rollout's ``RolloutConfig.memory_config`` (default
            ``MemoryConfig()``); device/channels/stride are replaced as the rollout does.
    """
    dev = torch.device(device)
    n_new = chunk_latent_frames - 1
    L, C, h, w = clip.latents.shape
    H, W = clip.image_hw
    if L < chunk_latent_frames:
        raise ShapeError(
            f"clip {clip.key!r} has {L} latent frames; a chunk needs {chunk_latent_frames}"
        )
    if C != latent_channels or (h * stride, w * stride) != (H, W):
        raise ShapeError(
            f"clip {clip.key!r}: latents {tuple(clip.latents.shape)} do not fit a "
            f"{latent_channels}-channel stride-{stride} VAE at {H}x{W}"
        )
    T_cw = se3_inverse(_relative_poses(clip.T_world_cam))
    K = clip.K.to(torch.float64)
    mc = replace(memory_config or MemoryConfig(), device=str(dev), channels=latent_channels,
                 stride=stride)
    memory = LatentSpatialMemory(mc)
    z0 = clip.latents[0].to(dev, torch.float32)  # [C, h, w]
    memory.update(Observation(
        depth=clip.depth[0].to(torch.float32).cpu(), K=K, T_cam_world=T_cw[0],
        mask=clip.mask[0].cpu().bool(), latent=z0,
    ))
    r = memory.readout(T_cw[1:chunk_latent_frames], K, (H, W))
    zhat = r.zhat.to(dev, torch.float32)  # [n_new, C, h, w]
    vis = r.mask.to(dev)  # [n_new, h, w]
    labels = chunk_labels(chunk_latent_frames, use_reference)
    n_clean = len(labels) - n_new
    readout = torch.zeros((1, zhat.shape[1], len(labels), h, w), device=dev)
    readout[0, :, n_clean:] = zhat.permute(1, 0, 2, 3)
    mask = torch.zeros((1, len(labels), h, w), device=dev)
    mask[0, n_clean:] = vis.to(torch.float32)
    z0b = z0[None, :, None]  # [1, C, 1, h, w]
    clean = torch.cat(([z0b] if use_reference else []) + [z0b], dim=2)
    targets = clip.latents[1:chunk_latent_frames].to(dev, torch.float32)
    targets = targets.permute(1, 0, 2, 3)[None]  # [1, C, n_new, h, w]
    holes = [1.0 - float(v.float().mean()) for v in vis]
    return ChunkInputs(clean, targets, readout, mask, labels, holes)
