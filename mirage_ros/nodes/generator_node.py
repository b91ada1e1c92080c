"""``generator_node``: the Mirage world model (Algorithm 1) in the ROS graph.

Inputs:
    ``camera/image`` (rgb8/bgr8), ``camera/camera_info``, ``camera/pose`` (PoseStamped
    ``T_world_cam``): the current view; the latest image whose stamp has a pose is used.
    ``target_path`` (nav_msgs/Path, latched): run a rollout along it (e.g. from
    ``trajectory_node``).
    ``imagine`` (mirage/action/Imagine): a planner's "what would I see along this path";
    feedback per chunk, cancellable between chunks; one goal at a time (others are rejected).
Outputs:
    ``image`` (rgb8) and ``pose`` (PoseStamped) per generated frame, stamped with the path's
    stamps; ``camera_info`` (latched); ``chunk_info`` (mirage/msg/ChunkInfo) per chunk.
Memory: read and written through the memory node's ``read_memory`` / ``update_memory``
services (:class:`mirage_ros.remote_memory.RemoteMemory`); ``reset_memory`` initializes it
with each rollout's first frame.

A path has ``1 + 32 * n`` poses (n chunks; ``trajectory_node`` makes them so); pose 0 is the
current view. Models load in :meth:`GeneratorNode.start` on a background thread (never in the
constructor or a callback); until they are loaded, paths wait and goals are rejected.
Depth and masks of generated frames: ``sim`` (ground truth of the same PyBullet scene as
``sim_camera_node``; the graph's world frame is the simulator's) or ``da3:DIR`` / ``sam3:DIR``
(real weights), ``constant:Z`` (smoke tests only).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mirage_core.generator.sampler import SamplerConfig
from mirage_core.geometry import check_se3
from mirage_core.rollout.chunked import MirageRollout, RolloutConfig
from mirage_core.rollout.job import DEFAULT_PROMPT, tiny_weights_dir
from mirage_core.trajectory import Trajectory
from mirage_ros.image_conversion import image_to_rgb
from mirage_ros.messages import (
    camera_info_msg,
    camera_info_to_K,
    image_topic_rectified,
    path_to_T,
    pose_from_T,
    pose_to_T,
    stamp_from_ns,
    stamp_to_ns,
)
from mirage_ros.node_api import NodeHandle, run_node
from mirage_ros.remote_memory import MemoryServiceError, RemoteMemory

__all__ = ["GeneratorNode", "GeneratorNodeConfig", "main"]


@dataclass
class GeneratorNodeConfig:
    """Parameters of ``generator_node``.

    Attributes:
        weights: diffusers-format Wan2.2-TI2V-5B directory ("" = none; then tiny must be true).
        tiny: use tiny random-weight models on the CPU (the output is noise; for tests).
        side_branch: side-branch file, `mirage train` checkpoint or output directory (side
            branch + LoRA), "zero" (untrained no-op) or "" = weights/mirage_side_branch.safetensors.
        prompt: text prompt of every rollout (an Imagine goal may give its own).
        steps: UniPC steps per chunk (paper: 40).
        seed: noise seed (chunk c uses seed + c).
        device: compute device ("" = cuda if available, else cpu).
        offload: "none" or "model" (components wait on the CPU between uses).
        depth: depth of generated frames: sim, da3:DIR[:metric|align|none] or constant:Z.
        masks: dynamic/sky masks of generated frames: none, sim or sam3:DIR.
        sim_scene: PyBullet preset for sim depth/masks (as sim_camera_node's scene).
        sim_seed: PyBullet scene seed for sim depth/masks (as sim_camera_node's seed).
        memory: use the memory node (false = the no-memory ablation).
        reset_memory: initialize the memory with each rollout's first frame (false: add to it).
        fps: frame rate for paths without stamps and for sim scene time.
        frame_id: world frame of the memory and of published poses.
        camera_frame: frame id of published images.
        service_timeout_s: timeout of each memory service call.
        camera_timeout_s: how long a path waits for a camera frame before it is dropped.
        exit_after: exit after this many finished rollouts (0 = serve forever).
    """

    weights: str = ""
    tiny: bool = False
    side_branch: str = ""
    prompt: str = DEFAULT_PROMPT
    steps: int = 40
    seed: int = 0
    device: str = ""
    offload: str = "none"
    depth: str = "sim"
    masks: str = "sim"
    sim_scene: str = "room"
    sim_seed: int = 0
    memory: bool = True
    reset_memory: bool = True
    fps: float = 24.0
    frame_id: str = "world"
    camera_frame: str = "camera_optical"
    service_timeout_s: float = 60.0
    camera_timeout_s: float = 30.0
    exit_after: int = 0

    def __post_init__(self) -> None:
        if not self.tiny and not self.weights:
            raise ValueError("no weights: set weights:=DIR (Wan2.2-TI2V-5B, diffusers layout) "
                             "or tiny:=true")
        if self.tiny and self.weights:
            raise ValueError("tiny and weights exclude each other")
        if not self.depth:
            raise ValueError("set depth:= (sim for the simulated room, da3:DIR for real "
                             "images, constant:Z for smoke tests only)")
        SamplerConfig(steps=self.steps)
        if self.offload not in ("none", "model"):
            raise ValueError(f"offload must be none or model, got {self.offload!r}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.exit_after < 0:
            raise ValueError("exit_after must be >= 0")


@dataclass
class _View:
    image: torch.Tensor  # [3, H, W] float in [0, 1]
    K: torch.Tensor
    T_world_cam: torch.Tensor
    stamp_ns: int


@dataclass
class _Job:
    T: torch.Tensor  # [N, 4, 4] T_world_cam in frame_id
    stamps: np.ndarray  # [N] int64 ns
    prompt: str
    steps: int
    K: torch.Tensor | None = None
    hw: tuple[int, int] | None = None
    goal: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    result: dict = field(default_factory=dict)


class GeneratorNode:
    """See the module docstring."""

    def __init__(self, node: NodeHandle) -> None:
        self.node = node
        self.config = node.declare_config(GeneratorNodeConfig)
        self.models = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.exit_code = 0
        self.rollouts = 0
        self._images: dict[int, Any] = {}
        self._poses: dict[int, torch.Tensor] = {}
        self._info = None
        self._view: _View | None = None
        self._lock = threading.Lock()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._busy = threading.Lock()
        self._pub = {
            "image": node.publisher("sensor_msgs/msg/Image", "image", "frames"),
            "pose": node.publisher("geometry_msgs/msg/PoseStamped", "pose", "frames"),
            "info": node.publisher("sensor_msgs/msg/CameraInfo", "camera_info", "latched"),
            "chunk": node.publisher("mirage/msg/ChunkInfo", "chunk_info", "reliable"),
        }
        node.subscription("sensor_msgs/msg/Image", "camera/image", self._on_image, "sensor")
        node.subscription("sensor_msgs/msg/CameraInfo", "camera/camera_info", self._on_info,
                          "sensor")
        node.subscription("geometry_msgs/msg/PoseStamped", "camera/pose", self._on_pose,
                          "sensor")
        node.subscription("nav_msgs/msg/Path", "target_path", self._on_path, "latched")
        self._read = node.client("mirage/srv/ReadMemory", "read_memory")
        self._update = node.client("mirage/srv/UpdateMemory", "update_memory")
        node.action_server("mirage/action/Imagine", "imagine", self._execute,
                           goal_callback=self._accept_goal)
        self._worker = threading.Thread(target=self._work, name="generator", daemon=True)

    # -- lifetime ----------------------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._load, name="load-models", daemon=True).start()
        self._worker.start()

    def _load(self) -> None:
        from mirage_core.generator.loading import build_tiny_weights, load_models

        cfg = self.config
        t0 = time.perf_counter()
        try:
            weights = build_tiny_weights(tiny_weights_dir()) if cfg.tiny else cfg.weights
            device = cfg.device or (None if not cfg.tiny else "cpu")
            self.models = load_models(weights, side_branch=cfg.side_branch or None,
                                      device=device, offload=cfg.offload)
        except Exception as e:  # WeightsNotFoundError, SideBranchMismatchError, OSError, ...
            self.node.logger.error("cannot load the models: %s", e)
            self.exit_code = 2
            self.done.set()
            return
        self.ready.set()
        self.node.logger.info("models loaded from %s in %.1f s (%s)", self.models.source,
                              time.perf_counter() - t0, self.models.device)

    def close(self) -> None:
        self._jobs.put(None)

    # -- camera input ---------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        t = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._images[t] = msg
            self._match(t)

    def _on_pose(self, msg) -> None:
        try:
            T = pose_to_T(msg.pose)
        except ValueError as e:
            self.node.logger.warning("camera/pose dropped: %s", e)
            return
        t = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._poses[t] = T
            self._match(t)

    def _on_info(self, msg) -> None:
        with self._lock:
            self._info = msg

    def _match(self, t: int) -> None:
        """Newest image with a pose of the same stamp becomes the current view."""
        if t not in self._images or t not in self._poses or self._info is None:
            self._images = dict(list(self._images.items())[-8:])
            self._poses = dict(list(self._poses.items())[-8:])
            return
        msg, T = self._images.pop(t), self._poses.pop(t)
        if self._view is not None and t <= self._view.stamp_ns:
            return
        try:
            rgb = image_to_rgb(msg)
            K, hw = camera_info_to_K(  # image_raw vs image_rect from the remapped name
                self._info, image_topic_rectified(self.node.remap("camera/image")))
            if rgb.shape[:2] != hw:
                raise ValueError(f"image {rgb.shape[:2]} vs camera_info {hw}")
        except ValueError as e:
            self.node.logger.warning("camera frame dropped: %s", e)
            return
        img = torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32) / 255.0
        self._view = _View(img, K, T, t)

    # -- requests -----------------------------------------------------------------------------
    def _on_path(self, msg) -> None:
        try:
            T, stamps = path_to_T(msg)
        except ValueError as e:
            self.node.logger.error("target_path refused: %s", e)
            return
        self._jobs.put(_Job(T, stamps, self.config.prompt, self.config.steps))

    def _accept_goal(self, goal) -> bool:
        if not self.ready.is_set():
            self.node.logger.warning("imagine goal rejected: the models are still loading")
            return False
        if self._busy.locked() or not self._jobs.empty():
            self.node.logger.warning("imagine goal rejected: a rollout is running")
            return False
        return True

    def _execute(self, goal_handle) -> Any:
        m = self.node.msgs
        g = goal_handle.request
        t0 = time.perf_counter()
        try:
            T, stamps = path_to_T(g.path)
            K = hw = None
            if int(g.camera_info.height):
                K, hw = camera_info_to_K(g.camera_info)
        except ValueError as e:
            goal_handle.abort()
            return m.new("mirage/action/Imagine_Result", success=False, message=str(e))
        job = _Job(T, stamps, str(g.prompt) or self.config.prompt,
                   int(g.steps) or self.config.steps, K, hw, goal=goal_handle)
        self._jobs.put(job)
        job.done.wait()
        r = job.result
        if r.get("cancelled"):
            goal_handle.canceled()
        elif r.get("success"):
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return m.new("mirage/action/Imagine_Result", success=bool(r.get("success")),
                     message=r.get("message", ""), num_frames=int(r.get("frames", 0)),
                     total_s=time.perf_counter() - t0)

    # -- the rollout ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not self.ready.wait(timeout=3600) or self.models is None:
                job.result = {"success": False, "message": "the models are not loaded"}
                job.done.set()
                continue
            with self._busy:
                try:
                    job.result = self._rollout(job)
                except (ValueError, MemoryServiceError, TimeoutError, RuntimeError) as e:
                    self.node.logger.error("rollout failed: %s", e)
                    job.result = {"success": False, "message": f"{type(e).__name__}: {e}"}
                job.done.set()
            if job.result.get("success"):
                self.rollouts += 1
                if self.config.exit_after and self.rollouts >= self.config.exit_after:
                    self.node.logger.info("%d rollout(s) done; exiting", self.rollouts)
                    self.done.set()
                    return

    def _wait_view(self) -> _View:
        deadline = time.monotonic() + self.config.camera_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._view is not None:
                    return self._view
            time.sleep(0.02)
        raise TimeoutError(f"no camera frame (camera/image + camera/pose + camera_info with "
                           f"matching stamps) within {self.config.camera_timeout_s} s")

    def _providers(self, T_world_origin: torch.Tensor):
        from mirage_core.perception import make_depth_provider, make_mask_provider

        cfg = self.config
        kw: dict[str, Any] = {}
        if "sim" in (cfg.depth, cfg.masks):
            if getattr(self, "_scene", None) is None:
                from mirage_core.sim.pybullet_scene import PyBulletScene

                self._scene = PyBulletScene(cfg.sim_scene, seed=cfg.sim_seed, dynamic=True)
            # The graph's world frame is the simulator's; the rollout's world is pose 0.
            kw = {"scene": self._scene, "fps": cfg.fps, "T_sim_world": T_world_origin.numpy()}
        dkw = dict(kw, device=str(self.models.device)) if cfg.depth.startswith("da3") else kw
        mkw = dict(kw, device=str(self.models.device)) if cfg.masks.startswith("sam3") else kw
        return make_depth_provider(cfg.depth, **dkw), make_mask_provider(cfg.masks, **mkw)

    def _rollout(self, job: _Job) -> dict:
        cfg, m = self.config, self.node.msgs
        view = self._wait_view()
        K = view.K if job.K is None else job.K
        H, W = view.image.shape[-2:]
        if job.hw is not None and tuple(job.hw) != (H, W):
            raise ValueError(f"the goal's camera_info is {job.hw}, the camera's images {H}x{W}")
        T = job.T
        check_se3(T, "path")
        gap = float(torch.linalg.norm(T[0, :3, 3] - view.T_world_cam[:3, 3]))
        if gap > 0.05:
            self.node.logger.warning("path pose 0 is %.2f m from the camera's pose; the "
                                     "camera image is used as the view at path pose 0", gap)
        stamps = job.stamps
        if not stamps.any():
            stamps = view.stamp_ns + np.round(np.arange(len(T)) * 1e9 / cfg.fps).astype(np.int64)
        traj = Trajectory(T, torch.from_numpy((stamps - stamps[0]) * 1e-9), K, (H, W))
        T0 = T[0].clone()
        depth, masks = self._providers(T0)
        factory = None
        if cfg.memory:
            def factory():
                return RemoteMemory(m, self._read, self._update, T0,
                                    reset_first=cfg.reset_memory,
                                    timeout_s=cfg.service_timeout_s)

            if not self._read.wait_for_service(cfg.service_timeout_s):
                raise TimeoutError("the memory node's read_memory service is not available")
        rcfg = RolloutConfig(sampler=SamplerConfig(steps=job.steps), seed=cfg.seed,
                             memory=cfg.memory, progress=False)
        rollout = MirageRollout(self.models, depth, masks, rcfg, memory_factory=factory)
        prep = rollout.prepare(view.image, traj, K, prompt=job.prompt)
        n_chunks = len(prep.plans)
        info = camera_info_msg(m, K, (H, W), self.node.header(cfg.camera_frame))
        self._pub["info"].publish(info)
        frames = 0
        t_start = time.perf_counter()
        for ch in rollout.run_prepared(prep):
            t_pub = time.perf_counter()
            a, _b = ch.plan.rgb_frames
            for i, frame in enumerate(ch.frames):
                k = a + i
                hdr = m.new("std_msgs/msg/Header", stamp=stamp_from_ns(m, int(stamps[k])),
                            frame_id=cfg.camera_frame)
                self._pub["image"].publish(m.image(np.ascontiguousarray(frame), "rgb8", hdr))
                phdr = m.new("std_msgs/msg/Header", stamp=hdr.stamp, frame_id=cfg.frame_id)
                self._pub["pose"].publish(m.new("geometry_msgs/msg/PoseStamped", header=phdr,
                                                pose=pose_from_T(m, T[k])))
            frames += len(ch.frames)
            ts = ch.timings_s
            publish_s = time.perf_counter() - t_pub
            self._pub["chunk"].publish(m.new(
                "mirage/msg/ChunkInfo", header=self.node.header(cfg.frame_id),
                chunk_index=ch.plan.index, chunks_total=n_chunks, first_frame=a,
                num_frames=len(ch.frames), readout_s=ts["readout"], denoise_s=ts["denoise"],
                decode_s=ts["decode"], depth_s=ts["depth"], masks_s=ts["masks"],
                encode_s=ts["encode"], update_s=ts["update"], total_s=ts["total"] + publish_s,
                hole_rate=float(np.mean(ch.readout_hole_rate)),
            ))
            self.node.logger.info("chunk %d/%d: %d frames, %.2f s", ch.plan.index + 1, n_chunks,
                                  len(ch.frames), ts["total"] + publish_s)
            if job.goal is not None:
                job.goal.publish_feedback(m.new(
                    "mirage/action/Imagine_Feedback", chunk_index=ch.plan.index,
                    chunks_total=n_chunks, frames_done=frames,
                    progress=float(ch.plan.index + 1) / n_chunks))
                last = ch.plan.index + 1 == n_chunks
                if job.goal.is_cancel_requested and not last:
                    return {"success": False, "cancelled": True, "frames": frames,
                            "message": f"cancelled after {ch.plan.index + 1} chunk(s)"}
        return {"success": True, "frames": frames,
                "message": f"{frames} frames in {time.perf_counter() - t_start:.1f} s"}


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(GeneratorNode, "generator", argv))


if __name__ == "__main__":
    main()
