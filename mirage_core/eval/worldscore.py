"""Export a Mirage rollout directory as one WorldScore sample (WorldScore's output layout).

Input: a rollout directory written by :class:`mirage_core.rollout.outputs.RolloutWriter`::

    ROLLOUT/frames/NNNNN.png      RGB frames 0 .. N-1 (frame 0 = the input image)
    ROLLOUT/cameras.json          per-frame T_world_cam (OpenCV c2w), K, image_hw, fps
    ROLLOUT/memory_stats.json     job options (prompt, ...); optional here
    ROLLOUT/video.mp4             optional; re-encoded from the frames when missing

Output: one WorldScore *instance directory* (what WorldScore's evaluator reads per sample)::

    SAMPLE/frames/000.png ...     the frames, renumbered 0 .. N-1 (:func:`frame_name`)
    SAMPLE/input_image.png        frame 0 (the conditioning image); WorldScore requires it
    SAMPLE/videos/output.mp4      H.264 video of the frames (WorldScore's evaluator ignores it)
    SAMPLE/camera_data.json       cameras_interp / cameras / scale / focal_length
    SAMPLE/image_data.json        the WorldScore instance record + num_scenes, total_frames,
                                  anchor_frame_idx

``SAMPLE`` is ``out_dir`` itself, or with ``nest=True`` ``out_dir/<subdir>`` where ``out_dir`` is
the evaluator's ``worldscore_output`` root and ``<subdir>`` comes from the instance record
(:func:`worldscore_instance_subdir`): ``static/<visual_style>/<scene_type>/<category>/<name>`` or
``dynamic/<visual_style>/<motion_type>/<name>``.

**Schema provenance.** Checked against WorldScore's public code (copies of
haoyi-duan/WorldScore's ``worldscore/benchmark/...`` in other repositories; the list is in
``docs/evaluation.md``): the evaluator (``helpers/evaluator.py``) reads
``camera_data.json["cameras_interp"]`` ([N][4][4]) and ``.get("scale", 1.0)``;
``image_data.json`` keys ``camera_path``, ``total_frames``, ``prompt_list``, ``num_scenes``,
``anchor_frame_idx``, ``content_list`` (static) or ``total_frames``, ``prompt``, ``num_scenes``,
``masks``, ``objects`` (dynamic); ``input_image.png``; and every ``.png``/``.jpg`` under
``frames/`` in sorted order, requiring ``len(frames) == total_frames == len(cameras_interp)``.

**Pose convention written out** (:func:`opencv_c2w_to_worldscore`): camera-to-world 4 x 4, in
the frame WorldScore's camera-error metric maps DROID-SLAM's (OpenCV, first-frame) estimate
into before comparing it with ``cameras_interp``: ``c2w_ws = diag(-1,1,1,1) @ c2w_cv @
diag(1,1,-1,1)`` with ``c2w_cv`` re-based so that frame 0 is the identity. WorldScore's own
trajectories (``CameraGen``: PyTorch3D extrinsics -> Blender c2w) start at the same
``diag(-1,1,-1,1)``. Translation units do not matter (the metric fits a scale).
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
    "ROLLOUT_FRAME_NAME",
    "WORLDSCORE_LAYOUTS",
    "RolloutDir",
    "export_worldscore",
    "frame_name",
    "main_export_worldscore",
    "opencv_c2w_to_worldscore",
    "read_rollout_dir",
    "worldscore_c2w_to_opencv",
    "worldscore_instance_subdir",
]

#: File name of frame ``i`` in a *rollout* directory (RolloutWriter's naming; input side).
ROLLOUT_FRAME_NAME = "{:05d}.png"
#: File name of exported frame ``i``: WorldScore's ``save_frames`` writes ``f"{i:03d}.png"``.
#: :func:`frame_name` widens the padding past 1000 frames so that sorted order stays frame order
#: (WorldScore sorts the path strings).
FRAME_NAME = "{:03d}.png"
#: camera_data.json: our meaning -> WorldScore's key.
CAMERA_FIELDS: dict[str, str] = {
    "poses": "cameras_interp",  # [N][4][4] per-frame c2w, WorldScore convention; READ by eval
    "scale": "scale",  # GT translations are divided by it; READ by eval (default 1.0)
    "keyframes": "cameras",  # [num_scenes+1][4][4] poses at anchor_frame_idx; not read by eval
    "focal_length": "focal_length",  # pixels; written by WorldScore's CameraGen; not read by eval
    "mirage": "mirage",  # our extras (OpenCV poses, K, image size, fps); ignored by WorldScore
}
#: image_data.json: our meaning -> WorldScore's key.
IMAGE_FIELDS: dict[str, str] = {
    "total_frames": "total_frames",  # == number of frames == len(cameras_interp)
    "num_scenes": "num_scenes",  # == len(camera_path) (every layout is one scene)
    "anchor_frame_idx": "anchor_frame_idx",  # [num_scenes+1] frame of each scene (static)
    "prompt_list": "prompt_list",  # [num_scenes+1] text per anchor (static; CLIP score)
    "prompt": "prompt",  # the text prompt (dynamic instances)
    "camera_path": "camera_path",  # e.g. ["push_in"]; [0] must be a WorldScore layout (static)
    "content_list": "content_list",  # [num_scenes+1] object lists (static; object_control)
    "visual_movement": "visual_movement",  # "static" | "dynamic"
    "mirage": "mirage",  # our extras (source rollout, fps); ignored by WorldScore
}
#: Camera layouts WorldScore knows (``layout_info`` in ``worldscore/benchmark/utils/utils.py``);
#: each counts as one scene.
WORLDSCORE_LAYOUTS = (
    "push_in", "pull_out", "move_left", "move_right", "orbit_left", "orbit_right", "pan_left",
    "pan_right", "pull_left", "pull_right", "fixed",
)
#: The keys WorldScore's evaluator reads from image_data.json, per visual movement.
_REQUIRED_IMAGE_KEYS = {
    "static": ("camera_path", "total_frames", "prompt_list", "num_scenes", "anchor_frame_idx",
               "content_list"),
    "dynamic": ("total_frames", "prompt", "num_scenes", "masks", "objects"),
}
POSE_CONVENTION = (
    "cameras_interp: camera_to_world 4x4 in WorldScore's frame, "
    "c2w_ws = diag(-1,1,1,1) @ inv(T_cv[0]) @ T_cv[i] @ diag(1,1,-1,1) with T_cv the rollout's "
    "OpenCV camera-to-world poses; frame 0 -> diag(-1,1,-1,1)"
)
_WS_WORLD = np.diag([-1.0, 1.0, 1.0, 1.0])
_WS_CAM = np.diag([1.0, 1.0, -1.0, 1.0])


def frame_name(i: int, n: int) -> str:
    """Exported name of frame ``i`` of ``n``: ``FRAME_NAME`` (3 digits), wider past 1000."""
    width = max(3, len(str(max(n - 1, 0))))
    return f"{i:0{width}d}.png"


def opencv_c2w_to_worldscore(T_world_cam: np.ndarray) -> np.ndarray:
    """``[N, 4, 4]`` OpenCV camera-to-world poses -> WorldScore ``cameras_interp`` poses.

    Re-bases on frame 0 (WorldScore's trajectories start at their first camera), then applies
    the axis change WorldScore's camera-error metric applies to its DROID-SLAM estimate, so that
    frames which follow ``T_world_cam`` exactly score zero camera error.
    """
    T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
    rel = np.linalg.inv(T[0]) @ T
    return _WS_WORLD @ rel @ _WS_CAM


def worldscore_c2w_to_opencv(cameras_interp: Any) -> np.ndarray:
    """Inverse of :func:`opencv_c2w_to_worldscore` (for frame-0-based poses): WorldScore's
    ``cameras_interp`` -> ``[N, 4, 4]`` OpenCV camera-to-world, frame 0 = identity. Use it to
    drive a rollout along a WorldScore instance's trajectory."""
    C = np.asarray(cameras_interp, dtype=np.float64).reshape(-1, 4, 4)
    T = _WS_WORLD @ C @ _WS_CAM
    return np.linalg.inv(T[0]) @ T


def worldscore_instance_subdir(image_data: dict[str, Any]) -> Path:
    """Where WorldScore's evaluator looks for this instance, relative to ``worldscore_output``.

    Mirrors WorldScore's dataloader: ``static/<visual_style>/<scene_type>/<category>/<name>``
    (category = parent folder of ``image``, name = its file stem) or
    ``dynamic/<visual_style>/<motion_type>/<name>``.
    """
    try:
        movement = image_data["visual_movement"]
        parts = str(image_data["image"]).split("/")
        name = parts[-1].split(".")[0]
        if movement == "static":
            return Path("static", image_data["visual_style"], image_data["scene_type"],
                        parts[-2], name)
        if movement == "dynamic":
            return Path("dynamic", image_data["visual_style"], image_data["motion_type"], name)
    except (KeyError, IndexError) as e:
        raise MirageInputError(
            f"WorldScore instance record lacks {e} (needs visual_movement, visual_style, "
            "image, and scene_type or motion_type)"
        ) from None
    raise MirageInputError(f"unknown visual_movement {movement!r} (static or dynamic)")


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
    missing = [i for i in indices if ROLLOUT_FRAME_NAME.format(i) not in names]
    if missing or len(pngs) != len(indices):
        raise MirageInputError(
            f"{root}: incomplete rollout: cameras.json lists {len(indices)} frames, frames/ "
            f"holds {len(pngs)} PNGs"
            + (f"; missing e.g. {ROLLOUT_FRAME_NAME.format(missing[0])}" if missing else "")
        )
    prompt = ""
    stats = root / "memory_stats.json"
    if stats.is_file():
        try:
            prompt = str(json.loads(stats.read_text()).get("job", {}).get("prompt") or "")
        except ValueError:
            prompt = ""
    paths = [frames_dir / ROLLOUT_FRAME_NAME.format(i) for i in indices]
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


def _load_instance(instance: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    if instance is None:
        return None
    if isinstance(instance, dict):
        return dict(instance)
    p = Path(instance)
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise MirageInputError(f"{p}: unreadable WorldScore instance record ({e})") from None
    if not isinstance(rec, dict):
        raise MirageInputError(f"{p}: a WorldScore instance record is a JSON object")
    return rec


def _image_data(r: RolloutDir, prompt: str | None, instance: dict[str, Any] | None,
                camera_path: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """image_data.json content and the keys WorldScore reads that it still lacks."""
    f = IMAGE_FIELDS
    n = len(r)
    text = r.prompt if prompt is None else prompt
    rec: dict[str, Any] = dict(instance or {})
    movement = rec.setdefault(f["visual_movement"], "static")
    if movement not in _REQUIRED_IMAGE_KEYS:
        raise MirageInputError(f"unknown visual_movement {movement!r} (static or dynamic)")
    if camera_path is not None:
        rec[f["camera_path"]] = list(camera_path)
    path = rec.get(f["camera_path"])
    if path is not None:
        if isinstance(path, str) or not path:
            raise MirageInputError(f"camera_path must be a non-empty list, got {path!r}")
        bad = [x for x in path if x not in WORLDSCORE_LAYOUTS]
        if bad:
            raise MirageInputError(f"camera_path {bad} not WorldScore layouts "
                                   f"({', '.join(WORLDSCORE_LAYOUTS)})")
    scenes = len(path) if path else 1
    if (n - 1) % scenes:
        raise MirageInputError(
            f"{n} frames cannot be split into {scenes} scenes: WorldScore expects "
            f"total_frames = num_scenes * (frames_per_scene - 1) + 1"
        )
    rec[f["num_scenes"]] = scenes
    rec[f["total_frames"]] = n
    if movement == "static":
        rec[f["anchor_frame_idx"]] = [k * (n - 1) // scenes for k in range(scenes + 1)]
        if f["prompt_list"] not in rec:  # an instance record's own list is kept
            rec[f["prompt_list"]] = [text] * (scenes + 1)
    if prompt is not None or f["prompt"] not in rec:
        rec[f["prompt"]] = text
    rec[f["mirage"]] = {"source": str(r.root), "fps": r.fps, "image_hw": list(r.image_hw)}
    missing = [k for k in _REQUIRED_IMAGE_KEYS[movement] if k not in rec]
    return rec, missing


def export_worldscore(rollout_dir: str | Path, out_dir: str | Path, prompt: str | None = None,
                      instance: dict[str, Any] | str | Path | None = None,
                      camera_path: list[str] | None = None, nest: bool = False) -> dict[str, Any]:
    """Write ``rollout_dir`` as one WorldScore sample (see the module docstring).

    Args:
        rollout_dir: a complete rollout directory (``mirage rollout`` output).
        out_dir: the sample directory (created if needed; its ``frames/`` is replaced and a
            stale ``evaluation.json`` removed, since WorldScore reuses one if present). With
            ``nest``: WorldScore's ``worldscore_output`` root instead.
        prompt: overrides the prompt recorded in ``memory_stats.json``.
        instance: WorldScore's record for the benchmark instance this rollout answers (a dict or
            a JSON file, e.g. the ``image_data.json`` WorldScore's dataloader writes); its keys
            are kept (``camera_path``, ``prompt_list``, ``content_list``, ``masks`` ...).
        camera_path: WorldScore layouts (e.g. ``["push_in"]``) when there is no instance record.
        nest: place the sample at ``out_dir / worldscore_instance_subdir(instance)``.
    Returns:
        ``{"out_dir", "sample_dir", "num_frames", "image_hw", "video_copied",
        "missing_keys"}``; ``missing_keys`` lists image_data keys WorldScore's evaluator reads
        that could not be filled (empty = ready to evaluate).
    Raises:
        MirageInputError: missing or incomplete rollout directory (see :func:`read_rollout_dir`),
            unreadable instance record, unknown layout, or a frame count that does not split
            into the instance's scenes.
    """
    r = read_rollout_dir(rollout_dir)
    inst = _load_instance(instance)
    image_data, missing = _image_data(r, prompt, inst, camera_path)
    out = Path(out_dir)
    if nest:
        if inst is None:
            raise MirageInputError("nest=True needs the WorldScore instance record (instance=)")
        out = out / worldscore_instance_subdir(image_data)
    if out.resolve() == r.root.resolve():
        raise MirageInputError("out_dir must differ from rollout_dir")
    frames_out = out / "frames"
    if frames_out.exists():
        shutil.rmtree(frames_out)
    frames_out.mkdir(parents=True)
    (out / "evaluation.json").unlink(missing_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    n = len(r)
    for i, src in enumerate(r.frame_paths):
        shutil.copyfile(src, frames_out / frame_name(i, n))
    shutil.copyfile(r.frame_paths[0], out / "input_image.png")
    video = out / "videos" / "output.mp4"
    src_video = r.root / "video.mp4"
    copied = src_video.is_file() and src_video.stat().st_size > 0
    if copied:
        shutil.copyfile(src_video, video)
    else:
        _write_video(r.frame_paths, video, r.fps)
    cf = CAMERA_FIELDS
    c2w = opencv_c2w_to_worldscore(r.T_world_cam)
    anchors = image_data.get(IMAGE_FIELDS["anchor_frame_idx"], [0, n - 1])
    (out / "camera_data.json").write_text(json.dumps({
        cf["focal_length"]: float(r.K[0, 0]),
        cf["scale"]: 1.0,
        cf["keyframes"]: c2w[anchors].tolist(),
        cf["poses"]: c2w.tolist(),
        cf["mirage"]: {
            "T_world_cam_opencv": r.T_world_cam.tolist(),
            "K": r.K.tolist(),
            "image_hw": list(r.image_hw),
            "fps": r.fps,
            "convention": POSE_CONVENTION,
        },
    }, indent=1))
    (out / "image_data.json").write_text(json.dumps(image_data, indent=1))
    return {"out_dir": str(Path(out_dir)), "sample_dir": str(out), "num_frames": n,
            "image_hw": list(r.image_hw), "video_copied": copied, "missing_keys": missing}


def main_export_worldscore(argv: list[str] | None = None) -> int:
    """``mirage eval export-worldscore ROLLOUT_DIR OUT_DIR [--prompt T] [--instance J] ...``."""
    ap = argparse.ArgumentParser(
        prog="mirage eval export-worldscore",
        description="Write a rollout directory as one WorldScore sample (frames/, "
                    "input_image.png, videos/output.mp4, camera_data.json, image_data.json).",
    )
    ap.add_argument("rollout_dir", help="a `mirage rollout` output directory")
    ap.add_argument("out_dir", help="the sample directory (with --nest: worldscore_output root)")
    ap.add_argument("--prompt", default=None, help="override the recorded prompt")
    ap.add_argument("--instance", default=None,
                    help="WorldScore instance record (JSON) this rollout answers")
    ap.add_argument("--camera-path", default=None,
                    help="comma-separated WorldScore layouts, e.g. push_in (without --instance)")
    ap.add_argument("--nest", action="store_true",
                    help="write to OUT_DIR/static|dynamic/... as WorldScore's evaluator expects")
    args = ap.parse_args(argv)
    cp = args.camera_path.split(",") if args.camera_path else None
    info = export_worldscore(args.rollout_dir, args.out_dir, prompt=args.prompt,
                             instance=args.instance, camera_path=cp, nest=args.nest)
    print(f"wrote {info['num_frames']} frames to {info['sample_dir']} "
          f"({'video copied' if info['video_copied'] else 'video re-encoded'})")
    if info["missing_keys"]:
        print("warning: image_data.json lacks " + ", ".join(info["missing_keys"]) +
              " which WorldScore's evaluator reads; pass --instance (the benchmark's record)")
    return 0
