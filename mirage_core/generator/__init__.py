"""The Mirage generator: Wan2.2-TI2V-5B + memory side branch, segment-aware RoPE, UniPC.

Modules:
    configs       architecture constants (full Wan2.2-TI2V-5B and the tiny test variant)
    segment_rope  segment labels and the segment-aware RoPE tables (+ slow reference)
    side_branch   the ControlNet/VACE-style memory side branch (zero-initialised outputs)
    transformer   MirageTransformer: backbone + branch with per-token timesteps
    sampler       UniPC flow-matching denoising of one chunk
    text          UMT5 prompt encoding, precomputed prompt embeddings
    loading       local-directory loading, tiny random weights, GPU offload

ROS-free (no ROS client library is imported), and nothing downloads weights.
"""

from mirage_core.generator.loading import MirageModels, build_tiny_weights, load_models
from mirage_core.generator.sampler import SamplerConfig, denoise_chunk
from mirage_core.generator.segment_rope import SegmentLabel, SegmentRoPEConfig
from mirage_core.generator.side_branch import MemorySideBranch, SideBranchConfig
from mirage_core.generator.transformer import MirageTransformer

__all__ = [
    "MemorySideBranch",
    "MirageModels",
    "MirageTransformer",
    "SamplerConfig",
    "SegmentLabel",
    "SegmentRoPEConfig",
    "SideBranchConfig",
    "build_tiny_weights",
    "denoise_chunk",
    "load_models",
]
