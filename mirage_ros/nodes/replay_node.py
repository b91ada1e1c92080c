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
``timeout_s``, with the partial report written; 2 for a bag it cannot use).
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
    camera_info_msg,
    path_from_T,
    pose_from_T,
    stamp_from_ns,
    stamp_to_ns,
)
from mirage_ros.node_api import NodeHandle, run_node

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


class ReplayNode:
    """See the module docstring."""

    def __init__(self, node: NodeHandle) -> None:
        self.node = node
        self.config = node.declare_config(ReplayNodeConfig)
        self.done = threading.Event()
        self.exit_code = 0
        self.report: dict | None = None
        self._generated: dict[int, np.ndarray] = {}
        self._chunks: list[dict] = []
        self._lock = threading.Lock()
        self._pub = {
            "image": node.publisher("sensor_msgs/msg/Image", "camera/image", "sensor"),
            "info": node.publisher("sensor_msgs/msg/CameraInfo", "camera/camera_info", "sensor"),
            "pose": node.publisher("geometry_msgs/msg/PoseStamped", "camera/pose", "sensor"),
            "path": node.publisher("nav_msgs/msg/Path", "target_path", "latched"),
        }
        node.subscription("sensor_msgs/msg/Image", "image", self._on_frame, "frames")
        node.subscription("mirage/msg/ChunkInfo", "chunk_info", self._on_chunk, "reliable")
        self.stream = None

    def start(self) -> None:
        from mirage_ros.bag import read_camera_stream

        cfg = self.config
        try:
            s = read_camera_stream(cfg.bag, cfg.image_topic, cfg.pose_topic,
                                   cfg.camera_info_topic, max_dt_s=cfg.max_dt_s,
                                   rectified=_RECTIFIED[cfg.rectification],
                                   world_frame=cfg.world_frame or None)
        except (ValueError, FileNotFoundError, ImportError) as e:
            self.node.logger.error("cannot replay %s: %s", cfg.bag, e)
            self.exit_code = 2
            self.done.set()
            return
        fit = (len(s.frames) - 1) // 32
        chunks = cfg.chunks or fit
        if fit < 1 or chunks > fit:
            self.node.logger.error("the bag has %d posed frames; %d chunk(s) need %d",
                                   len(s.frames), max(chunks, 1), 1 + 32 * max(chunks, 1))
            self.exit_code = 2
            self.done.set()
            return
        self.n = 1 + 32 * chunks
        self.index_of = {int(t): i for i, t in enumerate(s.stamps_ns[: self.n])}
        if len(self.index_of) != self.n:  # frames are told apart by stamp: one per frame
            self.node.logger.error("the bag's frames share stamps (%d distinct of %d); cannot "
                                   "match generated frames to them", len(self.index_of), self.n)
            self.exit_code = 2
            self.done.set()
            return
        self.stream = s
        self.t_start = time.monotonic()
        self.node.logger.info("replaying %s: %d of %d frames (%d chunks), %s", cfg.bag, self.n,
                              len(s.frames), chunks, s.warnings or "no warnings")
        frame_id = cfg.frame_id or s.pose_frame_id or "world"
        T = torch.from_numpy(s.T_world_cam[: self.n])
        self._pub["path"].publish(path_from_T(self.node.msgs, T, s.stamps_ns[: self.n], frame_id))
        self._frame_id = frame_id
        self.node.timer(1.0 / cfg.rate_hz, self._publish_first)
        self.node.timer(1.0, self._check_timeout)
        self._publish_first()

    def _publish_first(self) -> None:
        if self.done.is_set() or self._generated or self.stream is None:
            return
        m, s, cfg = self.node.msgs, self.stream, self.config
        stamp = stamp_from_ns(m, int(s.stamps_ns[0]))
        hdr = m.new("std_msgs/msg/Header", stamp=stamp, frame_id=cfg.camera_frame)
        self._pub["image"].publish(m.image(np.ascontiguousarray(s.frames[0]), "rgb8", hdr))
        self._pub["info"].publish(camera_info_msg(m, torch.from_numpy(s.K), s.image_hw, hdr))
        self._pub["pose"].publish(m.new(
            "geometry_msgs/msg/PoseStamped",
            header=m.new("std_msgs/msg/Header", stamp=stamp, frame_id=self._frame_id),
            pose=pose_from_T(m, torch.from_numpy(s.T_world_cam[0]))))

    def _on_frame(self, msg) -> None:
        if self.stream is None or self.done.is_set():
            return
        i = self.index_of.get(stamp_to_ns(msg.header.stamp))
        if i is None or i == 0:
            self.node.logger.warning("a generated frame with stamp %d matches no bag frame",
                                     stamp_to_ns(msg.header.stamp))
            return
        try:
            rgb = image_to_rgb(msg)
        except ValueError as e:
            self.node.logger.warning("generated frame dropped: %s", e)
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
            self.node.logger.error("timeout: %d of %d generated frames arrived",
                                   len(self._generated), self.n - 1)
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
            self.node.logger.info(
                "report in %s: PSNR %.2f dB, SSIM %.3f over %d frames", cfg.out,
                self.report["summary"]["psnr"]["mean"] or float("nan"),
                self.report["summary"]["ssim"]["mean"] or float("nan"),
                self.report["counts"]["matched"])
        except ValueError as e:
            self.node.logger.error("cannot write the report: %s", e)
            code = code or 1
        self.exit_code = code
        self.done.set()


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_node(ReplayNode, "replay", argv))


if __name__ == "__main__":
    main()
