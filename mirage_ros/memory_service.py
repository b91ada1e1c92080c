"""The memory node's logic, independent of the ROS client library.

:class:`MemoryService` holds a :class:`~mirage_core.memory.LatentSpatialMemory` and answers
the memory services with messages built by a message factory (:mod:`mirage_ros.messages`).
The rclpy node (:mod:`mirage_ros.nodes.memory_node`) only wires these handlers to services and
topics; tests call them directly.

A handler never raises for bad input: every failure (malformed message, bad pose, wrong
sizes, memory not initialised, unreadable file) becomes ``success = false`` with a message
that says what was wrong, and the memory is left unchanged.

Persistence: with ``autosave_path`` set, the memory is saved atomically after every
``autosave_every`` updates and on ``save``; on start it is reloaded from that file if the
file exists, so a node killed mid-rollout comes back with its cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.errors import MirageInputError
from mirage_core.geometry import se3_inverse
from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation
from mirage_core.memory.hole_fill import is_pass_count
from mirage_ros.image_conversion import (
    depth_to_metres,
    image_to_array,
    image_to_rgb,
)
from mirage_ros.messages import camera_info_to_K, latent_to_tensor, pose_to_T, tensor_to_latent

__all__ = ["MemoryService", "MemoryServiceConfig", "pca_colours"]

log = logging.getLogger(__name__)


class _PyLog:
    """``info/warning(str)`` over a Python logger (when no rclpy logger is given)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger

    def info(self, msg: str) -> None:
        self._log.info("%s", msg)

    def warning(self, msg: str) -> None:
        self._log.warning("%s", msg)


@dataclass
class MemoryServiceConfig:
    """Parameters of the memory node (ROS parameters of the same names).

    Attributes:
        merge_policy: ``fill_empty`` (default), ``union`` or ``voxel``.
        feature_dtype: storage dtype of the features (``bfloat16`` or ``float32``).
        device: where the memory lives (``cpu``, ``cuda``).
        max_points: memory budget in points (0 = unbounded).
        autosave_path: safetensors file to save to and reload from ("" = off).
        autosave_every: updates between automatic saves (>= 1).
        frame_id: the memory's world frame name (headers, point cloud).
        cloud_max_points: at most this many points in the published point cloud.
        stride: spatial stride of the codec whose latents the memory stores (16: the
            Wan2.2-TI2V-5B VAE; 8: the small model's PCA codec, docs/model_card.md); an
            update's depth must be at pixel (latent x stride) or latent resolution.
        hole_fill: readout hole-fill passes (``MemoryConfig.hole_fill``; 0 = the paper's
            Eq. 5 as written). A model trained on filled readouts needs the same value here:
            ``mirage launch`` sets it from the model's marker.
    """

    merge_policy: str = "fill_empty"
    feature_dtype: str = "bfloat16"
    device: str = "cpu"
    max_points: int = 0
    autosave_path: str = ""
    autosave_every: int = 1
    frame_id: str = "world"
    cloud_max_points: int = 200_000
    stride: int = 16
    hole_fill: int = 0

    def __post_init__(self) -> None:
        if not is_pass_count(self.hole_fill):
            raise ValueError(f"hole_fill must be an integer >= 0 (readout hole-fill passes), "
                             f"got {self.hole_fill!r}")

    def memory_config(self) -> MemoryConfig:
        return MemoryConfig(
            stride=self.stride,
            merge_policy=self.merge_policy,
            feature_dtype=self.feature_dtype,
            device=self.device,
            max_points=self.max_points or None,
            hole_fill=self.hole_fill,
        )


class MemoryService:
    """Handlers for ``update``, ``read``, ``file`` (save/load) and ``clear`` (Trigger).

    Args:
        msgs: a message factory (``RosbagsMessages`` or ``RclpyMessages``).
        config: :class:`MemoryServiceConfig`.
        logger: where refusals and reloads are logged (``info``/``warning`` taking one string;
            the node passes its rclpy logger so they reach ``/rosout``); default: Python
            logging.
        codec: a :class:`~mirage_core.codecs.LatentCodec` for updates that send an image but
            no latent; ``None`` = such updates are refused.
    """

    def __init__(self, msgs, config: MemoryServiceConfig | None = None, codec=None,
                 logger=None) -> None:
        self.msgs = msgs
        # anything with info/warning(str): the node passes its rclpy logger (-> /rosout)
        self.log = logger if logger is not None else _PyLog(log)
        self.config = config or MemoryServiceConfig()
        if self.config.autosave_every < 1:
            raise MirageInputError("autosave_every must be >= 1")
        self.codec = codec
        self.memory = LatentSpatialMemory(self.config.memory_config(), codec=codec)
        self.initialized = False
        self.num_updates = self.num_readouts = 0
        self.last_update_ms = self.last_readout_ms = 0.0
        self.last_growth = 0
        self.last_hole_rate = 1.0
        self._since_save = 0
        path = self.config.autosave_path
        if path and Path(path).is_file():
            self.memory.load_state(path)
            self.initialized = self.memory.num_points > 0
            self.log.info(f"reloaded the memory from {path} ({self.memory.num_points} points)")

    # ------------------------------------------------------------------ helpers
    def _header(self, stamp=None):
        m = self.msgs
        if stamp is None:
            ns = time.time_ns()
            stamp = m.new("builtin_interfaces/msg/Time", sec=ns // 10**9, nanosec=ns % 10**9)
        return m.new("std_msgs/msg/Header", stamp=stamp, frame_id=self.config.frame_id)

    def stats_msg(self) -> Any:
        """The current ``mirage/MemoryStats``."""
        return self.msgs.new(
            "mirage/msg/MemoryStats",
            header=self._header(),
            kind="latent",
            merge_policy=self.config.merge_policy,
            initialized=self.initialized,
            num_points=int(self.memory.num_points),
            num_bytes=int(self.memory.nbytes),
            last_growth_bytes=int(self.last_growth),
            num_updates=self.num_updates,
            num_readouts=self.num_readouts,
            last_update_ms=float(self.last_update_ms),
            last_readout_ms=float(self.last_readout_ms),
            last_hole_rate=float(self.last_hole_rate),
            hole_fill=int(self.config.hole_fill),
        )

    def _fail(self, type_name: str, e: Exception, **extra) -> Any:
        service = type_name.split("/")[-1].removesuffix("_Response").removesuffix("_Request")
        self.log.warning(f"{service} refused: {type(e).__name__}: {e}")
        return self.msgs.new(type_name, success=False, message=f"{type(e).__name__}: {e}",
                             **extra)

    def _autosave(self, force: bool = False) -> None:
        path = self.config.autosave_path
        if not path:
            return
        self._since_save += 1
        if force or self._since_save >= self.config.autosave_every:
            self.memory.save(path)
            self._since_save = 0

    # ------------------------------------------------------------------ update
    def _observation(self, req) -> Observation:
        K, (H, W) = camera_info_to_K(req.camera_info)
        T_cam_world = se3_inverse(pose_to_T(req.pose))
        depth = torch.from_numpy(depth_to_metres(req.depth))
        if tuple(depth.shape) != (H, W):
            raise MirageInputError(
                f"depth is {tuple(depth.shape)}, CameraInfo says {H}x{W}"
            )
        mask = None
        if int(req.mask.height) and int(req.mask.width):
            m = image_to_array(req.mask)
            if req.mask.encoding != "mono8" or m.shape != (H, W):
                raise MirageInputError(
                    f"mask must be mono8 {H}x{W}, got {req.mask.encoding} {m.shape}"
                )
            mask = torch.from_numpy(m != 0)
        latent = None
        if len(req.latent.data):
            latent = latent_to_tensor(req.latent)
        image = None
        if int(req.image.height) and int(req.image.width):
            rgb = image_to_rgb(req.image)
            if rgb.shape[:2] != (H, W):
                raise MirageInputError(f"image is {rgb.shape[:2]}, CameraInfo says {H}x{W}")
            image = torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32) / 255.0
        if latent is None:
            if image is None:
                raise MirageInputError("the update has neither a latent nor an image")
            if self.codec is None:
                raise MirageInputError(
                    "the update has no latent and this node has no VAE to encode the image "
                    "(set the codec parameter, or send the latent)"
                )
        return Observation(depth=depth, K=K, T_cam_world=T_cam_world, mask=mask,
                           latent=latent, image=image if latent is None else None)

    def update(self, req) -> Any:
        """``mirage/srv/UpdateMemory``: write one frame (``reset``: clear first)."""
        t0 = time.perf_counter()
        try:
            obs = self._observation(req)
            before = self.memory.nbytes
            if req.reset:
                res = self.memory.initialize(obs, require_points=True)
            else:
                if not self.initialized:
                    raise MirageInputError(
                        "the memory is not initialized: send the first frame with reset=true"
                    )
                res = self.memory.update(obs)
        except (ValueError, FileNotFoundError) as e:
            return self._fail("mirage/srv/UpdateMemory_Response", e, stats=self.stats_msg())
        self.initialized = True
        self.num_updates += 1
        self.last_growth = self.memory.nbytes - (0 if req.reset else before)
        self.last_update_ms = (time.perf_counter() - t0) * 1e3
        self._autosave()
        return self.msgs.new(
            "mirage/srv/UpdateMemory_Response", success=True,
            message=f"stored {res.added} cells", added=res.added, masked=res.masked,
            invalid_depth=res.invalid_depth, stats=self.stats_msg(),
        )

    # ------------------------------------------------------------------ read
    def read(self, req) -> Any:
        """``mirage/srv/ReadMemory``: readout at every pose (Eq. 5)."""
        t0 = time.perf_counter()
        try:
            if not self.initialized:
                raise MirageInputError(
                    "the memory is not initialized: call update with reset=true first"
                )
            if len(req.poses) == 0:
                raise MirageInputError("ReadMemory needs at least one pose")
            K, (H, W) = camera_info_to_K(req.camera_info)
            T = torch.stack([pose_to_T(p) for p in req.poses])
            r = self.memory.readout(se3_inverse(T), K, (H, W))
        except (ValueError, FileNotFoundError) as e:
            return self._fail("mirage/srv/ReadMemory_Response", e)
        ms = (time.perf_counter() - t0) * 1e3
        self.num_readouts += 1
        self.last_readout_ms = ms
        holes = [1.0 - float(v.float().mean()) for v in r.mask]
        self.last_hole_rate = float(np.mean(holes))
        hdr = self._header()
        masks = [self.msgs.image((v.cpu().numpy() * 255).astype(np.uint8), "mono8", hdr)
                 for v in r.mask]
        depths = [self.msgs.image(d.cpu().numpy().astype(np.float32), "32FC1", hdr)
                  for d in r.depth]
        return self.msgs.new(
            "mirage/srv/ReadMemory_Response", success=True, message="",
            latents=tensor_to_latent(self.msgs, r.zhat, hdr), masks=masks, depths=depths,
            hole_rates=np.asarray(holes, dtype=np.float32), readout_ms=ms,
        )

    # ------------------------------------------------------------------ save / load / clear
    def file(self, req) -> Any:
        """``mirage/srv/MemoryFile``: ``operation`` ``save`` or ``load`` at ``path``."""
        try:
            op, path = str(req.operation), str(req.path)
            if not path:
                raise MirageInputError("path is empty")
            if op == "save":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.memory.save(path)
                msg = f"saved {self.memory.num_points} points to {path}"
            elif op == "load":
                if not Path(path).is_file():
                    raise MirageInputError(f"no memory file at {path}")
                self.memory.load_state(path)
                self.initialized = self.memory.num_points > 0
                msg = f"loaded {self.memory.num_points} points from {path}"
            else:
                raise MirageInputError(f"operation must be 'save' or 'load', got {op!r}")
        except (ValueError, OSError) as e:
            return self._fail("mirage/srv/MemoryFile_Response", e, stats=self.stats_msg())
        return self.msgs.new("mirage/srv/MemoryFile_Response", success=True, message=msg,
                             stats=self.stats_msg())

    def clear(self, req=None) -> Any:
        """``std_srvs/srv/Trigger``: drop every point (the autosave file is kept)."""
        n = self.memory.num_points
        self.memory.clear()
        self.initialized = False
        self.last_growth = 0
        return self.msgs.new("std_srvs/srv/Trigger_Response", success=True,
                             message=f"cleared {n} points")

    # ------------------------------------------------------------------ rviz
    def point_cloud(self) -> Any:
        """``sensor_msgs/PointCloud2`` of the memory: x, y, z (float32) and rgb (packed float32)
        from the first three principal components of the features (for rviz)."""
        n = self.memory.num_points
        xyz = self.memory.xyz.T.float().cpu()
        feats = self.memory.features.float().cpu()
        if n > self.config.cloud_max_points:
            idx = torch.linspace(0, n - 1, self.config.cloud_max_points).long()
            xyz, feats = xyz[idx], feats[idx]
        rgb = pca_colours(feats)
        m = len(xyz)
        rec = np.zeros(m, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
        rec["x"], rec["y"], rec["z"] = xyz[:, 0].numpy(), xyz[:, 1].numpy(), xyz[:, 2].numpy()
        rec["rgb"] = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | (
            rgb[:, 2].astype(np.uint32))
        F = "sensor_msgs/msg/PointField"
        fields = [self.msgs.new(F, name=nm, offset=o, datatype=7, count=1)
                  for nm, o in (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))]
        return self.msgs.new(
            "sensor_msgs/msg/PointCloud2", header=self._header(), height=1, width=m,
            fields=fields, is_bigendian=False, point_step=16, row_step=16 * m,
            data=rec.view(np.uint8).reshape(-1), is_dense=True,
        )


def pca_colours(features: torch.Tensor) -> np.ndarray:
    """``[N, C]`` features -> ``[N, 3]`` uint8 colours from the top-3 principal components
    (each scaled to its 1st-99th percentile range). Fewer than 2 points: mid grey."""
    n = features.shape[0]
    if n < 2:
        return np.full((n, 3), 128, dtype=np.uint8)
    x = features - features.mean(0, keepdim=True)
    _, _, V = torch.linalg.svd(x, full_matrices=False)
    comps = (x @ V[:3].T).numpy()
    if comps.shape[1] < 3:
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
    lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
    scaled = (comps - lo) / np.maximum(hi - lo, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
