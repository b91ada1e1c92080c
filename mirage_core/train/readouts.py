"""Training inputs of one chunk, built exactly as :class:`~mirage_core.rollout.MirageRollout`
builds them for that chunk (no train/test skew).

Per clip (``L`` latent frames; latent ``j`` at the pose of RGB frame ``4 j``) and chunk index
``k`` (``n = chunk_latent_frames - 1 = 8`` targets per chunk; chunk ``k`` targets latents
``8k+1 .. 8k+8``, so ``L >= 8(k+1) + 1``):

1. poses re-expressed relative to latent 0 (the rollout's world frame,
   ``Trajectory.relative_to_first``);
2. a fresh :class:`~mirage_core.memory.LatentSpatialMemory` (the rollout's ``MemoryConfig``
   with the models' device, channels and stride) is initialised with latent 0, its depth,
   dynamic/sky mask and pose -- the same :class:`~mirage_core.memory.Observation` the rollout
   writes for the input image;
3. for ``k > 0``: the key frames of chunks ``0 .. k-1`` (latents ``1 .. 8k``) are written in
   order, one :class:`~mirage_core.memory.Observation` each, with the clip's **per-frame
   image encodings** ``frame_latents[j]`` -- the rollout re-encodes each generated key frame
   by itself, not as a video -- and the clip's depth/mask/pose of that frame. (The rollout
   writes *generated* frames with *estimated* depth; training writes the ground truth: the
   only difference, and the one the model must learn to bridge.)
4. one batched readout at the poses of the targets;
5. the sequence ``[REFERENCE, PRECEDING, TARGET x n]``: REFERENCE = latent 0, PRECEDING =
   latent ``8k`` (the last latent of the previous chunk; latent 0 for ``k = 0``), readout and
   mask zero on the clean frames.

``test/test_train.py`` checks that :func:`chunk_inputs` returns the very tensors the rollout
passes to the sampler for the same image, depth, poses and intrinsics (first chunk), and
``test/test_train_chunks.py`` the later chunks against a rollout fed the clip's own frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.generator.segment_rope import SegmentLabel
from mirage_core.geometry import se3_inverse
from mirage_core.memory import MemoryConfig, Observation, memory_for

__all__ = ["ChunkInputs", "chunk_inputs", "chunk_labels", "trainable_chunks"]


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
        hole_rate: per target latent, fraction of cells the readout leaves empty (after
            the hole fill, when ``memory_config.hole_fill`` is on).
    """

    clean: torch.Tensor
    targets: torch.Tensor
    readout: torch.Tensor
    mask: torch.Tensor
    labels: list[SegmentLabel]
    hole_rate: list[float]


def trainable_chunks(clip: Clip, chunk_latent_frames: int = 9) -> int:
    """How many chunks of ``clip`` can be trained: ``(L - 1) // (chunk_latent_frames - 1)``
    with ``frame_latents``, else 1 (chunk 0 needs only latent 0 in the memory); 0 if the clip
    is shorter than one chunk."""
    n_new = chunk_latent_frames - 1
    full = max(0, (clip.num_latent_frames - 1) // n_new)
    return full if clip.frame_latents is not None else min(full, 1)


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
    chunk: int = 0,
    conditioning: str = "latent",
    codec=None,
) -> ChunkInputs:
    """Build the training inputs of chunk ``chunk`` of ``clip`` (see the module docstring).

    Args:
        clip: latents ``[L, C, h, w]``, depth/mask ``[L, H, W]``, T_world_cam ``[L, 4, 4]``,
            K ``[3, 3]``, for ``chunk > 0`` also frame_latents ``[L, C, h, w]``;
            ``L >= (chunk + 1) (chunk_latent_frames - 1) + 1``.
        latent_channels, stride: the VAE's ``C`` and spatial stride (``models.vae``).
        device: where the memory and the returned tensors live (``models.device``).
        chunk_latent_frames: 9 (1 preceding + 8 targets), as :class:`RolloutConfig`.
        use_reference: prepend latent 0 as REFERENCE, as :class:`RolloutConfig`.
        memory_config: the rollout's ``RolloutConfig.memory_config`` (default
            ``MemoryConfig()``); device/channels/stride are replaced as the rollout does.
        chunk: ``k >= 0``; chunk ``k`` predicts latents ``(k n + 1) .. (k n + n)``.
        conditioning: ``"latent"`` (the latent memory, steps 2-4 above) or ``"rgb_cache"``
            (the RGB point-cloud baseline, as the rollout's ``conditioning="rgb_cache"``: the
            same frames written as images -- latent 0 and the key frames' ``frame_latents``
            decoded by ``codec``, since a store holds latents, where the rollout writes the
            input image itself -- then rasterised at the targets' poses and encoded).
        codec: the models' codec (``models.vae``); needed for ``"rgb_cache"``.

    Raises:
        ShapeError: the clip is too short for chunk ``k``, or does not fit the VAE.
        MirageInputError: ``k > 0`` on a clip without ``frame_latents``.
    """
    dev = torch.device(device)
    n_new = chunk_latent_frames - 1
    L, C, h, w = clip.latents.shape
    H, W = clip.image_hw
    first = int(chunk) * n_new + 1  # the first target latent
    if chunk < 0 or L < first + n_new:
        raise ShapeError(
            f"clip {clip.key!r} has {L} latent frames; chunk {chunk} needs {first + n_new} "
            f"({chunk_latent_frames} per chunk, {n_new} new)"
        )
    if chunk > 0 and clip.frame_latents is None:
        raise MirageInputError(
            f"clip {clip.key!r} has no frame_latents (per-frame key-frame encodings); only its "
            "chunk 0 can be trained. Re-prepare it with a current `mirage data prepare|synth`."
        )
    if C != latent_channels or (h * stride, w * stride) != (H, W):
        raise ShapeError(
            f"clip {clip.key!r}: latents {tuple(clip.latents.shape)} do not fit a "
            f"{latent_channels}-channel stride-{stride} VAE at {H}x{W}"
        )
    T_cw = se3_inverse(_relative_poses(clip.T_world_cam))
    K = clip.K.to(torch.float64)
    if conditioning == "rgb_cache" and codec is None:
        raise MirageInputError("conditioning 'rgb_cache' needs the models' codec")
    # the latent memory needs only the codec's shape (the store's latents are written as is)
    shape = codec or SimpleNamespace(channels=latent_channels, stride=stride)
    memory = memory_for(conditioning, shape, dev, memory_config)

    def frame(z: torch.Tensor) -> dict:  # what the memory stores of a frame with latent z
        if conditioning == "latent":
            return {"latent": z}
        return {"image": codec.decode(z[None])[0].cpu()}

    z0 = clip.latents[0].to(dev, torch.float32)  # [C, h, w]
    memory.update(Observation(
        depth=clip.depth[0].to(torch.float32).cpu(), K=K, T_cam_world=T_cw[0],
        mask=clip.mask[0].cpu().bool(), **frame(z0),
    ))
    for j in range(1, first):  # key frames of the earlier chunks, in the rollout's order
        memory.update(Observation(
            depth=clip.depth[j].to(torch.float32).cpu(), K=K, T_cam_world=T_cw[j],
            mask=clip.mask[j].cpu().bool(), **frame(clip.frame_latents[j].to(dev, torch.float32)),
        ))
    r = memory.readout(T_cw[first:first + n_new], K, (H, W))
    zhat = r.zhat.to(dev, torch.float32)  # [n_new, C, h, w]
    vis = r.mask.to(dev)  # [n_new, h, w]
    labels = chunk_labels(chunk_latent_frames, use_reference)
    n_clean = len(labels) - n_new
    readout = torch.zeros((1, zhat.shape[1], len(labels), h, w), device=dev)
    readout[0, :, n_clean:] = zhat.permute(1, 0, 2, 3)
    mask = torch.zeros((1, len(labels), h, w), device=dev)
    mask[0, n_clean:] = vis.to(torch.float32)
    z0b = z0[None, :, None]  # [1, C, 1, h, w]
    prev = clip.latents[first - 1].to(dev, torch.float32)[None, :, None]
    clean = torch.cat(([z0b] if use_reference else []) + [prev], dim=2)
    targets = clip.latents[first:first + n_new].to(dev, torch.float32)
    targets = targets.permute(1, 0, 2, 3)[None]  # [1, C, n_new, h, w]
    holes = [1.0 - float(v.float().mean()) for v in vis]
    return ChunkInputs(clean, targets, readout, mask, labels, holes)
