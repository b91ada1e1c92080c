"""``replay_node``: rosbag replay evaluation through the graph.

Reads a rosbag2 (mcap or sqlite3) of camera images (Image or CompressedImage) + poses
(PoseStamped, or /tf + /tf_static) + camera info (:func:`mirage_ros.bag.read_camera_stream`),
then plays the generator's inputs:
    ``camera/image``, ``camera/camera_info``, ``camera/pose``: the bag's first frame (sensor
    QoS, at ``rate_hz``, as a camera driver would), with its bag stamp;
    ``target_path`` (latched): the bag's poses 0 .. 32 n, with their stamps.
It collects the generated frames on ``image`` (matched to bag frames by stamp, one frame per
stamp: the bag's stamps are strictly increasing, header stamps or, where those are zero or
repeated, log times) and the
``chunk_info`` messages, and writes ``report.json`` + ``report.png``
(:func:`mirage_ros.replay_report.write_replay_report`: per-frame PSNR/SSIM against the bag's
frames 1 .. 32 n, per-chunk timing). It then exits (0; 1 if frames were missing at
``timeout_s``, with the partial report written; 2 for a bag it cannot use): it sets
``done`` and ``exit_code`` (:class:`~mirage_ros.node_base.MirageNode`), which ends the launch.

The bag is read in ``start()`` (a worker thread of :func:`~mirage_ros.node_base.run_node`
while the executor spins); the timers and subscriptions do nothing until it was read. The only
message whose loss matters, ``target_path``, is reliable and transient local: it reaches a
generator that starts later, and the node's exit waits for its acknowledgement. The camera
stream is re-published until the first generated frame arrives, so sensor QoS is enough.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_ros.image_conversion import image_to_rgb
from mirage_ros.messages import (
    RclpyMessages,
    camera_info_msg,
    path_from_T,
    pose_from_T,
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

__all__ = ["ReplayNode", "ReplayNodeConfig", "main"]

#: ``rectification`` parameter -> ``read_camera_stream(rectified=...)`` (words, not true/false,
#: which YAML and ``name:=value`` would turn into booleans)
_RECTIFIED = {"auto": None, "rectified": True, "raw": False}


@dataclass
class ReplayNodeConfig:
    """Parameters of ``replay_node``.

    Attributes:
        bag: the input rosbag2 directory (camera images + poses + camera info).
        out: report directory (report.json, report.png).
        image_topic: bag topic of the colour images (Image rgb8/bgr8, or CompressedImage
            jpeg/png).
        pose_topic: bag topic of the camera poses (PoseStamped T_world_cam, OpenCV frame), or
            /tf (TFMessage; /tf_static is read too).
        camera_info_topic: bag topic of the CameraInfo (P for rectified images; raw images
            need zero distortion).
        rectification: whether the bag's images are rectified: auto (from the image topic's
            name, image_rect vs image_raw), rectified (intrinsics from P) or raw (K; zero
            distortion only).
        world_frame: world frame of tf poses ("" = the root of the camera frame's tf tree).
        max_dt_s: largest stamp difference when pairing an image with a pose.
        chunks: chunks to generate (0 = as many as the bag's frames allow).
        rate_hz: how often the first frame is re-published until generation starts.
        timeout_s: give up waiting for generated frames after this many seconds.
        frame_id: world frame of the published path (the bag's pose frame if "").
        camera_frame: frame id of the published camera images.
    """

    bag: str = ""
    out: str = "out/replay"
    image_topic: str = "/camera/image"
    pose_topic: str = "/camera/pose"
    camera_info_topic: str = "/camera/camera_info"
    max_dt_s: float = 0.02
    chunks: int = 0
    rate_hz: float = 2.0
    timeout_s: float = 1800.0
    frame_id: str = ""
    camera_frame: str = "camera_optical"
    rectification: str = "auto"
    world_frame: str = ""

    def __post_init__(self) -> None:
        if not self.bag:
            raise ValueError("set bag:=DIR (a rosbag2 with camera images and poses)")
        if self.chunks < 0:
            raise ValueError("chunks must be >= 0")
        if not self.rate_hz > 0 or not self.timeout_s > 0:
            raise ValueError("rate_hz and timeout_s must be > 0")
        if self.rectification not in _RECTIFIED:
            raise ValueError(f"rectification must be one of {sorted(_RECTIFIED)}, got "
                             f"{self.rectification!r}")


class ReplayNode(MirageNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "replay", **kwargs) -> None:
        from geometry_msgs.msg import PoseStamped
        from mirage.msg import ChunkInfo
        from nav_msgs.msg import Path
        from sensor_msgs.msg import CameraInfo, Image

        super().__init__(node_name, **kwargs)
        self.config = cfg = self.declare_config(ReplayNodeConfig)
        self.msgs = RclpyMessages()
        self.report: dict | None = None
        self.path_msg = None  # the published target_path
        self._generated: dict[int, np.ndarray] = {}
        self._chunks: list[dict] = []
        self._lock = threading.Lock()
        self._pub = {
            "image": self.create_publisher(Image, "camera/image", QOS_SENSOR),
            "info": self.create_publisher(CameraInfo, "camera/camera_info", QOS_SENSOR),
            "pose": self.create_publisher(PoseStamped, "camera/pose", QOS_SENSOR),
            "path": self.create_publisher(Path, "target_path", QOS_LATCHED),
        }
        self.create_subscription(Image, "image", self._on_frame, QOS_FRAMES)
        self.create_subscription(ChunkInfo, "chunk_info", self._on_chunk, QOS_RELIABLE)
        self.stream = None  # set by start() once the bag was read; callbacks wait for it
        self.create_timer(1.0 / cfg.rate_hz, self._publish_first)
        self.create_timer(1.0, self._check_timeout)

    def _fail(self, message: str) -> None:
        self.get_logger().error(message)
        self.exit_code = 2
        self.done.set()

    def start(self) -> None:
        from mirage_ros.bag import read_camera_stream

        cfg = self.config
        try:
            s = read_camera_stream(cfg.bag, cfg.image_topic, cfg.pose_topic,
                                   cfg.camera_info_topic, max_dt_s=cfg.max_dt_s,
                                   rectified=_RECTIFIED[cfg.rectification],
                                   world_frame=cfg.world_frame or None)
        except (ValueError, FileNotFoundError, ImportError) as e:
            self._fail(f"cannot replay {cfg.bag}: {e}")
            return
        fit = (len(s.frames) - 1) // 32
        chunks = cfg.chunks or fit
        if fit < 1 or chunks > fit:
            self._fail(f"the bag has {len(s.frames)} posed frames; {max(chunks, 1)} chunk(s) "
                       f"need {1 + 32 * max(chunks, 1)}")
            return
        self.n = 1 + 32 * chunks
        self.index_of = {int(t): i for i, t in enumerate(s.stamps_ns[: self.n])}
        if len(self.index_of) != self.n:  # frames are told apart by stamp: one per frame
            self._fail(f"the bag's frames share stamps ({len(self.index_of)} distinct of "
                       f"{self.n}); cannot match generated frames to them")
            return
        self.get_logger().info(
            f"replaying {cfg.bag}: {self.n} of {len(s.frames)} frames ({chunks} chunks), "
            f"{s.warnings or 'no warnings'}")
        self._frame_id = cfg.frame_id or s.pose_frame_id or "world"
        T = torch.from_numpy(s.T_world_cam[: self.n])
        self.path_msg = path_from_T(self.msgs, T, s.stamps_ns[: self.n], self._frame_id)
        self.t_start = time.monotonic()
        self.stream = s  # last: the callbacks and timers start using it now
        self._pub["path"].publish(self.path_msg)
        self._publish_first()

    def _publish_first(self) -> None:
        from geometry_msgs.msg import PoseStamped

        if self.done.is_set() or self._generated or self.stream is None:
            return
        s, cfg = self.stream, self.config
        t0 = int(s.stamps_ns[0])
        hdr = self.header(cfg.camera_frame, t0)
        self._pub["image"].publish(self.msgs.image(np.ascontiguousarray(s.frames[0]), "rgb8",
                                                   hdr))
        self._pub["info"].publish(camera_info_msg(self.msgs, torch.from_numpy(s.K), s.image_hw,
                                                  hdr))
        self._pub["pose"].publish(PoseStamped(
            header=self.header(self._frame_id, t0),
            pose=pose_from_T(self.msgs, torch.from_numpy(s.T_world_cam[0]))))

    def _on_frame(self, msg) -> None:
        if self.stream is None or self.done.is_set():
            return
        t = stamp_to_ns(msg.header.stamp)
        i = self.index_of.get(t)
        if i is None or i == 0:
            self.get_logger().warning(f"a generated frame with stamp {t} matches no bag frame")
            return
        try:
            rgb = image_to_rgb(msg)
        except ValueError as e:
            self.get_logger().warning(f"generated frame dropped: {e}")
            return
        with self._lock:
            self._generated[i] = rgb
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """Done when every frame and every chunk's ChunkInfo (sent after its frames) is in."""
        with self._lock:
            complete = (len(self._generated) == self.n - 1
                        and len(self._chunks) == (self.n - 1) // 32)
        if complete:
            self._finish(0)

    def _on_chunk(self, msg) -> None:
        with self._lock:
            self._chunks.append({
                "chunk_index": int(msg.chunk_index), "first_frame": int(msg.first_frame),
                "num_frames": int(msg.num_frames),
                **{k: float(getattr(msg, k)) for k in (
                    "readout_s", "denoise_s", "decode_s", "depth_s", "masks_s", "encode_s",
                    "update_s", "total_s")},
                "hole_rate": float(msg.hole_rate),
            })
        if self.stream is not None:
            self._maybe_finish()

    def _check_timeout(self) -> None:
        if self.stream is not None and not self.done.is_set() and (
                time.monotonic() - self.t_start > self.config.timeout_s):
            self.get_logger().error(
                f"timeout: {len(self._generated)} of {self.n - 1} generated frames arrived")
            self._finish(1)

    def _finish(self, code: int) -> None:
        from mirage_ros.replay_report import write_replay_report

        if self.done.is_set():
            return
        s, cfg = self.stream, self.config
        gt = {i: s.frames[i] for i in range(1, self.n)}
        with self._lock:
            generated = dict(self._generated)
            chunks = list(self._chunks)
        extra = {"bag": str(Path(cfg.bag).resolve()), "frames": self.n,
                 "wall_s": time.monotonic() - self.t_start,
                 "bag_warnings": list(s.warnings), "dropped_no_pose": s.dropped_no_pose,
                 "bad_poses": s.bad_poses, "out_of_order": s.out_of_order}
        try:
            self.report = write_replay_report(cfg.out, gt, generated, chunks, extra)
            psnr = self.report["summary"]["psnr"]["mean"] or float("nan")
            ssim = self.report["summary"]["ssim"]["mean"] or float("nan")
            self.get_logger().info(
                f"report in {cfg.out}: PSNR {psnr:.2f} dB, SSIM {ssim:.3f} over "
                f"{self.report['counts']['matched']} frames")
        except ValueError as e:
            self.get_logger().error(f"cannot write the report: {e}")
            code = code or 1
        self.exit_code = code
        self.done.set()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(ReplayNode, argv))


if __name__ == "__main__":
    main()
