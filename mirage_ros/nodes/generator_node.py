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
Rollouts run one at a time in a thread of their own; memory calls from it are blocking
service calls (reentrant group, so the executor keeps serving). With ``exit_after`` the
process ends after that many rollouts, once subscribers acknowledged the frames; on SIGINT
a rollout stops at its next memory call or chunk and a running goal is aborted.
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
    RclpyMessages,
    camera_info_msg,
    camera_info_to_K,
    image_topic_rectified,
    path_to_T,
    pose_from_T,
    pose_stamped_to_T,
    stamp_to_ns,
)
from mirage_ros.node_base import (
    QOS_FRAMES,
    QOS_LATCHED,
    QOS_RELIABLE,
    QOS_SENSOR,
    MirageNode,
    run_node,
)
from mirage_ros.remote_memory import RemoteMemory

__all__ = ["GeneratorNode", "GeneratorNodeConfig", "main"]


@dataclass
class GeneratorNodeConfig:
    """Parameters of ``generator_node``.

    Attributes:
        weights: weights directory: diffusers-format Wan2.2-TI2V-5B or a trained small model
            ("" = the shipped small model, mirage_core/weights/mirage-small-rooms, when the
            checkout has one; else tiny must be true).
        tiny: use tiny random-weight models on the CPU (the output is noise; for tests).
        side_branch: side-branch file, `mirage train` checkpoint or output directory (side
            branch + LoRA), "zero" (untrained no-op) or "" = weights/mirage_side_branch.safetensors.
        prompt: text prompt of every rollout (an Imagine goal may give its own).
        steps: UniPC steps per chunk (paper: 40).
        stop_sigma: stop each chunk's sampler at this noise level and publish the model's
            posterior-mean estimate (blurrier frames, higher PSNR, fewer steps; 0 = the
            paper's sampler; docs/generator.md).
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
    stop_sigma: float = 0.0
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
            from mirage_core.generator.loading import shipped_weights_dir

            shipped = shipped_weights_dir()
            if shipped is None:
                raise ValueError("no weights: set weights:=DIR (Wan2.2-TI2V-5B, diffusers "
                                 "layout, or a trained small model) or tiny:=true (no trained "
                                 "model ships in this checkout)")
            self.weights = str(shipped)
        if self.tiny and self.weights:
            raise ValueError("tiny and weights exclude each other")
        if not self.depth:
            raise ValueError("set depth:= (sim for the simulated room, da3:DIR for real "
                             "images, constant:Z for smoke tests only)")
        SamplerConfig(steps=self.steps, stop_sigma=self.stop_sigma)
        if self.offload not in ("none", "model"):
            raise ValueError(f"offload must be none or model, got {self.offload!r}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.exit_after < 0:
            raise ValueError("exit_after must be >= 0")


#: How long shutdown waits for a chunk in progress (the rollout stops before the next one).
RELEASE_WAIT_S = 60.0


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
    returned: threading.Event = field(default_factory=threading.Event)  # _execute returned
    result: dict = field(default_factory=dict)


class GeneratorNode(MirageNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "generator", **kwargs) -> None:
        from geometry_msgs.msg import PoseStamped
        from mirage.action import Imagine
        from mirage.msg import ChunkInfo
        from mirage.srv import ReadMemory, UpdateMemory
        from nav_msgs.msg import Path
        from rclpy.action import ActionServer
        from sensor_msgs.msg import CameraInfo, Image

        super().__init__(node_name, **kwargs)
        self.config = self.declare_config(GeneratorNodeConfig)
        self.msgs = RclpyMessages()
        self.models = None
        self.ready = threading.Event()
        self.rollouts = 0
        self._images: dict[int, Any] = {}
        self._poses: dict[int, torch.Tensor] = {}
        self._info = None
        self._view: _View | None = None
        self._lock = threading.Lock()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._goal_job: _Job | None = None  # the latest Imagine goal
        self._scene = None
        # image_raw vs image_rect from the remapped name of camera/image
        self._rectified = image_topic_rectified(self.resolve_topic_name("camera/image"))
        self._pub = {
            "image": self.create_publisher(Image, "image", QOS_FRAMES),
            "pose": self.create_publisher(PoseStamped, "pose", QOS_FRAMES),
            "info": self.create_publisher(CameraInfo, "camera_info", QOS_LATCHED),
            "chunk": self.create_publisher(ChunkInfo, "chunk_info", QOS_RELIABLE),
        }
        self.create_subscription(Image, "camera/image", self._on_image, QOS_SENSOR)
        self.create_subscription(CameraInfo, "camera/camera_info", self._on_info, QOS_SENSOR)
        self.create_subscription(PoseStamped, "camera/pose", self._on_pose, QOS_SENSOR)
        self.create_subscription(Path, "target_path", self._on_path, QOS_LATCHED)
        # called from the rollout thread (RemoteMemory): blocking calls, reentrant group
        # memory calls give up at once when the node shuts down (no executor would deliver
        # the replies)
        self._read = self.sync_client(ReadMemory, "read_memory", stopping=self._stopping)
        self._update = self.sync_client(UpdateMemory, "update_memory", stopping=self._stopping)
        self._action = ActionServer(
            self, Imagine, "imagine", execute_callback=self._execute,
            goal_callback=self._accept_goal, cancel_callback=self._cancel_goal,
            callback_group=self.reentrant)
        self._worker = threading.Thread(target=self._work, name="generator", daemon=True)

    # -- lifetime ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the rollout thread, then load the models (run by run_node in a worker
        thread while the executor spins: paths queue, goals are rejected until loaded)."""
        from mirage_core.generator.loading import build_tiny_weights, load_models

        self._worker.start()
        cfg = self.config
        t0 = time.perf_counter()
        try:
            weights = build_tiny_weights(tiny_weights_dir()) if cfg.tiny else cfg.weights
            device = cfg.device or (None if not cfg.tiny else "cpu")
            self.models = load_models(weights, side_branch=cfg.side_branch or None,
                                      device=device, offload=cfg.offload)
        except Exception as e:  # WeightsNotFoundError, SideBranchMismatchError, OSError, ...
            self.get_logger().error(f"cannot load the models: {e}")
            self.exit_code = 2
            self.done.set()
            return
        self.ready.set()
        self.get_logger().info(f"models loaded from {self.models.source} in "
                               f"{time.perf_counter() - t0:.1f} s ({self.models.device})")
        if self.models.readout_hole_fill:
            self.get_logger().info(
                f"the model runs with readout hole_fill={self.models.readout_hole_fill} "
                "(mirage launch sets it on the memory node; a memory node started by hand "
                f"needs -p hole_fill:={self.models.readout_hole_fill})")

    def stop_callbacks(self) -> None:
        """Also stop rollouts (between chunks) and end a goal waiting for one (aborted), so
        shutdown never waits for a whole rollout. The goal's ``_execute`` is waited for here,
        while the executor still exists: its result is handed to the executor when it
        returns (rclpy's ``Executor.shutdown`` does not wait for callbacks in flight)."""
        self._stopping.set()
        super().stop_callbacks()
        job = self._goal_job
        if job is not None and job.returned.wait(timeout=2.0):
            time.sleep(0.2)  # rclpy's _execute_goal sets the result right after the return

    def release(self) -> None:
        """End the rollout thread (it stops between chunks), then destroy the action server
        (rclpy's destroy_node leaves it) and close the sim scene."""
        self._stopping.set()
        self._jobs.put(None)
        if self._worker.is_alive():
            # it stops at the next memory call or chunk; exiting while it computes would
            # abort the process (torch's threads at interpreter exit)
            self._worker.join(timeout=1.0)
            if self._worker.is_alive():
                self.get_logger().info("waiting for the chunk in progress to finish")
                self._worker.join(timeout=RELEASE_WAIT_S)
        busy = self._worker.is_alive()
        if busy:
            self.get_logger().warning(f"the rollout thread is still in a chunk after "
                                      f"{RELEASE_WAIT_S:.0f} s; exiting without it")
        self._action.destroy()
        if self._scene is not None and not busy:
            self._scene.close()
            self._scene = None

    # -- camera input ---------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        t = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._images[t] = msg
            self._match(t)

    def _on_pose(self, msg) -> None:
        try:
            T = pose_stamped_to_T(msg, self.config.frame_id)
        except ValueError as e:
            self.get_logger().warning(f"camera/pose dropped: {e}")
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
            K, hw = camera_info_to_K(self._info, self._rectified)
            if rgb.shape[:2] != hw:
                raise ValueError(f"image {rgb.shape[:2]} vs camera_info {hw}")
        except ValueError as e:
            self.get_logger().warning(f"camera frame dropped: {e}")
            return
        img = torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32) / 255.0
        self._view = _View(img, K, T, t)

    # -- requests -----------------------------------------------------------------------------
    def _on_path(self, msg) -> None:
        try:
            T, stamps = path_to_T(msg, frame_id=self.config.frame_id)
        except ValueError as e:
            self.get_logger().error(f"target_path refused: {e}")
            return
        self._jobs.put(_Job(T, stamps, self.config.prompt, self.config.steps))

    def _accept_goal(self, goal) -> Any:
        from rclpy.action import GoalResponse

        if not self.ready.is_set():
            self.get_logger().warning("imagine goal rejected: the models are still loading")
            return GoalResponse.REJECT
        if self._busy.locked() or not self._jobs.empty():
            self.get_logger().warning("imagine goal rejected: a rollout is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _cancel_goal(self, goal_handle) -> Any:
        """Accepted; the rollout stops after the chunk in progress."""
        from rclpy.action import CancelResponse

        return CancelResponse.ACCEPT

    def _execute(self, goal_handle) -> Any:
        from mirage.action import Imagine

        g = goal_handle.request
        t0 = time.perf_counter()
        try:
            T, stamps = path_to_T(g.path, frame_id=self.config.frame_id)
            K = hw = None
            if int(g.camera_info.height):
                K, hw = camera_info_to_K(g.camera_info)
        except ValueError as e:
            goal_handle.abort()
            return Imagine.Result(success=False, message=str(e))
        job = _Job(T, stamps, str(g.prompt) or self.config.prompt,
                   int(g.steps) or self.config.steps, K, hw, goal=goal_handle)
        self._goal_job = job
        self._jobs.put(job)
        try:
            while not job.done.wait(0.1):
                if self._stopping.is_set():
                    job.result = {"success": False, "message": "the generator is shutting down"}
                    break
            r = job.result
            if r.get("cancelled"):
                goal_handle.canceled()
            elif r.get("success"):
                goal_handle.succeed()
            else:
                goal_handle.abort()
            return Imagine.Result(success=bool(r.get("success")), message=r.get("message", ""),
                                  num_frames=int(r.get("frames", 0)),
                                  total_s=time.perf_counter() - t0)
        finally:
            job.returned.set()

    # -- the rollout ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return
            while not self.ready.wait(timeout=0.5):
                if self._stopping.is_set() or self.done.is_set():
                    return
            if self.models is None:
                job.result = {"success": False, "message": "the models are not loaded"}
                job.done.set()
                continue
            with self._busy:
                try:
                    job.result = self._rollout(job)
                except Exception as e:  # never lose the rollout thread
                    if self._stopping.is_set():  # shutting down: endpoints are going away
                        return
                    self.get_logger().error(f"rollout failed: {e}")
                    job.result = {"success": False, "message": f"{type(e).__name__}: {e}"}
                job.done.set()
            if job.result.get("success"):
                self.rollouts += 1
                if self.config.exit_after and self.rollouts >= self.config.exit_after:
                    if job.goal is not None:
                        # the result goes out from the executor once _execute returned
                        job.returned.wait(timeout=5.0)
                        time.sleep(0.5)
                    self.get_logger().info(f"{self.rollouts} rollout(s) done; exiting")
                    self.done.set()
                    return

    def _wait_view(self) -> _View:
        deadline = time.monotonic() + self.config.camera_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._view is not None:
                    return self._view
            if self._stopping.is_set():
                break
            time.sleep(0.02)
        raise TimeoutError(f"no camera frame (camera/image + camera/pose + camera_info with "
                           f"matching stamps) within {self.config.camera_timeout_s} s")

    def _providers(self, T_world_origin: torch.Tensor):
        from mirage_core.perception import make_depth_provider, make_mask_provider

        cfg = self.config
        kw: dict[str, Any] = {}
        if "sim" in (cfg.depth, cfg.masks):
            if self._scene is None:
                from mirage_core.sim.pybullet_scene import PyBulletScene

                self._scene = PyBulletScene(cfg.sim_scene, seed=cfg.sim_seed, dynamic=True)
            # The graph's world frame is the simulator's; the rollout's world is pose 0.
            kw = {"scene": self._scene, "fps": cfg.fps, "T_sim_world": T_world_origin.numpy()}
        dkw = dict(kw, device=str(self.models.device)) if cfg.depth.startswith("da3") else kw
        mkw = dict(kw, device=str(self.models.device)) if cfg.masks.startswith("sam3") else kw
        return make_depth_provider(cfg.depth, **dkw), make_mask_provider(cfg.masks, **mkw)

    def _rollout(self, job: _Job) -> dict:
        from geometry_msgs.msg import PoseStamped
        from mirage.action import Imagine
        from mirage.msg import ChunkInfo

        cfg, m = self.config, self.msgs
        view = self._wait_view()
        K = view.K if job.K is None else job.K
        H, W = view.image.shape[-2:]
        if job.hw is not None and tuple(job.hw) != (H, W):
            raise ValueError(f"the goal's camera_info is {job.hw}, the camera's images {H}x{W}")
        T = job.T
        check_se3(T, "path")
        gap = float(torch.linalg.norm(T[0, :3, 3] - view.T_world_cam[:3, 3]))
        if gap > 0.05:
            self.get_logger().warning(f"path pose 0 is {gap:.2f} m from the camera's pose; "
                                      "the camera image is used as the view at path pose 0")
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
        # the sampler shift and chunk length the model was trained with (its marker's); the
        # readout's hole fill is the memory node's (mirage launch sets the model's there)
        rcfg = RolloutConfig.for_models(self.models, job.steps, stop_sigma=cfg.stop_sigma,
                                        seed=cfg.seed, memory=cfg.memory, progress=False)
        rollout = MirageRollout(self.models, depth, masks, rcfg, memory_factory=factory)
        prep = rollout.prepare(view.image, traj, K, prompt=job.prompt)
        n_chunks = len(prep.plans)
        self._pub["info"].publish(camera_info_msg(m, K, (H, W), self.header(cfg.camera_frame)))
        frames = 0
        t_start = time.perf_counter()
        for ch in rollout.run_prepared(prep):
            if self._stopping.is_set():
                return {"success": False, "frames": frames,
                        "message": "the generator is shutting down"}
            t_pub = time.perf_counter()
            a, _b = ch.plan.rgb_frames
            for i, frame in enumerate(ch.frames):
                k = a + i
                hdr = self.header(cfg.camera_frame, int(stamps[k]))
                self._pub["image"].publish(m.image(np.ascontiguousarray(frame), "rgb8", hdr))
                self._pub["pose"].publish(PoseStamped(
                    header=self.header(cfg.frame_id, int(stamps[k])), pose=pose_from_T(m, T[k])))
            frames += len(ch.frames)
            ts = ch.timings_s
            publish_s = time.perf_counter() - t_pub
            self._pub["chunk"].publish(ChunkInfo(
                header=self.header(cfg.frame_id), chunk_index=int(ch.plan.index),
                chunks_total=n_chunks, first_frame=int(a), num_frames=len(ch.frames),
                readout_s=float(ts["readout"]), denoise_s=float(ts["denoise"]),
                decode_s=float(ts["decode"]), depth_s=float(ts["depth"]),
                masks_s=float(ts["masks"]), encode_s=float(ts["encode"]),
                update_s=float(ts["update"]), total_s=float(ts["total"]) + publish_s,
                hole_rate=float(np.mean(ch.readout_hole_rate)),
            ))
            self.get_logger().info(f"chunk {ch.plan.index + 1}/{n_chunks}: {len(ch.frames)} "
                                   f"frames, {ts['total'] + publish_s:.2f} s")
            if job.goal is not None:
                job.goal.publish_feedback(Imagine.Feedback(
                    chunk_index=int(ch.plan.index), chunks_total=n_chunks, frames_done=frames,
                    progress=float(ch.plan.index + 1) / n_chunks))
                last = ch.plan.index + 1 == n_chunks
                if job.goal.is_cancel_requested and not last:
                    return {"success": False, "cancelled": True, "frames": frames,
                            "message": f"cancelled after {ch.plan.index + 1} chunk(s)"}
        return {"success": True, "frames": frames,
                "message": f"{frames} frames in {time.perf_counter() - t_start:.1f} s"}


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(GeneratorNode, argv))


if __name__ == "__main__":
    main()
