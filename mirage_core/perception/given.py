"""Providers that need no model: ground-truth depth/masks passed in, a constant plane, no masks."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.perception.base import (
    DepthEstimate,
    DepthProvider,
    MaskProvider,
    _finite_positive,
    check_depth_maps,
    check_perception_inputs,
)

__all__ = ["ConstantDepth", "GivenDepth", "GivenMasks", "NoMasks", "load_given_depth"]


def _per_frame(data, name: str) -> dict[int, object]:
    """``Mapping[int, array]`` or an array ``[T, H, W]`` -> ``{frame_index: array}``."""
    if isinstance(data, Mapping):
        out = {}
        for k, v in data.items():
            try:
                ki = int(k)
            except (TypeError, ValueError) as e:
                raise MirageInputError(f"{name} keys must be frame indices, got {k!r}") from e
            if ki < 0 or ki != k:
                raise MirageInputError(f"{name} keys must be frame indices >= 0, got {k!r}")
            out[ki] = v
        return out
    arr = data if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim != 3:
        raise ShapeError(
            f"{name} must be a mapping frame_index -> [H, W] or an array [T, H, W], "
            f"got shape {tuple(arr.shape)}"
        )
    return {t: arr[t] for t in range(arr.shape[0])}


def _missing(kind: str, index: int, available: Sequence[int]) -> MirageInputError:
    av = sorted(available)
    if not av:
        have = "none"
    elif av == list(range(av[0], av[-1] + 1)):
        have = f"frames {av[0]}..{av[-1]}"
    else:
        have = f"frames {av[:8]}{' ...' if len(av) > 8 else ''}"
    return MirageInputError(f"no {kind} given for frame {index} (have {have})")


class GivenDepth(DepthProvider):
    """Ground-truth depth passed in (dataset, offline reconstruction, another simulator).

    Args:
        depth_by_frame: ``{frame_index: [H, W]}`` or an array ``[T, H, W]`` (frame ``t`` at
            index ``t``); numpy or torch; z-depth in the world's units, 0 = no measurement.
        sky_by_frame: optional sky masks in the same layout (bool, ``True`` on sky). When given,
            every frame with depth must have one.
        invalid: ``"raise"`` (default): NaN/inf/negative depth raises :class:`DepthError` at
            construction; ``"zero"``: such pixels become 0 (no measurement), e.g. for datasets
            that store ``inf`` for "no return".
        source: description used in :attr:`DepthEstimate.source`.
    Raises:
        MirageInputError (in :meth:`estimate`): a requested frame index has no depth; the message
        names the index and the frames available.
    """

    name = "given"

    def __init__(
        self,
        depth_by_frame,
        sky_by_frame=None,
        invalid: str = "raise",
        source: str = "given depth (ground truth passed in)",
    ):
        raw = _per_frame(depth_by_frame, "depth_by_frame")
        self._depth = {
            t: check_depth_maps(d, f"depth of frame {t}", invalid) for t, d in raw.items()
        }
        for t, d in self._depth.items():
            if d.ndim != 2:
                raise ShapeError(f"depth of frame {t} must be [H, W], got {tuple(d.shape)}")
        self._sky: dict[int, torch.Tensor] | None = None
        if sky_by_frame is not None:
            sky = _per_frame(sky_by_frame, "sky_by_frame")
            self._sky = {}
            for t, s in sky.items():
                st = torch.as_tensor(np.asarray(s) if not isinstance(s, torch.Tensor) else s)
                if st.dtype != torch.bool:
                    raise ShapeError(f"sky of frame {t} must be bool, got {st.dtype}")
                if t in self._depth and st.shape != self._depth[t].shape:
                    raise ShapeError(
                        f"sky of frame {t} is {tuple(st.shape)}, "
                        f"its depth {tuple(self._depth[t].shape)}"
                    )
                self._sky[t] = st
            missing = sorted(set(self._depth) - set(self._sky))
            if missing:
                raise MirageInputError(f"sky_by_frame lacks frames {missing[:8]} that have depth")
        self.source = source

    @property
    def frame_indices(self) -> list[int]:
        """Sorted frame indices with depth."""
        return sorted(self._depth)

    def estimate(self, frames, K, T_world_cam, frame_indices, reference_depth=None):
        frames, K, _, idx = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        H, W = frames.shape[-2:]
        depth, sky = [], []
        for t in idx:
            if t not in self._depth:
                raise _missing("depth", t, self._depth)
            d = self._depth[t]
            if tuple(d.shape) != (H, W):
                raise ShapeError(
                    f"given depth of frame {t} is {tuple(d.shape)}, frames are {H}x{W}"
                )
            depth.append(d)
            if self._sky is not None:
                sky.append(self._sky[t])
        return DepthEstimate(
            depth=torch.stack(depth).to(torch.float32),
            sky=torch.stack(sky) if self._sky is not None else None,
            source=self.source,
            scale=[1.0] * len(idx),
        )


def load_given_depth(path: str | Path, invalid: str = "raise") -> GivenDepth:
    """:class:`GivenDepth` from a file: ``.npy`` ``[T, H, W]`` depth, or ``.npz`` with ``depth``
    ``[T, H, W]`` and optionally ``sky`` ``[T, H, W]`` bool (frame ``t`` at index ``t``)."""
    p = Path(path)
    if not p.is_file():
        raise MirageInputError(f"depth file {str(p)!r} does not exist")
    if p.suffix == ".npy":
        return GivenDepth(np.load(p), invalid=invalid, source=f"given depth from {p}")
    if p.suffix == ".npz":
        with np.load(p) as z:
            if "depth" not in z:
                raise MirageInputError(f"{str(p)!r} has no 'depth' array (has {list(z.keys())})")
            sky = z["sky"] if "sky" in z else None
            return GivenDepth(z["depth"], sky, invalid=invalid, source=f"given depth from {p}")
    raise MirageInputError(f"depth file must be .npy or .npz, got {str(p)!r}")


class GivenMasks(MaskProvider):
    """Dynamic-object masks passed in (dataset annotations): ``{frame_index: [H, W] bool}`` or an
    array ``[T, H, W]`` bool. A missing frame raises, naming the index."""

    name = "given"

    def __init__(self, mask_by_frame):
        raw = _per_frame(mask_by_frame, "mask_by_frame")
        self._masks = {}
        for t, m in raw.items():
            mt = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m)
            if mt.dtype != torch.bool or mt.ndim != 2:
                raise ShapeError(
                    f"mask of frame {t} must be [H, W] bool, got {tuple(mt.shape)} {mt.dtype}"
                )
            self._masks[t] = mt

    def masks(self, frames, K, T_world_cam, frame_indices):
        frames, K, _, idx = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        H, W = frames.shape[-2:]
        out = []
        for t in idx:
            if t not in self._masks:
                raise _missing("mask", t, self._masks)
            m = self._masks[t]
            if tuple(m.shape) != (H, W):
                raise ShapeError(f"given mask of frame {t} is {tuple(m.shape)}, frames are {H}x{W}")
            out.append(m)
        return torch.stack(out)


class ConstantDepth(DepthProvider):
    """A fronto-parallel plane at z-depth ``z`` for every pixel. **For smoke tests only**: it is not
    a depth estimate, and a memory built from it is geometrically wrong for any real scene.

    Args:
        z: plane depth (> 0) in the world's units.
    """

    name = "constant"

    def __init__(self, z: float = 1.0):
        self.z = _finite_positive(z, "z")
        self._warned = False

    def estimate(self, frames, K, T_world_cam, frame_indices, reference_depth=None):
        frames, *_ = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        if not self._warned:
            warnings.warn(
                "ConstantDepth: every pixel at the same depth; use only for smoke tests",
                stacklevel=2,
            )
            self._warned = True
        N, _, H, W = frames.shape
        return DepthEstimate(
            depth=torch.full((N, H, W), self.z, dtype=torch.float32),
            sky=None,
            source=f"constant plane z={self.z:g} (smoke test only, not a depth estimate)",
            scale=[1.0] * N,
        )


class NoMasks(MaskProvider):
    """No dynamic objects: an all-``False`` mask."""

    name = "none"

    def masks(self, frames, K, T_world_cam, frame_indices):
        frames, *_ = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        N, _, H, W = frames.shape
        return torch.zeros((N, H, W), dtype=torch.bool)
