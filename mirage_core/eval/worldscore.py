"""Export a Mirage rollout directory in WorldScore's per-sample output layout.

Input: a rollout directory written by :class:`mirage_core.rollout.outputs.RolloutWriter`::

    ROLLOUT/frames/NNNNN.png      RGB frames 0 .. N-1 (frame 0 = the input image)
    ROLLOUT/cameras.json          per-frame T_world_cam, K, image_hw, fps
    ROLLOUT/memory_stats.json     job options (prompt, ...); optional here
    ROLLOUT/video.mp4             optional; re-encoded from the frames when missing

Output (the layout WorldScore evaluates for one sample)::

    OUT/frames/NNNNN.png          the same frames, renumbered 0 .. N-1 (zero-padded)
    OUT/videos/output.mp4         H.264 video of the frames
    OUT/camera_data.json          poses and intrinsics (fields: :data:`CAMERA_FIELDS`)
    OUT/image_data.json           prompt and frame list (fields: :data:`IMAGE_FIELDS`)

**Schema provenance.** The file names above are those of WorldScore's output layout; the
*fields inside* the two JSON files were written from the WorldScore paper's description (camera
poses per frame, intrinsics, image size, prompt, input image) without access to WorldScore's
code. Every field name lives in :data:`CAMERA_FIELDS`, :data:`IMAGE_FIELDS` and
:data:`FRAME_NAME` so that matching WorldScore's exact schema is a one-place edit.
``docs/evaluation.md`` lists them.

Pose convention written out: ``camera_to_world`` 4 x 4 matrices, OpenCV camera axes (+X right,
+Y down, +Z forward), world = the first camera, metres up to the rollout's scale. Intrinsics
are pixel ``K`` (3 x 3) of the exported frames, pixel centres at +0.5.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirage_core.errors import MirageInputError

__all__ = [
    "CAMERA_FIELDS",
    "FRAME_NAME",
    "IMAGE_FIELDS",
    "RolloutDir",
    "export_worldscore",
    "main_export_worldscore",
    "read_rollout_dir",
]

#: File name of exported frame ``i`` (zero-padded, as the rollout writes them).
FRAME_NAME = "{:05d}.png"
#: camera_data.json: our meaning -> field name (edit here to match WorldScore's schema).
CAMERA_FIELDS: dict[str, str] = {
    "poses": "cameras",  # [N][4][4] camera-to-world, OpenCV axes, per frame
    "intrinsics": "intrinsics",  # [N][3][3] pixel K per frame
    "image_size": "image_size",  # [H, W]
    "fps": "fps",
    "num_frames": "num_frames",
    "convention": "convention",  # free-text description of the pose convention
}
#: image_data.json: our meaning -> field name.
IMAGE_FIELDS: dict[str, str] = {
    "prompt": "prompt",  # text prompt of the rollout ("" if unknown)
    "input_image": "input_image",  # relative path of the input frame (frame 0)
    "frames": "frames",  # relative paths of all frames, in order
    "num_frames": "num_frames",
    "source": "source",  # the rollout directory this was exported from
}
POSE_CONVENTION = (
    "camera_to_world 4x4; OpenCV camera axes (+X right, +Y down, +Z forward); world = first "
    "camera; pixel intrinsics K with pixel centres at +0.5"
)


@dataclass
class RolloutDir:
    """A validated rollout directory.

    Attributes:
        root: the directory.
        frame_paths: ``N`` PNG paths, frame ``i`` at position ``i``.
        T_world_cam: ``[N, 4, 4]`` float64 numpy camera-to-world poses.
        K: ``[3, 3]`` float64 numpy pixel intrinsics.
        image_hw: ``(H, W)``.
        fps: frame rate.
        prompt: the prompt from ``memory_stats.json`` (``""`` when absent).
    """

    root: Path
    frame_paths: list[Path]
    T_world_cam: np.ndarray
    K: np.ndarray
    image_hw: tuple[int, int]
    fps: float
    prompt: str

    def __len__(self) -> int:
        return len(self.frame_paths)

    def load_frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as uint8 ``[H, W, 3]`` (negative ``i`` counts from the end)."""
        from PIL import Image

        path = self.frame_paths[i]
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        if a.shape[:2] != self.image_hw:
            raise MirageInputError(
                f"{path}: frame is {a.shape[0]}x{a.shape[1]}, cameras.json says "
                f"{self.image_hw[0]}x{self.image_hw[1]}"
            )
        return a


def read_rollout_dir(rollout_dir: str | Path) -> RolloutDir:
    """Read and check a rollout directory (see the module docstring).

    Raises:
        MirageInputError: the directory, ``frames/`` or ``cameras.json`` is missing or
            unreadable, or frames and cameras disagree (an interrupted/incomplete rollout).
    """
    root = Path(rollout_dir)
    if not root.is_dir():
        raise MirageInputError(f"rollout directory {str(root)!r} does not exist")
    frames_dir, cams = root / "frames", root / "cameras.json"
    if not frames_dir.is_dir():
        raise MirageInputError(
            f"{root} has no frames/ directory: not a rollout directory (expected frames/, "
            "cameras.json, video.mp4, memory_stats.json from `mirage rollout`)"
        )
    if not cams.is_file():
        raise MirageInputError(f"{root} has no cameras.json: incomplete rollout directory")
    try:
        cam = json.loads(cams.read_text())
        entries = cam["frames"]
        K = np.asarray(cam["K"], dtype=np.float64)
        hw = (int(cam["image_hw"][0]), int(cam["image_hw"][1]))
        fps = float(cam.get("fps", 24.0))
        T = np.asarray([e["T_world_cam"] for e in entries], dtype=np.float64).reshape(-1, 4, 4)
        indices = [int(e["index"]) for e in entries]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise MirageInputError(
            f"{cams}: unreadable cameras.json ({type(e).__name__}: {e})"
        ) from None
    if K.shape != (3, 3):
        raise MirageInputError(f"{cams}: K must be 3x3, got shape {K.shape}")
    if not entries:
        raise MirageInputError(f"{cams} lists no frames: empty rollout")
    if indices != list(range(len(indices))):
        raise MirageInputError(f"{cams}: frame indices are not 0 .. {len(indices) - 1} in order")
    pngs = sorted(frames_dir.glob("*.png"))
    names = {p.name for p in pngs}
    missing = [i for i in indices if FRAME_NAME.format(i) not in names]
    if missing or len(pngs) != len(indices):
        raise MirageInputError(
            f"{root}: incomplete rollout: cameras.json lists {len(indices)} frames, frames/ "
            f"holds {len(pngs)} PNGs" + (f"; missing e.g. {FRAME_NAME.format(missing[0])}"
                                        if missing else "")
        )
    prompt = ""
    stats = root / "memory_stats.json"
    if stats.is_file():
        try:
            prompt = str(json.loads(stats.read_text()).get("job", {}).get("prompt") or "")
        except ValueError:
            prompt = ""
    paths = [frames_dir / FRAME_NAME.format(i) for i in indices]
    return RolloutDir(root, paths, T, K, hw, fps, prompt)


def _write_video(frames: list[Path], path: Path, fps: float) -> None:
    try:
        import imageio.v2 as imageio
    except ImportError as e:
        raise MirageInputError(
            "the rollout has no video.mp4 and writing one needs imageio and imageio-ffmpeg: "
            "pip install -e '.[demo]'"
        ) from e
    from PIL import Image

    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8,
                            pixelformat="yuv420p", macro_block_size=16) as w:
        for p in frames:
            with Image.open(p) as im:
                w.append_data(np.asarray(im.convert("RGB")))


def export_worldscore(rollout_dir: str | Path, out_dir: str | Path,
                      prompt: str | None = None) -> dict[str, Any]:
    """Write ``rollout_dir`` in WorldScore's output layout under ``out_dir``.

    Args:
        rollout_dir: a complete rollout directory (``mirage rollout`` output).
        out_dir: created if needed; existing ``frames/`` in it is replaced.
        prompt: overrides the prompt recorded in ``memory_stats.json``.
    Returns:
        ``{"out_dir", "num_frames", "image_hw", "video_copied"}``.
    Raises:
        MirageInputError: missing or incomplete rollout directory (see :func:`read_rollout_dir`).
    """
    r = read_rollout_dir(rollout_dir)
    out = Path(out_dir)
    if out.resolve() == r.root.resolve():
        raise MirageInputError("out_dir must differ from rollout_dir")
    frames_out = out / "frames"
    if frames_out.exists():
        shutil.rmtree(frames_out)
    frames_out.mkdir(parents=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rel = []
    for i, src in enumerate(r.frame_paths):
        name = FRAME_NAME.format(i)
        shutil.copyfile(src, frames_out / name)
        rel.append(f"frames/{name}")
    video = out / "videos" / "output.mp4"
    src_video = r.root / "video.mp4"
    copied = src_video.is_file() and src_video.stat().st_size > 0
    if copied:
        shutil.copyfile(src_video, video)
    else:
        _write_video(r.frame_paths, video, r.fps)
    n = len(r)
    cf, imf = CAMERA_FIELDS, IMAGE_FIELDS
    (out / "camera_data.json").write_text(json.dumps({
        cf["poses"]: r.T_world_cam.tolist(),
        cf["intrinsics"]: [r.K.tolist()] * n,
        cf["image_size"]: list(r.image_hw),
        cf["fps"]: r.fps,
        cf["num_frames"]: n,
        cf["convention"]: POSE_CONVENTION,
    }, indent=1))
    (out / "image_data.json").write_text(json.dumps({
        imf["prompt"]: r.prompt if prompt is None else prompt,
        imf["input_image"]: rel[0],
        imf["frames"]: rel,
        imf["num_frames"]: n,
        imf["source"]: str(r.root),
    }, indent=1))
    return {"out_dir": str(out), "num_frames": n, "image_hw": list(r.image_hw),
            "video_copied": copied}


def main_export_worldscore(argv: list[str] | None = None) -> int:
    """``mirage eval export-worldscore ROLLOUT_DIR OUT_DIR [--prompt TEXT]``."""
    ap = argparse.ArgumentParser(
        prog="mirage eval export-worldscore",
        description="Write a rollout directory in WorldScore's output layout "
                    "(frames/, videos/output.mp4, camera_data.json, image_data.json).",
    )
    ap.add_argument("rollout_dir", help="a `mirage rollout` output directory")
    ap.add_argument("out_dir", help="where to write the WorldScore sample")
    ap.add_argument("--prompt", default=None, help="override the recorded prompt")
    args = ap.parse_args(argv)
    info = export_worldscore(args.rollout_dir, args.out_dir, prompt=args.prompt)
    print(f"wrote {info['num_frames']} frames to {info['out_dir']} "
          f"({'video copied' if info['video_copied'] else 'video re-encoded'})")
    return 0
