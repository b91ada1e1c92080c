"""Providers from CLI strings (``--depth da3:/models/DA3METRIC-LARGE``, ``--masks sim``).

Depth specs:

=================================  ============================================================
``sim``                            :class:`SimulatorDepth` (kw ``scene``, ``fps``, optional
                                   ``T_sim_world``)
``constant:Z``                     :class:`ConstantDepth` plane at ``Z`` (smoke tests only)
``given:PATH``                     :class:`GivenDepth` from ``.npy`` ``[T, H, W]`` or ``.npz``
                                   (``depth``, optional ``sky``)
``da3:DIR``                        :class:`DepthAnything3Depth`, ``scale_policy="auto"``
``da3:DIR:metric|align|none``      ... with that scale policy (``align`` =
                                   ``align_to_memory``); kw ``device``, ``process_res``,
                                   ``initial_scale``, ``min_cells``, ``downsample``,
                                   ``batch_size``
=================================  ============================================================

Mask specs: ``none``; ``sim`` (kw ``scene``, ``fps``, ``T_sim_world``); ``given:PATH`` (``.npy``
``[T, H, W]`` bool); ``sam3:DIR`` (kw ``prompts``, ``score_threshold``, ``mask_threshold``,
``device``, ``batch_size``).

``DIR`` and ``PATH`` may contain ``:``; only a trailing ``:metric|align|align_to_memory|none|auto``
is read as a policy. Keyword arguments that only some specs use (``scene``, ``fps``,
``T_sim_world``, ``device``) are ignored by the others, so a CLI can pass them always; any
other unexpected keyword raises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_core.errors import MirageInputError
from mirage_core.perception.base import DepthProvider, MaskProvider
from mirage_core.perception.given import ConstantDepth, GivenMasks, NoMasks, load_given_depth
from mirage_core.perception.sim import SimulatorDepth, SimulatorMasks

__all__ = ["DEPTH_SPECS", "MASK_SPECS", "make_depth_provider", "make_mask_provider"]

DEPTH_SPECS = ("sim", "constant:Z", "given:PATH", "da3:DIR[:metric|align|none]")
MASK_SPECS = ("none", "sim", "given:PATH", "sam3:DIR")
_SHARED_KW = {"scene", "fps", "T_sim_world", "device"}
_POLICY_ALIASES = {
    "metric": "metric",
    "align": "align_to_memory",
    "align_to_memory": "align_to_memory",
    "none": "none",
    "auto": "auto",
}


def _take(kw: dict, allowed: set[str], spec: str) -> dict:
    unknown = set(kw) - allowed - _SHARED_KW
    if unknown:
        raise MirageInputError(
            f"{spec!r} does not take {sorted(unknown)}; it takes {sorted(allowed) or 'nothing'}"
        )
    return {k: v for k, v in kw.items() if k in allowed}


def _sim_args(kw: dict, spec: str) -> dict:
    if kw.get("scene") is None or kw.get("fps") is None:
        raise MirageInputError(f"{spec!r} needs a simulator: pass scene=... and fps=...")
    return {"scene": kw["scene"], "fps": kw["fps"], "T_sim_world": kw.get("T_sim_world")}


def _split(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or not spec.strip():
        raise MirageInputError(f"provider spec must be a non-empty string, got {spec!r}")
    kind, _, rest = spec.strip().partition(":")
    return kind.lower(), rest


def make_depth_provider(spec: str, **kw) -> DepthProvider:
    """A :class:`DepthProvider` from a spec string (see the module docstring)."""
    kind, rest = _split(spec)
    if kind == "sim" and not rest:
        _take(kw, set(), spec)
        return SimulatorDepth(**_sim_args(kw, spec))
    if kind == "constant":
        _take(kw, set(), spec)
        try:
            z = float(rest)
        except ValueError as e:
            raise MirageInputError(f"'constant:Z' needs a number Z, got {spec!r}") from e
        return ConstantDepth(z)
    if kind == "given" and rest:
        opts = _take(kw, {"invalid"}, spec)
        return load_given_depth(rest, **opts)
    if kind == "da3" and rest:
        opts = _take(
            kw,
            {"device", "process_res", "initial_scale", "min_cells", "downsample", "batch_size"},
            spec,
        )
        opts = {k: v for k, v in opts.items() if v is not None}
        head, _, last = rest.rpartition(":")
        if head and last.lower() in _POLICY_ALIASES:
            weights, policy = head, _POLICY_ALIASES[last.lower()]
        else:
            weights, policy = rest, "auto"
        from mirage_core.perception.da3 import DepthAnything3Depth

        return DepthAnything3Depth(weights, scale_policy=policy, **opts)
    raise MirageInputError(f"unknown depth provider {spec!r}; expected one of {DEPTH_SPECS}")


def make_mask_provider(spec: str, **kw) -> MaskProvider:
    """A :class:`MaskProvider` from a spec string (see the module docstring)."""
    kind, rest = _split(spec)
    if kind == "none" and not rest:
        _take(kw, set(), spec)
        return NoMasks()
    if kind == "sim" and not rest:
        _take(kw, set(), spec)
        return SimulatorMasks(**_sim_args(kw, spec))
    if kind == "given" and rest:
        _take(kw, set(), spec)
        p = Path(rest)
        if p.suffix != ".npy" or not p.is_file():
            raise MirageInputError(f"'given:PATH' masks need an existing .npy file, got {rest!r}")
        return GivenMasks(np.load(p))
    if kind == "sam3" and rest:
        opts = _take(
            kw, {"device", "prompts", "score_threshold", "mask_threshold", "batch_size"}, spec
        )
        opts = {k: v for k, v in opts.items() if v is not None}
        from mirage_core.perception.sam3 import Sam3Masks

        return Sam3Masks(rest, **opts)
    raise MirageInputError(f"unknown mask provider {spec!r}; expected one of {MASK_SPECS}")
