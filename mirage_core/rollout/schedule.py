"""Which latent frame is generated in which chunk, and which RGB frame's pose it uses.

Conventions (**ours**; ``docs/generator.md`` and ``docs/conventions.md``):

* The Wan2.2 VAE is causal with temporal stride 4: latent ``0`` encodes RGB frame ``0`` alone,
  latent ``j >= 1`` encodes RGB frames ``4j-3 .. 4j``. **Latent ``j`` takes the pose of RGB
  frame ``4j``** (the last frame of its group): the memory is read at that pose, and the
  decoded frame ``4j`` is the one whose depth and re-encoding are written back.
* A chunk is ``chunk_latent_frames = 9`` latent frames = 33 RGB frames, the Wan2.2-TI2V clip
  layout: its first latent is the clean *preceding* frame (the 1-frame overlap: latent 0 =
  the input image for chunk 0, else the previous chunk's last denoised latent) and the other
  8 are new *targets*. So chunk ``c`` generates latents ``8c+1 .. 8c+8`` and RGB frames
  ``32c+1 .. 32c+32``; a rollout of ``n`` chunks covers ``1 + 32 n`` RGB frames.
* The forward pass also carries the clean *reference* latent (the input image), so the
  sequence is ``[REFERENCE, PRECEDING, TARGET x 8]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirage_core.errors import MirageInputError

__all__ = ["TEMPORAL_STRIDE", "ChunkPlan", "plan_chunks", "pose_frame_of_latent"]

TEMPORAL_STRIDE = 4


def pose_frame_of_latent(j: int) -> int:
    """RGB frame whose pose latent frame ``j`` uses: ``4 j``."""
    if j < 0:
        raise MirageInputError(f"latent index must be >= 0, got {j}")
    return TEMPORAL_STRIDE * j


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk of the rollout.

    Attributes:
        index: chunk number ``c`` (0-based).
        latent_indices: global indices of the new (target) latent frames.
        pose_frames: RGB frame index whose pose each target latent uses (``4 j``).
        rgb_frames: ``(first, last)`` RGB frames this chunk adds (inclusive).
    """

    index: int
    latent_indices: tuple[int, ...]
    pose_frames: tuple[int, ...]
    rgb_frames: tuple[int, int]


def plan_chunks(num_rgb_frames: int, chunk_latent_frames: int = 9,
                num_chunks: int | None = None) -> list[ChunkPlan]:
    """Plan the chunks for a trajectory of ``num_rgb_frames`` poses (frame 0 = input image).

    Args:
        num_rgb_frames: poses available, including frame 0.
        chunk_latent_frames: latent frames per chunk including the 1-frame overlap (>= 2).
        num_chunks: chunks wanted; ``None`` = as many as fit.
    Raises:
        MirageInputError: too few poses for one chunk (or for ``num_chunks``).
    """
    if chunk_latent_frames < 2:
        raise MirageInputError(f"chunk_latent_frames must be >= 2, got {chunk_latent_frames}")
    new = chunk_latent_frames - 1
    rgb_per_chunk = TEMPORAL_STRIDE * new
    fit = (int(num_rgb_frames) - 1) // rgb_per_chunk
    if num_chunks is None:
        num_chunks = fit
    if num_chunks < 1 or num_chunks > fit:
        need = 1 + rgb_per_chunk * max(1, num_chunks)
        raise MirageInputError(
            f"the trajectory has {num_rgb_frames} poses; {max(1, num_chunks)} chunk(s) of "
            f"{chunk_latent_frames} latent frames need {need} (1 + {rgb_per_chunk} per chunk)"
        )
    plans = []
    for c in range(num_chunks):
        lat = tuple(range(new * c + 1, new * c + new + 1))
        plans.append(
            ChunkPlan(
                index=c,
                latent_indices=lat,
                pose_frames=tuple(pose_frame_of_latent(j) for j in lat),
                rgb_frames=(rgb_per_chunk * c + 1, rgb_per_chunk * (c + 1)),
            )
        )
    return plans
