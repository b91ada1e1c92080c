"""The memory node behind its services, as a memory object for :class:`MirageRollout`.

:class:`RemoteMemory` has the in-process memory's interface (``update(Observation)``,
``readout(T_cam_world, K, (H, W)) -> Readout``, ``nbytes``, ``num_points``) and forwards each
call to the memory node (``update_memory`` / ``read_memory`` services), so the generator node
runs Algorithm 1 unchanged while the cache lives in another process.

Frames: the rollout works in its own world (the first camera, identity); the memory node
works in its world (e.g. ``world`` or ``map``). ``T_world_origin`` (``[4, 4]``) is the rollout
origin's pose in the memory's world: poses are sent as ``T_world_origin @ T_origin_cam``.

The first update of a rollout carries ``reset=true`` (initialize) when ``reset_first``; with
``reset_first=False`` it is added to what the memory already holds (planner use: the map
built from camera observations stays).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from mirage_core.errors import MirageInputError
from mirage_core.geometry import se3_inverse
from mirage_core.memory import Observation, Readout
from mirage_ros.image_conversion import image_to_array
from mirage_ros.messages import camera_info_msg, latent_to_tensor, pose_from_T, tensor_to_latent

__all__ = ["MemoryServiceError", "RemoteMemory"]


class MemoryServiceError(RuntimeError):
    """The memory node answered ``success=false`` or did not answer."""


class RemoteMemory:
    """Memory-node client with the in-process memory's interface (see the module docstring).

    Args:
        msgs: message factory (:class:`mirage_ros.messages.RclpyMessages` in a node).
        read_client, update_client: clients of ``mirage/srv/ReadMemory`` and
            ``mirage/srv/UpdateMemory`` with a blocking ``call(request, timeout_sec)`` (a
            node's ``MirageNode.sync_client``).
        T_world_origin: ``[4, 4]`` rollout origin in the memory's world frame.
        reset_first: initialize the memory with the first update.
        timeout_s: per service call.
        latent_dtype: dtype of latents sent to the memory (``float32`` keeps them exact).
    """

    def __init__(self, msgs, read_client, update_client, T_world_origin=None,
                 reset_first: bool = True, timeout_s: float = 30.0,
                 latent_dtype: torch.dtype = torch.float32) -> None:
        self.msgs = msgs
        self.read_client = read_client
        self.update_client = update_client
        T = torch.eye(4, dtype=torch.float64) if T_world_origin is None else torch.as_tensor(
            T_world_origin, dtype=torch.float64)
        self.T_world_origin = T
        self._reset_next = reset_first
        self.timeout_s = timeout_s
        self.latent_dtype = latent_dtype
        self.nbytes = 0
        self.num_points = 0
        self.service_s = 0.0  # total time in service calls (graph overhead accounting)

    def _call(self, client, request, what: str):
        t0 = time.perf_counter()
        try:
            resp = client.call(request, timeout_sec=self.timeout_s)
        except TimeoutError as e:
            raise MemoryServiceError(f"{what}: the memory node did not answer: {e}") from e
        finally:
            self.service_s += time.perf_counter() - t0
        if not resp.success:
            raise MemoryServiceError(f"{what} refused by the memory node: {resp.message}")
        return resp

    def _stats(self, stats) -> None:
        self.nbytes = int(stats.num_bytes)
        self.num_points = int(stats.num_points)

    def update(self, obs: Observation) -> Any:
        """Send one frame (latent, depth, mask, camera, pose) to ``update_memory``."""
        if obs.latent is None:
            raise MirageInputError("RemoteMemory sends latents; the observation has none")
        m = self.msgs
        depth = obs.depth.detach().to(torch.float32).cpu().numpy()
        H, W = depth.shape
        req = m.new(
            "mirage/srv/UpdateMemory_Request",
            depth=m.image(depth, "32FC1"),
            camera_info=camera_info_msg(m, obs.K, (H, W)),
            pose=pose_from_T(m, self.T_world_origin @ se3_inverse(obs.T_cam_world)),
            latent=tensor_to_latent(m, obs.latent.detach().to(self.latent_dtype).cpu()),
            reset=bool(self._reset_next),
        )
        if obs.mask is not None:
            req.mask = m.image(obs.mask.detach().cpu().numpy().astype(np.uint8) * 255, "mono8")
        resp = self._call(self.update_client, req, "update_memory")
        self._reset_next = False
        self._stats(resp.stats)
        return resp

    def readout(self, T_cam_world: torch.Tensor, K: torch.Tensor,
                image_hw: tuple[int, int]) -> Readout:
        """``read_memory`` at ``T_cam_world`` ``[V, 4, 4]`` (rollout frame) for H x W images."""
        m = self.msgs
        T_world_cam = self.T_world_origin @ se3_inverse(torch.as_tensor(T_cam_world,
                                                                        dtype=torch.float64))
        req = m.new(
            "mirage/srv/ReadMemory_Request",
            poses=[pose_from_T(m, T) for T in T_world_cam],
            camera_info=camera_info_msg(m, K, image_hw),
        )
        resp = self._call(self.read_client, req, "read_memory")
        zhat = latent_to_tensor(resp.latents).to(torch.float32)
        mask = torch.from_numpy(np.stack([image_to_array(x) for x in resp.masks]) > 0)
        depth = torch.from_numpy(np.stack([image_to_array(x) for x in resp.depths]).astype(
            np.float32))
        if zhat.ndim != 4 or zhat.shape[0] != len(T_world_cam) or mask.shape != depth.shape:
            raise MemoryServiceError(
                f"read_memory returned latents {tuple(zhat.shape)}, masks {tuple(mask.shape)}, "
                f"depths {tuple(depth.shape)} for {len(T_world_cam)} poses"
            )
        return Readout(zhat=zhat, mask=mask, depth=depth)
