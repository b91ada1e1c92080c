"""Perception adapters: depth (+ sky) and dynamic-object masks behind two small interfaces.

=====================  ==========================================================  ==========
provider               what                                                        needs
=====================  ==========================================================  ==========
GivenDepth             ground-truth depth passed in (dataset), per frame index     -
SimulatorDepth         depth + sky rendered by the PyBullet scene                  pybullet
ConstantDepth          a fronto-parallel plane (smoke tests only)                  -
DepthAnything3Depth    Depth Anything 3 from a local weights dir; scale policies   DA3 [1]
NoMasks                no dynamic objects                                          -
GivenMasks             dynamic masks passed in                                     -
SimulatorMasks         the scene's dynamic-object segmentation                     pybullet
Sam3Masks              SAM3 text-prompted instances from a local weights dir       -
=====================  ==========================================================  ==========

[1] ``scripts/install_da3.sh``; see ``docs/perception.md`` for why not ``pip install
depth-anything-3``.

Importing this package never imports depth_anything_3, transformers' SAM3, torchvision or
pybullet; the DA3 and SAM3 adapters import them when constructed/loaded.
"""

from mirage_core.perception.base import (
    DepthEstimate,
    DepthProvider,
    MaskProvider,
    MissingDependencyError,
)
from mirage_core.perception.factory import (
    DEPTH_SPECS,
    MASK_SPECS,
    make_depth_provider,
    make_mask_provider,
)
from mirage_core.perception.given import (
    ConstantDepth,
    GivenDepth,
    GivenMasks,
    NoMasks,
    load_given_depth,
)
from mirage_core.perception.scale import SCALE_POLICIES, ScaleAligner, align_scale_to_reference
from mirage_core.perception.sim import SimulatorDepth, SimulatorMasks


def __getattr__(name: str):
    # The DA3 and SAM3 adapters are light to import (their heavy dependencies load on
    # construction), but are resolved lazily to keep this package's import minimal.
    if name == "DepthAnything3Depth":
        from mirage_core.perception.da3 import DepthAnything3Depth

        return DepthAnything3Depth
    if name == "Sam3Masks":
        from mirage_core.perception.sam3 import Sam3Masks

        return Sam3Masks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEPTH_SPECS",
    "MASK_SPECS",
    "SCALE_POLICIES",
    "ConstantDepth",
    "DepthAnything3Depth",
    "DepthEstimate",
    "DepthProvider",
    "GivenDepth",
    "GivenMasks",
    "MaskProvider",
    "MissingDependencyError",
    "NoMasks",
    "Sam3Masks",
    "ScaleAligner",
    "SimulatorDepth",
    "SimulatorMasks",
    "align_scale_to_reference",
    "load_given_depth",
    "make_depth_provider",
    "make_mask_provider",
]
