"""Read and write camera trajectories in common file formats.

Every reader converts explicitly into Mirage's convention: OpenCV camera (+X right, +Y down,
+Z forward), poses as ``T_world_cam`` (camera-to-world), float64, pixel centres at +1/2.
Readers keep the file's world frame; call :meth:`Trajectory.relative_to_first` to make the
first camera the world.

Formats (``format=`` names):

* ``"tum"`` -- TUM RGB-D ground truth: ``timestamp tx ty tz qx qy qz qw`` per line
  (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats); ``T_world_cam`` with an
  ``xyzw`` quaternion. No intrinsics.
* ``"kitti"`` -- KITTI odometry poses: 12 numbers per line, the row-major 3x4 top of
  ``T_world_cam`` (camera i -> camera 0). Timestamps are ``index / fps`` or read from a
  KITTI ``times.txt`` (``times_path=``, one number per line). No intrinsics.
* ``"realestate10k"`` -- RealEstate10K camera file (github.com/google/realestate10k,
  ``download.html``): line 1 is the video URL, then per frame ``timestamp_us fx fy cx cy``,
  two columns that are 0 in every published file (non-zero ones are refused: they would be
  lens distortion), and the row-major 3x4 ``T_cam_world`` (OpenCV). The intrinsics are
  normalised by the image size: ``K`` in pixels is ``[[W fx, 0, W cx], [0, H fy, H cy],
  [0, 0, 1]]`` for a ``W x H`` image, so the reader needs ``image_hw=(H, W)`` of the frames
  they are used with (:func:`denormalize_intrinsics`).
* ``"nerfstudio"`` -- ``transforms.json`` of nerfstudio, instant-ngp and the Blender NeRF
  scenes (https://docs.nerf.studio/quickstart/data_conventions.html).
  ``frames[i].transform_matrix`` is camera-to-world of an OpenGL camera (+Y up, +Z back),
  converted with :func:`opengl_to_opencv_pose`; ``frames[i].file_path`` is kept in
  ``Trajectory.file_paths``. Intrinsics, at the top level or per frame (a frame's value wins,
  as in instant-ngp; per-frame values that differ give a per-frame ``K`` ``[N, 3, 3]``; a
  frame that gives any focal key replaces all of the top level's focal keys, as in
  instant-ngp; nerfstudio's own parser ignores per-frame values when the top level has the
  key, so a file meant for it should not set both differently):

  - focal length ``fl_x``/``fl_y`` (pixels), or ``camera_angle_x``/``camera_angle_y``
    (full field of view, radians: ``fx = W / (2 tan(camera_angle_x / 2))``), or
    ``x_fov``/``y_fov`` (degrees, instant-ngp). With only x (or only y) given, the other
    focal length equals it (square pixels; instant-ngp's rule). Two sources for the same
    axis must agree (to 0.1 %).
  - principal point ``cx``, ``cy`` (pixels); default the image centre ``(W/2, H/2)`` (the
    Blender scenes and instant-ngp).
  - image size ``w``, ``h``; default ``image_hw`` (the Blender scenes give none).
  - lens: ``camera_model`` must be a pinhole model (``PINHOLE``, ``SIMPLE_PINHOLE``, or
    ``OPENCV``/``SIMPLE_RADIAL``/``RADIAL`` with zero distortion). Fisheye, panoramic and
    other models (``OPENCV_FISHEYE``, ``FISHEYE624``, ``EQUIRECTANGULAR``, ...), a true
    ``is_fisheye``, instant-ngp's ``ftheta_*``/``latlong`` lenses and any non-zero
    distortion coefficient (``k1``..``k6``, ``p1``, ``p2``) are refused: Mirage projects
    with a pinhole ``K`` and does not undistort, just as a ``CameraInfo`` with distortion is
    refused.

  Timestamps come from a per-frame ``"timestamp"`` key (written by :func:`write_nerfstudio`,
  ignored by nerfstudio) when every frame has one, else ``index / fps``.

Text files: blank lines and ``#`` comments are skipped, and so is one leading line without a
single number in it (a column-name header such as ``timestamp tx ty tz qx qy qz qw``, or
RealEstate10K's URL line). Any later line that is not the format's numbers is an error.
:func:`detect_format` decides the format from the data lines, never from a header.

Readers take ``intrinsics=False`` to read poses and timestamps only (``K`` and ``image_hw``
``None``; no intrinsics needed or checked): a consumer that uses only the poses (e.g.
``trajectory_node``, whose ``nav_msgs/Path`` carries none) does not need the image size.

Malformed files raise :class:`TrajectoryFileError`. The message names the file, the format
it was read as, the 1-based line (or the JSON ``frames[i]`` entry, or "top level") where
reading stopped, and what was expected; :func:`read_trajectory` adds how the format was
detected when it was not given.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
#: How error messages name each format ("read as ...").
FORMAT_TITLES = {"tum": "TUM", "kitti": "KITTI", "realestate10k": "RealEstate10K",
                 "nerfstudio": "nerfstudio transforms.json"}

TUM_FIELDS = "timestamp tx ty tz qx qy qz qw"
KITTI_FIELDS = "row-major 3x4 pose r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3"
RE10K_FIELDS = "timestamp_us fx fy cx cy 0 0 and a row-major 3x4 T_cam_world"
#: Numbers per data line of each text format (what :func:`detect_format` counts).
_COUNTS = {8: "tum", 12: "kitti", 19: "realestate10k"}


# --------------------------------------------------------------------------- helpers


def _num(x: float) -> str:
    """Shortest text that reads back as exactly the same float64."""
    return repr(float(x))


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _fail(path: Path, title: str, where: str, msg: str) -> TrajectoryFileError:
    """``TrajectoryFileError`` naming the file, the format it was read as and the place."""
    return TrajectoryFileError(f"{path} (read as {title}): {where}: {msg}")


def _read_text(path: Path) -> str:
    """The file's text as UTF-8; a leading byte-order mark (Windows editors and Excel write
    one) is dropped (``utf-8-sig``), so it never sticks to the first number."""
    return path.read_text(encoding="utf-8-sig")


def _tokens(line: str) -> list[str]:
    """A data line's fields. Whitespace separates them, and so do commas: TUM's own tools
    (``associate.py``, ``evaluate_ate.py`` of the TUM RGB-D benchmark) replace ``,`` and tabs
    by spaces before splitting, so ``t,tx,ty,tz,qx,qy,qz,qw`` is a legal TUM line."""
    return line.replace(",", " ").split()


def _data_lines(path: Path, title: str) -> list[tuple[int, list[str]]]:
    """``(1-based line number, tokens)`` of the data lines of a text file.

    Skips blank lines, ``#`` comments and one leading line without any number in it (a
    column-name header or RealEstate10K's URL line). Raises :class:`TrajectoryFileError`
    when no data line is left.
    """
    out: list[tuple[int, list[str]]] = []
    header_seen = False
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tokens = _tokens(s)
        if not out and not header_seen and not any(_is_number(t) for t in tokens):
            header_seen = True  # the header / URL line
            continue
        out.append((n, tokens))
    if not out:
        raise TrajectoryFileError(
            f"{path} (read as {title}): no poses found (the file is empty or holds only "
            f"comments and a header line)"
        )
    return out


def _floats(path: Path, title: str, n: int, tokens: list[str], count: int,
            fields: str) -> np.ndarray:
    """``count`` finite float64 numbers of line ``n``; errors name the line and the fields."""
    if len(tokens) != count:
        raise _fail(path, title, f"line {n}",
                    f"expected {count} numbers ({fields}), got {len(tokens)}")
    try:
        vals = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as e:
        raise _fail(path, title, f"line {n}", f"expected {count} numbers ({fields}): {e}") from e
    if not np.isfinite(vals).all():
        raise _fail(path, title, f"line {n}", f"NaN or inf in {fields}")
    return vals


def _pose_3x4(path: Path, title: str, where: str, vals: np.ndarray, name: str) -> torch.Tensor:
    """12 row-major numbers -> validated ``[4, 4]`` pose; errors name ``where``."""
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :] = torch.from_numpy(vals.reshape(3, 4))
    try:
        return check_se3(T, name)
    except MirageInputError as e:
        raise _fail(path, title, where, str(e)) from e


def _check_times(path: Path, title: str, times: Sequence[float], where: Sequence[str]) -> None:
    for i in range(1, len(times)):
        if not times[i] > times[i - 1]:
            raise _fail(path, title, where[i],
                        f"timestamp {times[i]!r} is not after the previous one "
                        f"({times[i - 1]!r}); timestamps must be strictly increasing")


def _index_times(n: int, fps: float) -> np.ndarray:
    """``[n]`` timestamps ``index / fps``."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise MirageInputError(f"fps must be a positive finite number, got {fps!r}")
    return np.arange(n, dtype=np.float64) / fps


def _check_image_hw(image_hw: Sequence[int] | None) -> tuple[int, int] | None:
    if image_hw is None:
        return None
    try:
        H, W = (int(v) for v in image_hw)
    except (TypeError, ValueError) as e:
        raise MirageInputError(f"image_hw must be (H, W), got {image_hw!r}") from e
    if H <= 0 or W <= 0:
        raise MirageInputError(f"image_hw must be positive (H, W), got {image_hw!r}")
    return H, W


def _kitti_times(path: Path, n: int, fps: float, times_path: str | Path | None) -> np.ndarray:
    if times_path is None:
        return _index_times(n, fps)
    tp = Path(times_path)
    title = "KITTI times.txt"
    rows = _data_lines(tp, title)
    times = [_floats(tp, title, ln, tok, 1, "time in seconds")[0] for ln, tok in rows]
    if len(times) != n:
        raise TrajectoryFileError(
            f"{tp} (read as {title}): has {len(times)} times but {path} has {n} poses"
        )
    _check_times(tp, title, times, [f"line {ln}" for ln, _ in rows])
    return np.asarray(times)


# --------------------------------------------------------------------------- TUM


def read_tum(path: str | Path, image_hw: Sequence[int] | None = None,
             intrinsics: bool = True) -> Trajectory:
    """Read a TUM RGB-D trajectory (``timestamp tx ty tz qx qy qz qw``, T_world_cam).

    Args:
        path: the text file. A leading column-name line is skipped (see the module doc).
        image_hw, intrinsics: accepted for a uniform reader signature; TUM has no intrinsics.
    Returns:
        Trajectory ``[N]`` (timestamps in the file's seconds; ``K = None``).
    Raises:
        TrajectoryFileError: a line that is not 8 finite numbers, a non-unit quaternion,
            timestamps not strictly increasing; the message names the line.
    """
    path, title = Path(path), FORMAT_TITLES["tum"]
    poses, times, where = [], [], []
    for n, tokens in _data_lines(path, title):
        v = _floats(path, title, n, tokens, 8, TUM_FIELDS)
        try:
            poses.append(pose_from_translation_quat(v[1:4], v[4:8], order="xyzw"))
        except MirageInputError as e:
            raise _fail(path, title, f"line {n}", str(e)) from e
        times.append(float(v[0]))
        where.append(f"line {n}")
    _check_times(path, title, times, where)
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
    path: str | Path, fps: float = DEFAULT_FPS, times_path: str | Path | None = None,
    image_hw: Sequence[int] | None = None, intrinsics: bool = True,
) -> Trajectory:
    """Read KITTI odometry poses (12 numbers per line: row-major 3x4 ``T_world_cam``).

    Timestamps are ``index / fps`` unless ``times_path`` (KITTI ``times.txt``) is given.
    ``image_hw``/``intrinsics`` are accepted for a uniform signature (no intrinsics in KITTI
    pose files). Raises :class:`TrajectoryFileError` naming the line.
    """
    path, title = Path(path), FORMAT_TITLES["kitti"]
    rows = _data_lines(path, title)
    poses = [
        _pose_3x4(path, title, f"line {n}", _floats(path, title, n, tok, 12, KITTI_FIELDS),
                  "T_world_cam")
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


def denormalize_intrinsics(fx: float, fy: float, cx: float, cy: float,
                           image_hw: Sequence[int]) -> list[list[float]]:
    """Pixel ``K`` (nested lists, ``[3, 3]``) from intrinsics normalised by the image size.

    RealEstate10K (github.com/google/realestate10k, ``download.html``): for a ``width x
    height`` image ``K = [[width fx, 0, width cx], [0, height fy, height cy], [0, 0, 1]]``.
    Normalised coordinates put the image's top-left corner at (0, 0) and its bottom-right
    corner at (1, 1), so the result follows Mirage's +1/2 pixel-centre rule as it is.
    The one implementation, used by every consumer of such files (``mirage rollout``,
    ``mirage data prepare``, through :func:`read_trajectory`'s ``image_hw``).
    """
    H, W = image_hw
    return [[fx * W, 0.0, cx * W], [0.0, fy * H, cy * H], [0.0, 0.0, 1.0]]


def read_realestate10k(path: str | Path, image_hw: Sequence[int] | None = None,
                       intrinsics: bool = True) -> Trajectory:
    """Read a RealEstate10K camera file into pixel intrinsics and ``T_world_cam``.

    Args:
        path: the ``.txt`` file (line 1: URL; then 19 numbers per frame).
        image_hw: ``(H, W)`` of the frames; required (with ``intrinsics``) to denormalise the
            intrinsics (:func:`denormalize_intrinsics`).
        intrinsics: ``False`` reads poses and timestamps only (``K = None``; no ``image_hw``).
    Returns:
        Trajectory with ``K`` ``[N, 3, 3]``, ``image_hw``, timestamps in seconds and
        ``T_world_cam = inv(T_cam_world)``.
    Raises:
        MirageInputError: ``intrinsics`` without ``image_hw``.
        TrajectoryFileError: a line that is not 19 finite numbers, a non-positive focal
            length, non-zero columns 6-7 (0 in every published file; they would be lens
            distortion), an invalid pose, timestamps not increasing; names the line.
    """
    path, title = Path(path), FORMAT_TITLES["realestate10k"]
    hw = _check_image_hw(image_hw)
    if intrinsics and hw is None:
        raise MirageInputError(
            f"{path} (read as {title}): the intrinsics are normalised by the image size "
            f"(fx*W, fy*H, cx*W, cy*H); pass image_hw=(H, W) of the frames they are used "
            f"with, or intrinsics=False to read the poses only"
        )
    if not _read_text(path).strip():
        raise TrajectoryFileError(
            f"{path} (read as {title}): empty file; expected a URL on line 1, then camera lines"
        )
    rows = _data_lines(path, title)
    Ks, poses, times = [], [], []
    for n, tok in rows:
        v = _floats(path, title, n, tok, 19, RE10K_FIELDS)
        fx, fy, cx, cy = v[1:5]
        if fx <= 0 or fy <= 0:
            raise _fail(path, title, f"line {n}",
                        f"focal lengths must be positive, got {fx}, {fy}")
        if v[5] != 0 or v[6] != 0:
            raise _fail(path, title, f"line {n}",
                        f"columns 6-7 are {v[5]}, {v[6]}; they are 0 in RealEstate10K files "
                        f"and non-zero values would be lens distortion, which Mirage does not "
                        f"model (pinhole cameras only)")
        if hw is not None and intrinsics:
            Ks.append(denormalize_intrinsics(fx, fy, cx, cy, hw))
        poses.append(_pose_3x4(path, title, f"line {n}", v[7:19], "T_cam_world"))
        times.append(v[0] * 1e-6)
    _check_times(path, title, times, [f"line {n}" for n, _ in rows])
    T_world_cam = se3_inverse(torch.stack(poses))
    ts = torch.tensor(times, dtype=torch.float64)
    if not intrinsics:
        return Trajectory(T_world_cam, ts)
    return Trajectory(T_world_cam, ts, torch.tensor(Ks, dtype=torch.float64), hw)


def write_realestate10k(traj: Trajectory, path: str | Path, url: str = "unknown") -> None:
    """Write a RealEstate10K camera file; needs ``traj.K`` and ``traj.image_hw``.

    Timestamps are rounded to integer microseconds; columns 6-7 are written as 0.
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

#: Keys that give a focal length, per axis: (key, unit) in the order they are listed in errors.
_FOCAL_KEYS = {"x": (("fl_x", "px"), ("camera_angle_x", "rad"), ("x_fov", "deg")),
               "y": (("fl_y", "px"), ("camera_angle_y", "rad"), ("y_fov", "deg"))}
_ALL_FOCAL_KEYS = tuple(k for axis in _FOCAL_KEYS.values() for k, _ in axis)
#: camera_model values that are pinhole when their distortion is zero (nerfstudio's
#: CAMERA_MODEL_TO_TYPE maps these to PERSPECTIVE).
_PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")
#: Distortion coefficients: nerfstudio and instant-ngp (k1..k4, p1, p2), and k5, k6 of
#: COLMAP's FULL_OPENCV (rational) model for converters that copy all of them.
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")
#: Two focal sources of one axis (e.g. fl_x and camera_angle_x) must agree this closely;
#: files that write both (instant-ngp colmap2nerf.py) agree to float precision.
_FOCAL_AGREE_RTOL = 1e-3
_PINHOLE_HINT = ("Mirage projects with a pinhole K and does not undistort: undistort the "
                 "images to a pinhole camera first (e.g. COLMAP image_undistorter, or "
                 "cv2.undistort / cv2.fisheye.undistortImage) and give their pinhole "
                 "intrinsics")


class _Cam:
    """Looks up a camera key for one frame: the frame's own value, else the top level's."""

    def __init__(self, path: Path, top: dict, frame: dict, i: int) -> None:
        self.path, self.top, self.frame, self.i = path, top, frame, i

    def where(self, key: str) -> str:
        return f"frames[{self.i}]" if key in self.frame else "top level"

    def has(self, key: str) -> bool:
        return key in self.frame or key in self.top

    def raw(self, key: str) -> Any:
        return self.frame[key] if key in self.frame else self.top.get(key)

    def fail(self, key: str, msg: str) -> TrajectoryFileError:
        return _fail(self.path, FORMAT_TITLES["nerfstudio"], self.where(key), msg)

    def number(self, key: str) -> float | None:
        if not self.has(key):
            return None
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(key, f"{key} must be a finite number, got {v!r}")
        return float(v)


def _check_pinhole(cam: _Cam) -> None:
    """Refuse every lens that is not a pinhole camera (see the module docstring)."""
    if cam.has("camera_model"):
        model = str(cam.raw("camera_model")).upper()
        if model not in _PINHOLE_MODELS:
            raise cam.fail("camera_model",
                           f"camera_model {cam.raw('camera_model')!r} is not a pinhole camera "
                           f"(accepted: {', '.join(_PINHOLE_MODELS)} without distortion); "
                           f"{_PINHOLE_HINT}")
    if cam.has("is_fisheye") and not isinstance(cam.raw("is_fisheye"), bool):
        raise cam.fail("is_fisheye", f"is_fisheye must be a JSON boolean (true/false), got "
                                     f"{cam.raw('is_fisheye')!r}")
    if cam.has("is_fisheye") and cam.raw("is_fisheye"):
        raise cam.fail("is_fisheye", f"is_fisheye is {cam.raw('is_fisheye')!r}: a fisheye "
                                     f"lens is not a pinhole camera; {_PINHOLE_HINT}")
    for key in sorted(set(cam.top) | set(cam.frame)):
        if key.startswith("ftheta_") or key == "latlong":
            raise cam.fail(key, f"{key!r} gives an instant-ngp f-theta / lat-long lens, not a "
                                f"pinhole camera; {_PINHOLE_HINT}")
    nonzero = [(k, cam.number(k)) for k in _DISTORTION_KEYS if cam.has(k)]
    nonzero = [(k, v) for k, v in nonzero if v != 0.0]
    if nonzero:
        k0 = nonzero[0][0]
        model = cam.raw("camera_model") if cam.has("camera_model") else "(none)"
        listed = ", ".join(f"{k}={v!r}" for k, v in nonzero)
        raise cam.fail(k0, f"non-zero lens distortion {listed} (camera_model {model}); "
                           f"{_PINHOLE_HINT}")


def _focal(cam: _Cam, axis: str, size: int | None, size_name: str) -> float | None:
    """Focal length in pixels of one axis from every source given; sources must agree.

    ``fl_*`` is pixels; ``camera_angle_*`` is the full field of view in radians and
    ``*_fov`` in degrees, both converted with ``f = size / (2 tan(angle / 2))`` (the Blender
    NeRF scenes; instant-ngp ``fov_to_focal_length``).
    """
    # A frame that gives any focal key replaces the top level's focal keys entirely.
    src = cam.frame if any(k in cam.frame for k in _ALL_FOCAL_KEYS) else cam.top
    found: list[tuple[str, float]] = []
    for key, unit in _FOCAL_KEYS[axis]:
        if key not in src:
            continue
        v = cam.number(key)
        if unit == "px":
            if v <= 0:
                raise cam.fail(key, f"{key} must be positive, got {v!r}")
            found.append((key, v))
            continue
        rad = math.radians(v) if unit == "deg" else v
        if not 0 < rad < math.pi:
            hint = " (camera_angle_* is in radians; x_fov/y_fov are degrees)"
            raise cam.fail(key, f"{key} = {v!r} is not a field of view in (0, "
                                f"{'180' if unit == 'deg' else 'pi'}){hint}")
        if size is None:
            raise cam.fail(key, f"{key} needs the image {size_name} to give a focal length in "
                                f"pixels, and the file has no 'w'/'h'; pass image_hw=(H, W)")
        found.append((key, size / (2.0 * math.tan(rad / 2.0))))
    if not found:
        return None
    (k0, f0), *rest = found
    for k, f in rest:
        if abs(f - f0) > _FOCAL_AGREE_RTOL * f0:
            raise cam.fail(k, f"{k0} gives a focal length of {f0:.6g} px but {k} gives "
                              f"{f:.6g} px (image {size_name} {size}); they must agree")
    return f0


def _frame_intrinsics(cam: _Cam, image_hw: tuple[int, int] | None
                      ) -> tuple[list[list[float]] | None, tuple[int, int] | None]:
    """``(K as nested lists or None, (H, W) the K is for or None)`` of one frame."""
    _check_pinhole(cam)
    w, h = cam.number("w"), cam.number("h")
    if (w is None) != (h is None):
        missing = "h" if h is None else "w"
        raise cam.fail("w" if w is not None else "h",
                       f"image size incomplete: '{missing}' is missing")
    if w is not None:
        if w <= 0 or h <= 0 or w != int(w) or h != int(h):
            raise cam.fail("w", f"w, h must be positive integers, got {w!r}, {h!r}")
        hw: tuple[int, int] | None = (int(h), int(w))
    else:
        hw = image_hw
    H, W = hw if hw is not None else (None, None)
    fx, fy = _focal(cam, "x", W, "width"), _focal(cam, "y", H, "height")
    cx, cy = cam.number("cx"), cam.number("cy")
    if fx is None and fy is None:
        if cx is not None or cy is not None:
            raise cam.fail("cx" if cx is not None else "cy",
                           "principal point without a focal length (fl_x/fl_y, "
                           "camera_angle_x/_y or x_fov/y_fov)")
        return None, hw
    fx = fy if fx is None else fx
    fy = fx if fy is None else fy
    if (cx is None or cy is None) and hw is None:
        missing = [k for k, v in (("cx", cx), ("cy", cy)) if v is None]
        focal_key = next(k for k in _ALL_FOCAL_KEYS if cam.has(k))
        raise cam.fail(focal_key, f"no {' and '.join(missing)}, and no image size (w, h) to put "
                               f"the principal point at the image centre; pass image_hw=(H, W)")
    cx = W / 2.0 if cx is None else cx
    cy = H / 2.0 if cy is None else cy
    return [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], hw


def read_nerfstudio(path: str | Path, fps: float = DEFAULT_FPS,
                    image_hw: Sequence[int] | None = None,
                    intrinsics: bool = True) -> Trajectory:
    """Read a ``transforms.json`` (OpenGL camera-to-world -> OpenCV ``T_world_cam``).

    Args:
        path: the JSON file (nerfstudio, instant-ngp or Blender NeRF layout).
        fps: timestamps ``index / fps`` when the frames carry no ``"timestamp"``.
        image_hw: ``(H, W)`` of the frames when the file has no ``w``/``h``: needed for
            ``camera_angle_*``/``*_fov`` and for the default principal point.
        intrinsics: ``False`` reads poses and timestamps only (no lens keys are looked at).
    Returns:
        Trajectory with ``K`` ``[3, 3]`` when every frame has the same intrinsics, else
        ``[N, 3, 3]``; ``None`` when the file gives no focal length. ``image_hw`` is the
        file's ``(h, w)``, else the ``image_hw`` argument.
    Raises:
        TrajectoryFileError: invalid JSON (names the line), a frame without a valid 4x4
            ``transform_matrix``, a non-pinhole lens or non-zero distortion, focal sources
            that disagree, intrinsics on some frames only, frames of different image sizes
            (one image size per file), timestamps not increasing; names ``frames[i]`` or
            "top level".
    """
    path, title = Path(path), FORMAT_TITLES["nerfstudio"]
    hw_arg = _check_image_hw(image_hw)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise _fail(path, title, f"line {e.lineno}", f"invalid JSON: {e.msg}") from e
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames:
        raise _fail(path, title, "top level", "expected a JSON object with a non-empty "
                                              "'frames' list")
    poses, Ks, hws, paths, stamps = [], [], [], [], []
    for i, fr in enumerate(frames):
        where = f"frames[{i}]"
        if not isinstance(fr, dict) or "transform_matrix" not in fr:
            raise _fail(path, title, where, "expected an object with 'transform_matrix'")
        try:
            M = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise _fail(path, title, where, f"transform_matrix is not numeric: {e}") from e
        if M.shape == (3, 4):
            M = np.vstack([M, [0.0, 0.0, 0.0, 1.0]])
        if M.shape != (4, 4):
            raise _fail(path, title, where,
                        f"expected a 4x4 transform_matrix, got shape {M.shape}")
        try:
            poses.append(opengl_to_opencv_pose(torch.from_numpy(M)))
        except MirageInputError as e:
            raise _fail(path, title, where, str(e)) from e
        if intrinsics:
            K, hw = _frame_intrinsics(_Cam(path, data, fr, i), hw_arg)
            Ks.append(K)
            hws.append(hw)
        paths.append(str(fr.get("file_path", "")))
        stamps.append(fr.get("timestamp"))
    K_out, hw_out = None, None
    if intrinsics:
        if any(k is None for k in Ks) and not all(k is None for k in Ks):
            i = next(j for j, k in enumerate(Ks) if k is None)
            j = next(j for j, k in enumerate(Ks) if k is not None)
            raise _fail(path, title, f"frames[{i}]",
                        f"no focal length, but frames[{j}] has one; give intrinsics for "
                        f"every frame or at the top level")
        for i, hw in enumerate(hws):
            if hw != hws[0]:
                raise _fail(path, title, f"frames[{i}]",
                            f"image size (h, w) = {hw} differs from frames[0]'s {hws[0]}; "
                            f"one image size per file is supported")
        hw_out = hws[0]
        if Ks[0] is not None:
            Kt = torch.tensor(Ks, dtype=torch.float64)
            K_out = Kt[0] if bool((Kt == Kt[0]).all()) else Kt
    if all(s is not None for s in stamps):
        try:
            times = [float(s) for s in stamps]
        except (TypeError, ValueError) as e:
            raise _fail(path, title, "frames", f"timestamp is not a number: {e}") from e
        _check_times(path, title, times, [f"frames[{i}]" for i in range(len(frames))])
    else:
        times = _index_times(len(frames), fps).tolist()
    return Trajectory(torch.stack(poses), torch.tensor(times, dtype=torch.float64), K_out,
                      hw_out, tuple(paths))


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


def _detect(path: Path) -> tuple[str, str | None]:
    """``(format, how it was decided from the data lines)``; ``None`` for JSON (not a guess).
    See :func:`detect_format`."""
    if path.suffix.lower() == ".json":
        return "nerfstudio", None
    text = _read_text(path)
    if text.lstrip().startswith("{"):
        return "nerfstudio", None
    numeric: list[tuple[int, int]] = []  # (line, count) of lines made only of numbers
    first_other: tuple[int, str] | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tokens = _tokens(s)
        if all(_is_number(t) for t in tokens):
            numeric.append((n, len(tokens)))
        elif first_other is None:
            first_other = (n, s)
    if not numeric:
        if first_other is None:
            raise TrajectoryFileError(
                f"{path}: no poses found (the file is empty or holds only comments)"
            )
        n, s = first_other
        raise TrajectoryFileError(
            f"{path}: line {n}: cannot detect the format: no line holds only numbers (line "
            f"{n} is {s[:60]!r}); expected 8 numbers per line for tum, 12 for kitti, "
            f"19 for realestate10k, or a .json transforms file; pass format= one of {FORMATS}"
        )
    counts = Counter(c for _, c in numeric if c in _COUNTS)
    if not counts:
        n, c = numeric[0]
        raise TrajectoryFileError(
            f"{path}: line {n}: cannot detect the format from {c} numbers (expected 8 for "
            f"tum, 12 for kitti, 19 for realestate10k); pass format= one of {FORMATS}"
        )
    count = max(counts, key=lambda c: (counts[c], -next(n for n, k in numeric if k == c)))
    n = next(n for n, k in numeric if k == count)
    return _COUNTS[count], (f"{counts[count]} of {len(numeric)} data lines holding {count} "
                            f"numbers, the first on line {n}")


def detect_format(path: str | Path) -> str:
    """Guess a trajectory file's format from its data lines.

    ``.json`` suffix, or text starting with ``{`` -> ``"nerfstudio"``. Otherwise the lines made
    only of numbers decide: the most common count among 8 (``"tum"``), 12 (``"kitti"``) and 19
    (``"realestate10k"``). Header, URL and malformed lines do not take part; the reader then
    skips a leading header or names the malformed line.

    Raises:
        TrajectoryFileError: no line of numbers, or none with a known count (names the line).
    """
    return _detect(Path(path))[0]


def format_name(fmt: str) -> str:
    """The canonical name of ``fmt`` (one of :data:`FORMATS` or an alias such as ``re10k``);
    raises :class:`MirageInputError` listing the valid formats otherwise."""
    name = _ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if name not in FORMATS:
        raise MirageInputError(
            f"unknown trajectory format {fmt!r}; valid formats: {', '.join(FORMATS)}"
        )
    return name


def read_trajectory(path: str | Path, format: str | None = None, *,
                    image_hw: Sequence[int] | None = None, intrinsics: bool = True,
                    **kw) -> Trajectory:
    """Read any supported format (``format=None`` detects it; see :func:`detect_format`).

    Args:
        path: the trajectory / camera file.
        format: one of :data:`FORMATS` (or an alias: ``re10k``, ``transforms``, ``json``).
        image_hw: ``(H, W)`` of the images the cameras are used with. Needed for intrinsics
            given relative to the image size: RealEstate10K's normalised ones, nerfstudio's
            ``camera_angle_*``/``*_fov`` or a default principal point without ``w``/``h``.
            Ignored by the formats without intrinsics. A file that states its own image size
            keeps its ``K`` for that size (``Trajectory.image_hw``); rescaling to other
            images is the caller's decision.
        intrinsics: ``False`` reads poses and timestamps only (``K`` and ``image_hw`` None).
        **kw: ``fps``/``times_path`` (kitti), ``fps`` (nerfstudio).
    Raises:
        TrajectoryFileError: the file does not parse as the format; the message names the
            format, the line (or JSON entry) and, when detected, how the format was detected.
        MirageInputError: unknown ``format``; intrinsics that need ``image_hw`` without it.
    """
    path = Path(path)
    name, how = (format_name(format), None) if format is not None else _detect(path)
    reader = {"tum": read_tum, "kitti": read_kitti, "realestate10k": read_realestate10k,
              "nerfstudio": read_nerfstudio}[name]
    try:
        return reader(path, image_hw=image_hw, intrinsics=intrinsics, **kw)
    except TrajectoryFileError as e:
        if how is None:
            raise
        raise TrajectoryFileError(
            f"{e} [format detected as {name} from {how}; to read it as another format pass "
            f"format= (mirage rollout --trajectory-format, trajectory_node file_format)]"
        ) from e


def write_trajectory(traj: Trajectory, path: str | Path, format: str, **kw) -> None:
    """Write ``traj`` in ``format`` (one of :data:`FORMATS`); keywords go to the writer
    (``times_path`` for kitti, ``url`` for realestate10k)."""
    writer = {"tum": write_tum, "kitti": write_kitti, "realestate10k": write_realestate10k,
              "nerfstudio": write_nerfstudio}[format_name(format)]
    writer(traj, path, **kw)
