"""Building messages by type name, and converting them to mirage_core values.

:class:`RclpyMessages` builds rclpy's generated classes (what the nodes send);
:class:`RosbagsMessages` builds messages of a ``rosbags`` type store (rosbag2 files written
without rclpy, e.g. simulated bags). Unspecified fields get zero defaults (0, "", False, zero
arrays, empty sequences, default nested messages); note that rosidl's own defaults from the
``.msg`` files (``geometry_msgs/Quaternion`` has ``w = 1``) are applied by rclpy only. The
conversion helpers below take either factory as ``msgs`` (``msgs.new("pkg/msg/T", **fields)``).

Conversions (conventions in docs/conventions.md):
- ``geometry_msgs/Pose`` <-> ``T_world_cam`` ``[4, 4]``. The quaternion is ROS's
  ``(x, y, z, w)``; a non-unit quaternion raises :class:`~mirage_core.errors.PoseError`.
- ``sensor_msgs/CameraInfo`` -> ``K`` ``[3, 3]`` and ``(H, W)``: P's left 3x3 for rectified
  images, K for raw ones without distortion; raw images with distortion are refused with how to
  rectify them (:func:`camera_info_to_K`, the one place that reads a CameraInfo).
- ``mirage/LatentTensor`` <-> torch tensor: float32, float16 or bfloat16, little-endian.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.geometry import (
    check_intrinsics,
    pose_from_translation_quat,
    pose_to_translation_quat,
)
from mirage_ros.image_conversion import MalformedMessageError, array_to_image

__all__ = [
    "CAMERA_INFO_DOC",
    "LATENT_DTYPES",
    "PINHOLE_WHEN_ZERO_D",
    "RECTIFY_HOWTO",
    "CameraInfoWarning",
    "RclpyMessages",
    "RosbagsMessages",
    "camera_info_msg",
    "camera_info_to_K",
    "check_frame_id",
    "image_topic_rectified",
    "latent_to_tensor",
    "path_from_T",
    "path_to_T",
    "pose_from_T",
    "pose_stamped_to_T",
    "pose_to_T",
    "stamp_from_ns",
    "stamp_to_ns",
    "tensor_to_latent",
]

class RosbagsMessages:
    """``new(type_name, **fields)`` for a rosbags type store, with ROS defaults for the rest."""

    def __init__(self, typestore) -> None:
        self.typestore = typestore

    def cls(self, type_name: str):
        try:
            return self.typestore.types[type_name]
        except KeyError:
            raise MirageInputError(f"unknown message type {type_name!r}") from None

    def new(self, type_name: str, **fields: Any) -> Any:
        from mirage_ros.rosbags_types import default_message

        self.cls(type_name)
        try:
            return default_message(self.typestore, type_name, **fields)
        except ValueError as e:
            raise MirageInputError(str(e)) from None

    def image(self, arr: np.ndarray, encoding: str, header: Any = None) -> Any:
        """``sensor_msgs/Image`` of ``arr`` (layout of ``encoding``; see image_conversion)."""
        if header is None:
            header = self.new("std_msgs/msg/Header")
        return array_to_image(arr, encoding, self.cls("sensor_msgs/msg/Image"), header)


class RclpyMessages:
    """``new(type_name, **fields)`` with rclpy's generated classes (on ROS 2 machines)."""

    _PARTS = ("_Request", "_Response", "_Goal", "_Result", "_Feedback")

    def cls(self, type_name: str):
        """The generated class; ``pkg/srv/X_Request`` is ``pkg.srv.X.Request`` (and the same
        for ``_Response`` and an action's ``_Goal``, ``_Result``, ``_Feedback``)."""
        pkg, kind, name = type_name.split("/")
        mod = importlib.import_module(f"{pkg}.{kind}")
        for part in self._PARTS:
            if name.endswith(part) and not hasattr(mod, name):
                return getattr(getattr(mod, name[: -len(part)]), part[1:])
        return getattr(mod, name)

    def new(self, type_name: str, **fields: Any) -> Any:
        return self.cls(type_name)(**fields)

    def image(self, arr: np.ndarray, encoding: str, header: Any = None) -> Any:
        """``sensor_msgs/Image`` of ``arr`` (rclpy's class; data copied as bytes)."""
        return array_to_image(arr, encoding, self.cls("sensor_msgs/msg/Image"), header,
                              data_as="bytes")


# ------------------------------------------------------------------------------ conversions
def pose_to_T(pose: Any) -> torch.Tensor:
    """``geometry_msgs/Pose`` -> ``[4, 4]`` float64 ``T_world_cam``; quaternion ``(x, y, z, w)``.

    Raises:
        PoseError: non-finite values or a non-unit quaternion.
    """
    p, q = pose.position, pose.orientation
    return pose_from_translation_quat(
        [p.x, p.y, p.z], [q.x, q.y, q.z, q.w], order="xyzw"
    )


def pose_from_T(msgs, T: torch.Tensor) -> Any:
    """``[4, 4]`` pose -> ``geometry_msgs/Pose`` (quaternion ``(x, y, z, w)``, w >= 0)."""
    t, q = pose_to_translation_quat(T, order="xyzw")
    return msgs.new(
        "geometry_msgs/msg/Pose",
        position=msgs.new("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=msgs.new("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]),
                             z=float(q[2]), w=float(q[3])),
    )


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def stamp_from_ns(msgs, t_ns: int) -> Any:
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    t_ns = int(t_ns)
    return msgs.new("builtin_interfaces/msg/Time", sec=t_ns // 10**9, nanosec=t_ns % 10**9)


def check_frame_id(frame_id: str, expected: str, what: str) -> None:
    """Refuse poses given in another frame than ``expected`` (the memory's world frame).

    Frame names compare without a leading ``/`` (tf2's convention); an empty ``frame_id``
    means "unspecified" and is taken as ``expected`` (many simple publishers leave it empty).

    Raises:
        MalformedMessageError: ``frame_id`` names another frame (the message says which, and
            that the poses must be transformed first: Mirage does not look up tf here).
    """
    if frame_id and frame_id.lstrip("/") != expected.lstrip("/"):
        raise MalformedMessageError(
            f"{what} is in frame {frame_id!r}, not the world frame {expected!r} (the frame_id "
            "parameter); transform it into that frame first")


def pose_stamped_to_T(msg: Any, frame_id: str | None = None) -> torch.Tensor:
    """``geometry_msgs/PoseStamped`` -> ``[4, 4]`` ``T_world_cam`` (see :func:`pose_to_T`),
    refusing another frame than ``frame_id`` when it is given (:func:`check_frame_id`)."""
    if frame_id is not None:
        check_frame_id(msg.header.frame_id, frame_id, "the pose")
    return pose_to_T(msg.pose)


def path_to_T(path: Any, frame_id: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """``nav_msgs/Path`` -> (``T_world_cam`` ``[N, 4, 4]`` float64, stamps ``[N]`` int64 ns).

    Args:
        path: the message.
        frame_id: the world frame the poses must be in (the path's and every pose's
            ``header.frame_id``; :func:`check_frame_id`); ``None`` = not checked.

    Raises:
        MalformedMessageError: an empty path, stamps that are not strictly increasing
            (all-zero stamps are allowed: "no timing"), or poses in another frame.
        PoseError: a non-finite pose or a non-unit quaternion (names the index).
    """
    poses = list(path.poses)
    if not poses:
        raise MalformedMessageError("the path has no poses")
    if frame_id is not None:
        check_frame_id(path.header.frame_id, frame_id, "the path")
        for i, ps in enumerate(poses):
            check_frame_id(ps.header.frame_id, frame_id, f"path pose {i}")
    Ts = []
    for i, ps in enumerate(poses):
        try:
            Ts.append(pose_to_T(ps.pose))
        except ValueError as e:
            raise type(e)(f"path pose {i}: {e}") from None
    stamps = np.array([stamp_to_ns(ps.header.stamp) for ps in poses], dtype=np.int64)
    if stamps.any() and len(stamps) > 1 and not (np.diff(stamps) > 0).all():
        i = int(np.argmin(np.diff(stamps) > 0)) + 1
        raise MalformedMessageError(
            f"path stamps must increase strictly; pose {i} is at {stamps[i]} ns after "
            f"{stamps[i - 1]} ns"
        )
    return torch.stack(Ts), stamps


def path_from_T(msgs, T_world_cam: torch.Tensor, stamps_ns, frame_id: str) -> Any:
    """``[N, 4, 4]`` poses + ``[N]`` ns stamps -> ``nav_msgs/Path`` in ``frame_id``."""
    poses = []
    for T, t in zip(T_world_cam, stamps_ns, strict=True):
        hdr = msgs.new("std_msgs/msg/Header", stamp=stamp_from_ns(msgs, int(t)),
                       frame_id=frame_id)
        poses.append(msgs.new("geometry_msgs/msg/PoseStamped", header=hdr,
                              pose=pose_from_T(msgs, T)))
    hdr = msgs.new("std_msgs/msg/Header", stamp=stamp_from_ns(msgs, int(stamps_ns[0])),
                   frame_id=frame_id)
    return msgs.new("nav_msgs/msg/Path", header=hdr, poses=poses)


def camera_info_msg(msgs, K: torch.Tensor, hw: tuple[int, int], header: Any = None) -> Any:
    """``sensor_msgs/CameraInfo`` of a pinhole camera (no distortion) for H x W images."""
    H, W = hw
    Kn = np.asarray(torch.as_tensor(K, dtype=torch.float64).cpu(), dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = Kn
    fields = dict(height=int(H), width=int(W), distortion_model="plumb_bob",
                  d=np.zeros(5), k=Kn.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1))
    if header is not None:
        fields["header"] = header
    return msgs.new("sensor_msgs/msg/CameraInfo", **fields)


#: Where :func:`camera_info_to_K` takes its rules from: the field comments of
#: ``sensor_msgs/msg/CameraInfo.msg`` (ROS 2 common_interfaces; rendered at
#: https://docs.ros.org/en/rolling/p/sensor_msgs/msg/CameraInfo.html). K and D describe the raw
#: (distorted) image; the left 3x3 of P is "the normal camera intrinsic matrix for the rectified
#: image"; "for monocular cameras, Tx = Ty = 0"; "if the camera is uncalibrated, the matrices
#: D, K, R, P should be left zeroed out"; binning 0 or 1 and an all-zero ROI mean full resolution.
CAMERA_INFO_DOC = "sensor_msgs/msg/CameraInfo.msg (ROS 2 common_interfaces)"

#: How to rectify, quoted in every refusal of a raw image with distortion.
RECTIFY_HOWTO = (
    "rectify the images first: on ROS 2 run image_proc's rectify node (`ros2 run image_proc "
    "rectify_node --ros-args -r image:=<camera>/image_raw`, publishes image_rect) and use "
    "image_rect; offline, map1, map2 = cv2.initUndistortRectifyMap(K, D, R, P, (W, H), "
    "cv2.CV_32FC1) then cv2.remap(img, map1, map2, cv2.INTER_LINEAR) (or cv2.undistort(img, K, "
    "D, None, P[:, :3]) when R is the identity). The rectified images have the intrinsics of "
    "P's left 3x3, which Mirage then reads"
)


class CameraInfoWarning(UserWarning):
    """:func:`camera_info_to_K` assumed something the caller should know (e.g. that images
    of a CameraInfo with distortion are rectified)."""


def image_topic_rectified(topic: str) -> bool | None:
    """Whether an image topic name says its images are rectified, by ROS naming
    (image_proc / image_pipeline): ``True`` for ``.../image_rect``, ``image_rect_color``
    (also with a transport suffix such as ``/compressed``), ``False`` for ``.../image_raw``
    (and ``image_color``/``image_mono``, which are debayered but not rectified), ``None`` when
    the name does not say (e.g. ``/camera/image``)."""
    parts = [p for p in str(topic).split("/") if p]
    while parts and parts[-1] in ("compressed", "compressedDepth", "theora", "zstd", "ffmpeg"):
        parts.pop()
    if not parts:
        return None
    last = parts[-1].lower()
    if "rect" in last:
        return True
    if last.startswith("image_raw") or last in ("image_color", "image_mono", "raw"):
        return False
    return None


def _mat(values: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size != shape[0] * shape[1]:
        raise MalformedMessageError(f"CameraInfo.{name} has {a.size} values, expected "
                                    f"{shape[0] * shape[1]}")
    if not np.isfinite(a).all():
        raise MalformedMessageError(f"CameraInfo.{name} has non-finite values: {a.tolist()}")
    return a.reshape(shape).copy()  # never a view of the message


#: ``CameraInfo.distortion_model`` values that are a pinhole camera when D is all zero:
#: sensor_msgs/distortion_models.hpp's ``plumb_bob`` and ``rational_polynomial`` (Kalibr's
#: name for plumb_bob is ``radtan``), or none given. ``equidistant`` (and other fisheye
#: names) is never pinhole.
PINHOLE_WHEN_ZERO_D = ("", "plumb_bob", "rational_polynomial", "radtan")


def camera_info_to_K(info: Any, rectified: bool | None = None,
                     ) -> tuple[torch.Tensor, tuple[int, int]]:
    """``sensor_msgs/CameraInfo`` -> (``K`` ``[3, 3]`` float64 pixels, ``(H, W)``) of the images
    Mirage is given, which must be rectified pinhole images.

    The rules follow :data:`CAMERA_INFO_DOC` (K and D belong to the raw image, P to the
    rectified one):

    - rectified images (``rectified=True``, or ``None`` = not known, which Mirage assumes since
      it asks for rectified images): the left 3x3 of P. P's fourth column (Tx, Ty) must be 0
      (a stereo right camera is refused: Mirage is monocular) and R the identity (a stereo
      rectification rotation would turn the rectified image away from ``header.frame_id``,
      whose pose Mirage uses). An all-zero P (not calibrated for rectification) falls back to
      K only when D is zero. With ``rectified=None`` and distortion, a
      :class:`CameraInfoWarning` says that P was used on the assumption that the images are
      rectified.
    - raw images (``rectified=False``, e.g. an ``image_raw`` topic): K, and only when D is
      zero and the model is polynomial (:data:`PINHOLE_WHEN_ZERO_D`; then the raw image is a
      pinhole image); with distortion, or an ``equidistant``/fisheye model even with a zero D,
      refused with :data:`RECTIFY_HOWTO`.

    Args:
        info: the message (rclpy's or rosbags' class).
        rectified: whether the images are rectified; :func:`image_topic_rectified` tells it
            from a topic name.
    Raises:
        MalformedMessageError: zero size; non-finite values; binning > 1 or a region of
            interest smaller than the image (the intrinsics would need rescaling); P with a
            non-zero Tx/Ty or R not the identity; an uncalibrated camera (K and P zero);
            distortion on a raw image or without a P.
        ShapeError: the chosen 3x3 is not a valid pinhole ``K``.
    """
    H, W = int(info.height), int(info.width)
    if H <= 0 or W <= 0:
        raise MalformedMessageError(f"CameraInfo is {H}x{W}; height and width must be set")
    bx, by = int(getattr(info, "binning_x", 0)), int(getattr(info, "binning_y", 0))
    if bx > 1 or by > 1:
        raise MalformedMessageError(
            f"CameraInfo has binning {bx}x{by}: the images are smaller than the calibrated "
            f"{W}x{H} and K/P would need rescaling; publish unbinned images or a CameraInfo "
            "calibrated at the binned size")
    roi = getattr(info, "roi", None)
    if roi is not None:
        box = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
        if box not in ((0, 0, 0, 0), (0, 0, W, H)):
            raise MalformedMessageError(
                f"CameraInfo has a region of interest (x, y, w, h) = {box} of the {W}x{H} "
                "calibrated image: the intrinsics would need shifting; publish full images")
    d = np.asarray(info.d, dtype=np.float64).reshape(-1)
    if not np.isfinite(d).all():
        raise MalformedMessageError(f"CameraInfo.d has non-finite values: {d.tolist()}")
    model = str(info.distortion_model).strip().lower()
    # A zero D means "no distortion" only for the polynomial models; an equidistant (fisheye)
    # lens projects r = f * theta, not f * tan(theta), whatever its coefficients.
    distorted = bool(d.size and np.abs(d).max() > 0) or model not in PINHOLE_WHEN_ZERO_D
    K = _mat(info.k, (3, 3), "k")
    P = _mat(info.p, (3, 4), "p")
    R = _mat(info.r, (3, 3), "r")
    what = (f"CameraInfo (distortion_model {str(info.distortion_model)!r}, "
            f"D = {d.tolist()})")
    if rectified is False:
        if distorted:
            raise MalformedMessageError(
                f"{what} describes raw, distorted images, and Mirage needs rectified pinhole "
                f"images; {RECTIFY_HOWTO}")
        if not K.any():
            raise MalformedMessageError("CameraInfo is uncalibrated (K is all zero)")
        return check_intrinsics(torch.from_numpy(K), "CameraInfo.k"), (H, W)
    if P.any():
        if np.abs(P[:, 3]).max() > 0:
            raise MalformedMessageError(
                f"CameraInfo.p has a non-zero fourth column (Tx, Ty, 0) = {P[:, 3].tolist()}: "
                "a stereo camera other than the first; Mirage is monocular (Tx = Ty = 0 for "
                "monocular cameras); use the left camera's images and CameraInfo")
        if R.any() and not np.allclose(R, np.eye(3), atol=1e-9):
            raise MalformedMessageError(
                f"CameraInfo.r is not the identity ({R.reshape(-1).tolist()}): a stereo "
                "rectification rotation turns the rectified image away from header.frame_id, "
                "whose pose Mirage uses; not supported (monocular cameras have R = I)")
        if distorted and rectified is None:
            warnings.warn(
                f"{what}: using P's left 3x3 on the assumption that the images are rectified "
                f"(image_rect); if they are raw, {RECTIFY_HOWTO}", CameraInfoWarning,
                stacklevel=2)
        return check_intrinsics(torch.from_numpy(P[:, :3].copy()), "CameraInfo.p[:, :3]"), (H, W)
    if distorted:
        raise MalformedMessageError(
            f"{what} has distortion but no P (all zero), so there are no intrinsics for "
            "rectified images; calibrate the camera (camera_calibration writes P), or "
            f"{RECTIFY_HOWTO}")
    if not K.any():
        raise MalformedMessageError("CameraInfo is uncalibrated (K and P are all zero)")
    return check_intrinsics(torch.from_numpy(K), "CameraInfo.k"), (H, W)


LATENT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def latent_to_tensor(msg: Any) -> torch.Tensor:
    """``mirage/LatentTensor`` -> torch tensor of its dtype and shape (CPU, owns its data)."""
    dtype = LATENT_DTYPES.get(str(msg.dtype))
    if dtype is None:
        raise MalformedMessageError(
            f"LatentTensor dtype {msg.dtype!r} not supported ({', '.join(LATENT_DTYPES)})"
        )
    shape = [int(s) for s in np.asarray(msg.shape).tolist()]
    raw = np.frombuffer(bytes(np.asarray(msg.data, dtype=np.uint8)), dtype=np.uint8)
    item = torch.empty((), dtype=dtype).element_size()
    if int(np.prod(shape, dtype=np.int64)) * item != raw.size:
        raise MalformedMessageError(
            f"LatentTensor shape {shape} x {item} bytes != {raw.size} data bytes"
        )
    t = torch.frombuffer(bytearray(raw.tobytes()), dtype=dtype) if raw.size else torch.empty(
        0, dtype=dtype)
    return t.reshape(shape)


def tensor_to_latent(msgs, x: torch.Tensor, header: Any = None) -> Any:
    """torch tensor (float32/float16/bfloat16) -> ``mirage/LatentTensor``."""
    names = {v: k for k, v in LATENT_DTYPES.items()}
    if x.dtype not in names:
        raise ShapeError(f"tensor dtype {x.dtype} not supported ({', '.join(LATENT_DTYPES)})")
    raw = x.detach().cpu().contiguous().view(torch.uint8).numpy().reshape(-1)
    fields = {"dtype": names[x.dtype], "shape": np.asarray(x.shape, dtype=np.uint32), "data": raw}
    if header is not None:
        fields["header"] = header
    return msgs.new("mirage/msg/LatentTensor", **fields)


