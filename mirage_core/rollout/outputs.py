"""Writing a rollout to disk as it is generated: frames, video, cameras and memory statistics.

``DIR/frames/NNNNN.png``    every RGB frame (frame 0 = the input image)
``DIR/video.mp4``           H.264 video of the same frames
``DIR/cameras.json``        the poses and intrinsics actually used, per RGB frame
``DIR/memory_stats.json``   memory size and growth, and time per stage, per chunk
``DIR/readout.mp4``         per key frame (RGB frame 4j of each target latent), side by side:
                            the generated frame | the memory readout decoded to RGB | its
                            visibility mask (white = a memory point, black = a hole); at a
                            quarter of the frame rate (one key frame per 4 frames)

The JSON files are rewritten atomically after every chunk, so an interrupted rollout leaves
consistent files describing the chunks that finished. A rollout into a directory that holds
an earlier one replaces it: the earlier run's files of these names (and only those: frames
named ``NNNNN.png``) are removed first, so no stale frame or readout video outlives it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirage_core.errors import MirageInputError
from mirage_core.rollout.schedule import TEMPORAL_STRIDE

__all__ = ["RolloutWriter", "summarize_chunks", "write_json_atomic"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


#: the files a rollout writes at the top of its directory (module docstring)
ROLLOUT_FILES = ("video.mp4", "readout.mp4", "cameras.json", "memory_stats.json")


def _remove_earlier_rollout(out: Path) -> None:
    """Delete what an earlier rollout wrote into ``out`` (its named files and its
    ``frames/NNNNN.png``); any other file is left alone."""
    for name in ROLLOUT_FILES:
        for p in (out / name, out / (name + ".tmp")):
            p.unlink(missing_ok=True)
    for p in (out / "frames").glob("*.png"):
        if len(p.stem) == 5 and p.stem.isdigit():
            p.unlink()


class RolloutWriter:
    """Streams a rollout into ``out_dir`` (see the module docstring).

    Args:
        out_dir: output directory (created; an earlier rollout's files in it are removed
            first, nothing else: module docstring).
        fps: video frame rate.
        K: ``[3, 3]`` intrinsics used.
        image_hw: ``(H, W)``.
        meta: anything to record at the top of ``memory_stats.json`` (config, models...).
        video: write ``video.mp4`` (needs imageio + imageio-ffmpeg: ``pip install .[demo]``).
    """

    def __init__(self, out_dir: str | Path, fps: float, K: torch.Tensor, image_hw,
                 meta: dict[str, Any], video: bool = True) -> None:
        self.out = Path(out_dir)
        self.frames_dir = self.out / "frames"
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        _remove_earlier_rollout(self.out)
        self.fps = float(fps)
        self.K = torch.as_tensor(K, dtype=torch.float64)
        self.image_hw = tuple(int(v) for v in image_hw)
        self.meta = meta
        self.cameras: list[dict[str, Any]] = []
        self.chunks: list[dict[str, Any]] = []
        self.initial: dict[str, Any] = {}
        self._video = None
        self._readout_video = None
        self._want_video = bool(video)
        self.n_frames = 0
        if video:
            try:
                import imageio.v2 as imageio
            except ImportError as e:
                raise MirageInputError(
                    "writing video.mp4 needs imageio and imageio-ffmpeg: pip install -e '.[demo]'"
                ) from e
            self._video = imageio.get_writer(
                str(self.out / "video.mp4"), fps=self.fps, codec="libx264", quality=8,
                pixelformat="yuv420p", macro_block_size=16,
            )

    def add_frames(self, first_index: int, frames: np.ndarray, T_world_cam: torch.Tensor,
                   timestamps: torch.Tensor) -> None:
        """Append RGB frames ``[N, H, W, 3]`` uint8 with their poses ``[N, 4, 4]`` and times."""
        from PIL import Image

        for k, frame in enumerate(frames):
            i = first_index + k
            Image.fromarray(frame).save(self.frames_dir / f"{i:05d}.png")
            if self._video is not None:
                self._video.append_data(frame)
            entry: dict[str, Any] = {
                "index": i,
                "timestamp": float(timestamps[k]),
                "T_world_cam": T_world_cam[k].tolist(),
            }
            if i % TEMPORAL_STRIDE == 0:
                entry["latent_index"] = i // TEMPORAL_STRIDE
            self.cameras.append(entry)
        self.n_frames += len(frames)

    def add_readout(self, key_frames: np.ndarray, readout_rgb: np.ndarray,
                    readout_mask: np.ndarray) -> None:
        """Append key frames to ``readout.mp4`` beside what the memory gave them.

        Args:
            key_frames: ``[N, H, W, 3]`` uint8 generated RGB frames (one per target latent).
            readout_rgb: ``[N, H, W, 3]`` uint8 decoded readouts.
            readout_mask: ``[N, h, w]`` bool readout visibility on the latent grid (shown
                nearest-upsampled to ``H x W``).
        """
        if self._readout_video is None and self._want_video:
            import imageio.v2 as imageio

            self._readout_video = imageio.get_writer(
                str(self.out / "readout.mp4"), fps=max(self.fps / TEMPORAL_STRIDE, 1.0),
                codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=16,
            )
        if self._readout_video is None:
            return
        H, W = self.image_hw
        for f, r, v in zip(key_frames, readout_rgb, readout_mask, strict=True):
            sy, sx = H // v.shape[0], W // v.shape[1]
            m = np.repeat(np.repeat(v, sy, axis=0), sx, axis=1).astype(np.uint8) * 255
            self._readout_video.append_data(
                np.concatenate([f, r, np.repeat(m[..., None], 3, axis=2)], axis=1))

    def add_chunk(self, record: dict[str, Any]) -> None:
        self.chunks.append(record)
        self.flush()

    def flush(self) -> None:
        write_json_atomic(self.out / "cameras.json", {
            "convention": (
                "OpenCV camera frame (+X right, +Y down, +Z forward); T_world_cam maps camera "
                "to world coordinates; the world frame is the first camera; pixel centres at "
                "+0.5; latent frame j uses the pose of RGB frame 4j"
            ),
            "image_hw": list(self.image_hw),
            "K": self.K.tolist(),
            "fps": self.fps,
            "frames": self.cameras,
        })
        write_json_atomic(self.out / "memory_stats.json", {
            **self.meta,
            "initial": self.initial,
            "chunks": self.chunks,
            "summary": summarize_chunks(self.chunks),
        })

    def close(self) -> None:
        for v in (self._video, self._readout_video):
            if v is not None:
                v.close()
        self._video = self._readout_video = None
        self.flush()


def summarize_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the per-chunk records written to ``memory_stats.json`` (its ``summary``)."""
    if not chunks:
        return {}
    keys = chunks[0]["time_s"].keys()
    total = {k: sum(c["time_s"][k] for c in chunks) for k in keys}
    mem_s = total.get("readout", 0.0) + total.get("update", 0.0)
    return {
        "chunks": len(chunks),
        "final_points": chunks[-1]["memory"]["points"],
        "final_bytes": chunks[-1]["memory"]["bytes"],
        "mean_growth_bytes_per_chunk": float(
            np.mean([c["memory"]["growth_bytes"] for c in chunks])
        ),
        "time_s_total": total,
        "memory_readout_update_share_of_chunk_time": (
            mem_s / total["total"] if total.get("total") else None
        ),
        "mean_step_s": float(np.mean([c["mean_step_s"] for c in chunks])),
        "peak_gpu_bytes": max((c.get("peak_gpu_bytes") or 0) for c in chunks) or None,
    }
