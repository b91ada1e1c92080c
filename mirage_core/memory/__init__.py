"""Spatial memories: Mirage's latent memory and the RGB point-cloud baseline."""

from mirage_core.memory.base import Observation, Readout, SpatialMemory, UpdateResult
from mirage_core.memory.latent_memory import (
    MERGE_POLICIES,
    LatentSpatialMemory,
    MemoryConfig,
    MemoryStats,
)
from mirage_core.memory.rgb_cache import RGBCacheConfig, RGBPointCache

__all__ = [
    "MERGE_POLICIES",
    "LatentSpatialMemory",
    "MemoryConfig",
    "MemoryStats",
    "Observation",
    "RGBCacheConfig",
    "RGBPointCache",
    "Readout",
    "SpatialMemory",
    "UpdateResult",
]
