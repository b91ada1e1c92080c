"""Ground-truth depth, sky and dynamic masks from the PyBullet simulated camera.

The simulator renders the scene at the frame's camera and scene time
``frame_index / fps``; the frames passed in (generated images) only give ``H x W``.

Frames: a rollout's world is its first camera (``T_world_cam[0] = I``), the simulator's world
is PyBullet's (Z up). ``T_sim_world`` maps the rollout world into the sim world, so the sim
camera is ``T_sim_cam = T_sim_world @ T_world_cam``. The default, as in ``mirage demo memory``,
is ``scene.default_start_pose()``: the rollout's first camera sits at the scene's start pose.

The scene is duck-typed (anything with ``render(T_world_cam, K, H, W, time) -> SimFrame``), so
this module never imports PyBullet.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mirage_core.errors import MirageInputError
from mirage_core.geometry import check_se3
from mirage_core.perception.base import (
    DepthEstimate,
    DepthProvider,
    MaskProvider,
    check_perception_inputs,
)

__all__ = ["SimulatorDepth", "SimulatorMasks"]


class _SimRenderer:
    """Shared part: scene, fps, rollout-world -> sim-world transform; renders frames."""

    def __init__(self, scene, fps: float, T_sim_world=None):
        if not callable(getattr(scene, "render", None)):
            raise MirageInputError(
                f"scene must have a render(T_world_cam, K, H, W, time) method (e.g. "
                f"mirage_core.sim.PyBulletScene), got {type(scene).__name__}"
            )
        fps = float(fps)
        if not math.isfinite(fps) or fps <= 0:
            raise MirageInputError(f"fps must be finite and > 0, got {fps!r}")
        if T_sim_world is None:
            start = getattr(scene, "default_start_pose", None)
            T_sim_world = start() if callable(start) else np.eye(4)
        self.scene = scene
        self.fps = fps
        self.T_sim_world = check_se3(T_sim_world, "T_sim_world")
        if self.T_sim_world.shape != (4, 4):
            raise MirageInputError(
                f"T_sim_world must be [4, 4], got {tuple(self.T_sim_world.shape)}"
            )

    def render(self, frames, K, T_world_cam, frame_indices):
        frames, K, T, idx = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        H, W = frames.shape[-2:]
        T_sim_cam = self.T_sim_world @ T
        return [
            self.scene.render(T_sim_cam[i].numpy(), K.numpy(), H, W, time=t / self.fps)
            for i, t in enumerate(idx)
        ]


class SimulatorDepth(DepthProvider):
    """Depth and sky from the simulator's render at each frame's pose and time.

    Args:
        scene: a :class:`mirage_core.sim.PyBulletScene` (or anything with its ``render``).
        fps: frame rate; frame ``t`` is rendered at scene time ``t / fps``.
        T_sim_world: ``[4, 4]`` rollout world -> sim world; default
            ``scene.default_start_pose()`` (see the module docstring).
    Returns (``estimate``): metric z-depth with ``inf`` (nothing hit, i.e. sky) mapped to 0, and
    the scene's sky mask.
    """

    name = "sim"

    def __init__(self, scene, fps: float, T_sim_world=None):
        self._r = _SimRenderer(scene, fps, T_sim_world)

    @property
    def scene(self):
        return self._r.scene

    def estimate(self, frames, K, T_world_cam, frame_indices, reference_depth=None):
        sim = self._r.render(frames, K, T_world_cam, frame_indices)
        depth = torch.from_numpy(np.stack([f.depth for f in sim])).to(torch.float32)
        depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, 0.0)
        sky = torch.from_numpy(np.stack([f.sky_mask for f in sim])).to(torch.bool)
        return DepthEstimate(
            depth=depth,
            sky=sky,
            source=f"simulator ground truth ({type(self._r.scene).__name__}, metric)",
            scale=[1.0] * len(sim),
        )


class SimulatorMasks(MaskProvider):
    """Dynamic-object masks from the simulator's segmentation (pixels of bodies flagged
    dynamic, e.g. the moving ball). Arguments as :class:`SimulatorDepth`."""

    name = "sim"

    def __init__(self, scene, fps: float, T_sim_world=None):
        self._r = _SimRenderer(scene, fps, T_sim_world)

    def masks(self, frames, K, T_world_cam, frame_indices):
        sim = self._r.render(frames, K, T_world_cam, frame_indices)
        return torch.from_numpy(np.stack([f.dynamic_mask for f in sim])).to(torch.bool)
