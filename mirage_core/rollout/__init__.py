"""Algorithm 1 (the chunked autoregressive rollout), its inputs, outputs and the CLI job.

Modules:
    schedule  which latent frame is generated in which chunk, and which pose it uses
    inputs    image / camera / trajectory checks (before any model loads)
    chunked   MirageRollout: readout -> denoise -> decode -> depth/masks -> re-encode -> update
    outputs   RolloutWriter: frames/, video.mp4, cameras.json, memory_stats.json
    job       ``mirage rollout`` (RolloutJobConfig, run_rollout_job)
"""

from mirage_core.rollout.chunked import ChunkResult, MirageRollout, RolloutConfig
from mirage_core.rollout.schedule import ChunkPlan, plan_chunks, pose_frame_of_latent

__all__ = [
    "ChunkPlan",
    "ChunkResult",
    "MirageRollout",
    "RolloutConfig",
    "plan_chunks",
    "pose_frame_of_latent",
]
