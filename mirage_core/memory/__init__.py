"""Spatial memories: Mirage's latent memory and the RGB point-cloud baseline."""

from mirage_core.memory.base import Observation, Readout, SpatialMemory, UpdateResult
from mirage_core.memory.latent_memory import (
    MERGE_POLICIES,
    LatentSpatialMemory,
    MemoryConfig,
    MemoryStats,
)
from mirage_core.memory.rgb_cache import RGBCacheConfig, RGBPointCache

#: what conditions the generator: Mirage's latent memory or the RGB point-cloud baseline
CONDITIONING_MODES = ("latent", "rgb_cache")


def memory_for(conditioning: str, codec, device, memory_config: MemoryConfig | None = None
               ) -> SpatialMemory:
    """A fresh memory for ``conditioning`` (:data:`CONDITIONING_MODES`), on ``device``, for
    ``codec``'s latents: a :class:`LatentSpatialMemory` (``memory_config`` with the codec's
    channels and stride) or an :class:`RGBPointCache` encoding with ``codec``. The rollout
    and training both build their memory here, so they cannot disagree.

    Raises:
        MirageInputError: an unknown mode.
    """
    from dataclasses import replace

    from mirage_core.errors import MirageInputError

    if conditioning == "latent":
        return LatentSpatialMemory(replace(memory_config or MemoryConfig(), device=str(device),
                                           channels=codec.channels, stride=codec.stride))
    if conditioning == "rgb_cache":
        return RGBPointCache(codec, RGBCacheConfig(device=str(device)))
    raise MirageInputError(f"conditioning must be one of {CONDITIONING_MODES}, got "
                           f"{conditioning!r}")

__all__ = [
    "CONDITIONING_MODES",
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
    "memory_for",
]
