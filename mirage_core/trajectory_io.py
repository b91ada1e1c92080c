"""Read and write camera trajectories in common file formats.

Every reader converts explicitly into Mirage's convention: OpenCV camera (+X right, +Y down,
+Z forward), poses as ``T_world_cam`` (camera-to-world), float64. Readers keep the file's
world frame; call :meth:`Trajectory.relative_to_first` to make the first camera the world.

Formats (``format=`` names):

* ``"tum"`` -- TUM RGB-D: ``timestamp tx ty tz qx qy qz qw`` per line; ``T_world_cam`` with
  an ``xyzw`` quaternion; ``#`` comments and blank lines allowed. No intrinsics.
* ``"kitti"`` -- KITTI odometry poses: 12 numbers per line, the row-major 3x4 top of
  ``T_world_cam`` (camera i -> camera 0). Timestamps are ``index / fps`` or read from a
  KITTI ``times.txt`` (``times_path=``, one number per line).
* ``"realestate10k"`` -- RealEstate10K camera file: line 1 is the video URL, then per frame
  ``timestamp_us fx fy cx cy k1 k2`` followed by the row-major 3x4 ``T_cam_world`` (OpenCV).
  Intrinsics are normalised by image width (fx, cx) and height (fy, cy); the reader needs
  ``image_hw=(H, W)`` and returns per-frame pixel ``K`` ``[N, 3, 3]``.
* ``"nerfstudio"`` -- ``transforms.json``: intrinsics ``fl_x, fl_y, cx, cy, w, h`` globally
  or per frame; ``frames[i].transform_matrix`` is camera-to-world of an OpenGL camera (+Y up,
  +Z back), converted with :func:`opengl_to_opencv_pose`. ``frames[i].file_path`` is kept in
  ``Trajectory.file_paths``. Timestamps come from a per-frame ``"timestamp"`` key (written by
  :func:`write_nerfstudio`, ignored by nerfstudio) when every frame has one, else
  ``index / fps``.

Malformed files raise :class:`TrajectoryFileError` naming the file, the 1-based line (or the
JSON ``frames[i]`` entry) and what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mirage_core.errors import MirageInputError, TrajectoryFileError
from mirage_core.geometry import (
    check_se3,
    opencv_to_opengl_pose,
    opengl_to_opencv_pose,
    pose_from_translation_quat,
    pose_to_translation_quat,
    se3_inverse,
)
from mirage_core.trajectory import DEFAULT_FPS, Trajectory

FORMATS: tuple[str, ...] = ("tum", "kitti", "realestate10k", "nerfstudio")
_ALIASES = {"re10k": "realestate10k", "transforms": "nerfstudio", "json": "nerfstudio"}

TUM_FIELDS = "timestamp tx ty tz qx qy qz qw"
KITTI_FIELDS = "row-major 3x4 pose r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3"
RE10K_FIELDS = "timestamp_us fx fy cx cy k1 k2 and a row-major 3x4 T_cam_world"


# --------------------------------------------------------------------------- helpers


def _num(x: float) -> str:
    """Shortest text that reads back as exactly the same float64."""
    return repr(float(x))


def _data_lines(path: Path, skip_first: bool = False) -> list[tuple[int, list[str]]]:
    """``(1-based line number, tokens)`` of non-blank, non-comment lines."""
    text = path.read_text()
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if skip_first and n == 1:
            continue
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((n, s.split()))
    if not out:
        raise TrajectoryFileError(f"{path}: no poses found (file is empty or only comments)")
    return out


def _floats(path: Path, n: int, tokens: list[str], count: int, fields: str) -> np.ndarray:
    if len(tokens) != count:
        raise TrajectoryFileError(
            f"{path}: line {n}: expected {count} numbers ({fields}), got {len(tokens)}"
        )
    try:
        vals = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as e:
        raise TrajectoryFileError(
            f"{path}: line {n}: expected {count} numbers ({fields}): {e}"
        ) from e
    if not np.isfinite(vals).all():
        raise TrajectoryFileError(f"{path}: line {n}: NaN or inf in {fields}")
    return vals


def _pose_3x4(path: Path, where: str, vals: np.ndarray, name: str) -> torch.Tensor:
    """12 row-major numbers -> validated ``[4, 4]`` pose; errors name ``where``."""
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :] = torch.from_numpy(vals.reshape(3, 4))
    try:
        return check_se3(T, name)
    except MirageInputError as e:
        raise TrajectoryFileError(f"{path}: {where}: {e}") from e


def _check_times(path: Path, times: Sequence[float], where: Sequence[str]) -> None:
    for i in range(1, len(times)):
        if not times[i] > times[i - 1]:
            raise TrajectoryFileError(
                f"{path}: {where[i]}: timestamp {times[i]!r} is not after the previous one "
                f"({times[i - 1]!r}); timestamps must be strictly increasing"
            )


def _index_times(n: int, fps: float) -> np.ndarray:
    """``[n]`` timestamps ``index / fps``."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise MirageInputError(f"fps must be a positive finite number, got {fps!r}")
    return np.arange(n, dtype=np.float64) / fps


def _kitti_times(path: Path, n: int, fps: float, times_path: str | Path | None) -> np.ndarray:
    if times_path is None:
        return _index_times(n, fps)
    tp = Path(times_path)
    rows = _data_lines(tp)
    times = [_floats(tp, ln, tok, 1, "time in seconds")[0] for ln, tok in rows]
    if len(times) != n:
        raise TrajectoryFileError(f"{tp}: has {len(times)} times but {path} has {n} poses")
    _check_times(tp, times, [f"line {ln}" for ln, _ in rows])
    return np.asarray(times)


# --------------------------------------------------------------------------- TUM


def read_tum(path: str | Path) -> Trajectory:
    """Read a TUM RGB-D trajectory (``timestamp tx ty tz qx qy qz qw``, T_world_cam)."""
    path = Path(path)
    poses, times, where = [], [], []
    for n, tokens in _data_lines(path):
        v = _floats(path, n, tokens, 8, TUM_FIELDS)
        try:
            poses.append(pose_from_translation_quat(v[1:4], v[4:8], order="xyzw"))
        except MirageInputError as e:
            raise TrajectoryFileError(f"{path}: line {n}: {e}") from e
        times.append(float(v[0]))
        where.append(f"line {n}")
    _check_times(path, times, where)
    return Trajectory(torch.stack(poses), torch.tensor(times, dtype=torch.float64))


def write_tum(traj: Trajectory, path: str | Path) -> None:
    """Write ``timestamp tx ty tz qx qy qz qw`` lines (quaternion ``xyzw``, ``w >= 0``)."""
    lines = [f"# {TUM_FIELDS}  (T_world_cam, OpenCV camera)"]
    for t, T in zip(traj.timestamps.tolist(), traj.T_world_cam, strict=True):
        xyz, q = pose_to_translation_quat(T, order="xyzw")
        lines.append(" ".join(_num(x) for x in [t, *xyz, *q]))
    Path(path).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- KITTI


def read_kitti(
    path: str | Path, fps: float = DEFAULT_FPS, times_path: str | Path | None = None
) -> Trajectory:
    """Read KITTI odometry poses (12 numbers per line: row-major 3x4 ``T_world_cam``).

    Timestamps are ``index / fps`` unless ``times_path`` (KITTI ``times.txt``) is given.
    """
    path = Path(path)
    rows = _data_lines(path)
    poses = [
        _pose_3x4(path, f"line {n}", _floats(path, n, tok, 12, KITTI_FIELDS), "T_world_cam")
        for n, tok in rows
    ]
    times = _kitti_times(path, len(poses), fps, times_path)
    return Trajectory(torch.stack(poses), torch.from_numpy(times))


def write_kitti(traj: Trajectory, path: str | Path, times_path: str | Path | None = None) -> None:
    """Write KITTI poses (row-major 3x4 ``T_world_cam``); timestamps to ``times_path`` if given."""
    rows = traj.T_world_cam[:, :3, :].reshape(-1, 12).tolist()
    Path(path).write_text("".join(" ".join(_num(x) for x in r) + "\n" for r in rows))
    if times_path is not None:
        Path(times_path).write_text("".join(_num(t) + "\n" for t in traj.timestamps.tolist()))


# --------------------------------------------------------------------------- RealEstate10K


def read_realestate10k(path: str | Path, image_hw: Sequence[int] | None = None) -> Trajectory:
    """Read a RealEstate10K camera file into pixel intrinsics and ``T_world_cam``.

    Args:
        path: the ``.txt`` file (line 1: URL; then 19 numbers per frame).
        image_hw: ``(H, W)`` of the frames; required to denormalise the intrinsics
            (``fx*W, fy*H, cx*W, cy*H``).
    Returns:
        Trajectory with ``K`` ``[N, 3, 3]``, ``image_hw``, timestamps in seconds and
        ``T_world_cam = inv(T_cam_world)``.
    """
    path = Path(path)
    if image_hw is None:
        raise MirageInputError(
            f"{path}: RealEstate10K intrinsics are normalised; pass image_hw=(H, W) to read it"
        )
    H, W = (int(v) for v in image_hw)
    lines = path.read_text().splitlines()
    if not lines or not lines[0].strip():
        raise TrajectoryFileError(
            f"{path}: empty file; expected a URL on line 1, then camera lines"
        )
    first = lines[0].split()
    skip_first = not _is_number(first[0])  # the URL line (tolerate files without it)
    rows = _data_lines(path, skip_first=skip_first)
    Ks, poses, times = [], [], []
    for n, tok in rows:
        v = _floats(path, n, tok, 19, RE10K_FIELDS)
        fx, fy, cx, cy = v[1:5]
        if fx <= 0 or fy <= 0:
            raise TrajectoryFileError(
                f"{path}: line {n}: focal lengths must be positive, got {fx}, {fy}"
            )
        Ks.append([[fx * W, 0.0, cx * W], [0.0, fy * H, cy * H], [0.0, 0.0, 1.0]])
        poses.append(_pose_3x4(path, f"line {n}", v[7:19], "T_cam_world"))
        times.append(v[0] * 1e-6)
    _check_times(path, times, [f"line {n}" for n, _ in rows])
    return Trajectory(se3_inverse(torch.stack(poses)), torch.tensor(times, dtype=torch.float64),
                      torch.tensor(Ks, dtype=torch.float64), (H, W))


def write_realestate10k(traj: Trajectory, path: str | Path, url: str = "unknown") -> None:
    """Write a RealEstate10K camera file; needs ``traj.K`` and ``traj.image_hw``.

    Timestamps are rounded to integer microseconds; distortion ``k1, k2`` are written as 0.
    """
    if traj.K is None or traj.image_hw is None:
        raise MirageInputError(
            "RealEstate10K needs intrinsics: traj.K and traj.image_hw must be set"
        )
    H, W = traj.image_hw
    lines = [url]
    for i, (t, T) in enumerate(zip(traj.timestamps.tolist(), traj.T_cam_world, strict=True)):
        K = traj.intrinsics(i)
        intr = [K[0, 0] / W, K[1, 1] / H, K[0, 2] / W, K[1, 2] / H, 0.0, 0.0]
        vals = [_num(x) for x in [*intr, *T[:3, :].reshape(-1).tolist()]]
        lines.append(" ".join([str(round(t * 1e6)), *vals]))
    Path(path).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- nerfstudio

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy")


def read_nerfstudio(path: str | Path, fps: float = DEFAULT_FPS) -> Trajectory:
    """Read a nerfstudio ``transforms.json`` (OpenGL camera-to-world -> OpenCV ``T_world_cam``).

    ``K`` is ``[3, 3]`` when every frame has the same intrinsics, else ``[N, 3, 3]``; it is
    ``None`` when the file has no ``fl_x``. ``image_hw = (h, w)`` when given.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrajectoryFileError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames:
        raise TrajectoryFileError(f"{path}: expected a JSON object with a non-empty 'frames' list")
    poses, Ks, hws, paths, stamps = [], [], [], [], []
    for i, fr in enumerate(frames):
        where = f"frames[{i}]"
        if not isinstance(fr, dict) or "transform_matrix" not in fr:
            raise TrajectoryFileError(
                f"{path}: {where}: expected an object with 'transform_matrix'"
            )
        try:
            M = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TrajectoryFileError(
                f"{path}: {where}: transform_matrix is not numeric: {e}"
            ) from e
        if M.shape == (3, 4):
            M = np.vstack([M, [0.0, 0.0, 0.0, 1.0]])
        if M.shape != (4, 4):
            raise TrajectoryFileError(
                f"{path}: {where}: expected a 4x4 transform_matrix, got shape {M.shape}"
            )
        try:
            poses.append(opengl_to_opencv_pose(torch.from_numpy(M)))
        except MirageInputError as e:
            raise TrajectoryFileError(f"{path}: {where}: {e}") from e
        vals = {k: fr.get(k, data.get(k)) for k in (*_INTRINSIC_KEYS, "w", "h")}
        have = [vals[k] is not None for k in _INTRINSIC_KEYS]
        if any(have) and not all(have):
            missing = [k for k, h in zip(_INTRINSIC_KEYS, have, strict=True) if not h]
            raise TrajectoryFileError(f"{path}: {where}: intrinsics incomplete, missing {missing}")
        hw_ok = vals["h"] is not None and vals["w"] is not None
        try:
            f = {k: float(vals[k]) for k in _INTRINSIC_KEYS} if all(have) else None
            hws.append((int(vals["h"]), int(vals["w"])) if hw_ok else None)
        except (TypeError, ValueError) as e:
            raise TrajectoryFileError(
                f"{path}: {where}: intrinsics/w/h are not numbers: {e}"
            ) from e
        Ks.append(None if f is None else [[f["fl_x"], 0.0, f["cx"]], [0.0, f["fl_y"], f["cy"]],
                                          [0.0, 0.0, 1.0]])
        paths.append(str(fr.get("file_path", "")))
        stamps.append(fr.get("timestamp"))
    if any(k is None for k in Ks) and not all(k is None for k in Ks):
        i = next(j for j, k in enumerate(Ks) if k is None)
        raise TrajectoryFileError(f"{path}: frames[{i}]: no intrinsics, but other frames have them")
    if len(set(hws)) > 1:
        raise TrajectoryFileError(
            f"{path}: frames have different image sizes (h, w): {sorted(set(hws), key=str)}"
        )
    K = None
    if Ks[0] is not None:
        Kt = torch.tensor(Ks, dtype=torch.float64)
        K = Kt[0] if bool((Kt == Kt[0]).all()) else Kt
    if all(s is not None for s in stamps):
        times = [float(s) for s in stamps]
        _check_times(path, times, [f"frames[{i}]" for i in range(len(frames))])
    else:
        times = _index_times(len(frames), fps).tolist()
    return Trajectory(torch.stack(poses), torch.tensor(times, dtype=torch.float64), K, hws[0],
                      tuple(paths))


def write_nerfstudio(traj: Trajectory, path: str | Path) -> None:
    """Write a nerfstudio ``transforms.json`` (OpenGL camera-to-world ``transform_matrix``).

    Shared intrinsics go to the top level, per-frame ``K`` into each frame. Frame paths are
    ``traj.file_paths`` or ``images/frame_00001.png``, ... Each frame also gets a
    ``"timestamp"`` (seconds) so that reading back restores the timestamps.
    """
    data: dict = {"camera_model": "OPENCV"}
    if traj.image_hw is not None:
        data["h"], data["w"] = traj.image_hw

    def intr(K: torch.Tensor) -> dict:
        return {"fl_x": K[0, 0].item(), "fl_y": K[1, 1].item(), "cx": K[0, 2].item(),
                "cy": K[1, 2].item()}

    if traj.K is not None and traj.K.ndim == 2:
        data.update(intr(traj.K))
    T_gl = opencv_to_opengl_pose(traj.T_world_cam)
    frames = []
    for i in range(len(traj)):
        fp = traj.file_paths[i] if traj.file_paths else f"images/frame_{i + 1:05d}.png"
        fr = {"file_path": fp, "transform_matrix": T_gl[i].tolist(),
              "timestamp": traj.timestamps[i].item()}
        if traj.K is not None and traj.K.ndim == 3:
            fr.update(intr(traj.K[i]))
        frames.append(fr)
    data["frames"] = frames
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- dispatch


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> str:
    """Guess the format: ``.json`` -> nerfstudio; otherwise from the first data line
    (non-numeric first line -> realestate10k; 8 numbers -> tum; 12 -> kitti; 19 ->
    realestate10k)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return "nerfstudio"
    n, tokens = _data_lines(path)[0]
    if not _is_number(tokens[0]):
        return "realestate10k"
    fmt = {8: "tum", 12: "kitti", 19: "realestate10k"}.get(len(tokens))
    if fmt is None:
        raise TrajectoryFileError(
            f"{path}: line {n}: cannot detect the format from {len(tokens)} numbers (expected 8 "
            f"for tum, 12 for kitti, 19 for realestate10k); pass format= one of {FORMATS}"
        )
    return fmt


def _format_name(fmt: str) -> str:
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise MirageInputError(
            f"unknown trajectory format {fmt!r}; valid formats: {', '.join(FORMATS)}"
        )
    return name


def read_trajectory(path: str | Path, format: str | None = None, **kw) -> Trajectory:
    """Read any supported format (``format=None`` detects it; see :func:`detect_format`).

    Extra keywords go to the reader: ``fps``/``times_path`` (kitti), ``image_hw``
    (realestate10k), ``fps`` (nerfstudio).
    """
    name = detect_format(path) if format is None else _format_name(format)
    reader = {"tum": read_tum, "kitti": read_kitti, "realestate10k": read_realestate10k,
              "nerfstudio": read_nerfstudio}[name]
    return reader(path, **kw)


def write_trajectory(traj: Trajectory, path: str | Path, format: str, **kw) -> None:
    """Write ``traj`` in ``format`` (one of :data:`FORMATS`); keywords go to the writer
    (``times_path`` for kitti, ``url`` for realestate10k)."""
    writer = {"tum": write_tum, "kitti": write_kitti, "realestate10k": write_realestate10k,
              "nerfstudio": write_nerfstudio}[_format_name(format)]
    writer(traj, path, **kw)
