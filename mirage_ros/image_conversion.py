"""``sensor_msgs/Image`` <-> numpy, correct for rgb8, bgr8, mono8, 16UC1 and 32FC1; and
``sensor_msgs/CompressedImage`` (jpeg, png colour) -> RGB numpy (:func:`compressed_image_to_rgb`).

Works on any message object with the ROS field names (``height``, ``width``, ``encoding``,
``is_bigendian``, ``step``, ``data``): rclpy's generated classes and rosbags' classes alike.
Rows may be padded (``step > width * bytes_per_pixel``); big-endian 16UC1/32FC1 data is
byte-swapped. Where the real ``cv_bridge`` is installed (a ROS 2 machine),
:func:`image_to_array` and :func:`array_to_image` give the same arrays as
``CvBridge().imgmsg_to_cv2(msg, "passthrough")`` (tested there). The unofficial PyPI
``cv-bridge`` is never used: it corrupts 16UC1 depth (ros2-without-rclpy.md).

Array layouts: rgb8/bgr8 ``[H, W, 3]`` uint8 (channel order as the encoding says), mono8
``[H, W]`` uint8, 16UC1 ``[H, W]`` uint16 (depth in millimetres by ROS convention, REP 118),
32FC1 ``[H, W]`` float32 (depth in metres).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mirage_core.errors import MirageInputError

__all__ = [
    "COMPRESSED_CODECS",
    "ENCODINGS",
    "MalformedMessageError",
    "array_to_image",
    "compressed_image_to_rgb",
    "depth_to_metres",
    "image_to_array",
    "image_to_rgb",
]

#: encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}


class MalformedMessageError(MirageInputError):
    """A message's fields are inconsistent (sizes, encoding, values)."""


def _bytes(data: Any) -> np.ndarray:
    """``data`` (bytes, array.array, list or numpy) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        return np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
    return np.frombuffer(bytes(data), np.uint8)


def image_to_array(msg: Any) -> np.ndarray:
    """Decode an image message (layouts in the module docstring); the result owns its data.

    Raises:
        MalformedMessageError: unsupported encoding, zero size, ``step`` too small, or
            ``len(data) != step * height``.
    """
    enc = str(msg.encoding)
    if enc not in ENCODINGS:
        raise MalformedMessageError(
            f"unsupported image encoding {enc!r}; supported: {', '.join(ENCODINGS)}"
        )
    dtype, ch = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MalformedMessageError(f"image is {h}x{w}; both sides must be > 0")
    row = w * ch * dtype.itemsize
    if step < row:
        raise MalformedMessageError(f"step {step} < width * bytes per pixel = {row} ({enc})")
    raw = _bytes(msg.data)
    if raw.size != step * h:
        raise MalformedMessageError(
            f"data has {raw.size} bytes, expected step * height = {step} * {h} = {step * h}"
        )
    rows = raw.reshape(h, step)[:, :row]
    big = bool(msg.is_bigendian) and dtype.itemsize > 1
    dt = dtype.newbyteorder(">") if big else dtype.newbyteorder("<")
    arr = np.ascontiguousarray(rows).view(dt).reshape((h, w, ch) if ch > 1 else (h, w))
    return arr.astype(dtype, copy=True)


def array_to_image(arr: np.ndarray, encoding: str, make: Callable[..., Any],
                   header: Any = None, data_as: str = "numpy") -> Any:
    """Encode ``arr`` as an image message built by ``make(**fields)`` (e.g. the Image class).

    Args:
        arr: array in the layout of ``encoding`` (module docstring).
        encoding: one of :data:`ENCODINGS`.
        make: the message constructor (rclpy's ``sensor_msgs.msg.Image`` or rosbags' class).
        header: the message header (``std_msgs/Header``); required by rosbags' classes.
        data_as: ``"numpy"`` (rosbags' classes) or ``"bytes"`` (rclpy's, which copy bytes
            into an ``array.array`` quickly but iterate a numpy array element by element).
    Raises:
        MalformedMessageError: unknown encoding, or an array of the wrong dtype/shape.
    """
    if encoding not in ENCODINGS:
        raise MalformedMessageError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        )
    dtype, ch = ENCODINGS[encoding]
    a = np.asarray(arr)
    want = "[H, W, 3]" if ch == 3 else "[H, W]"
    if a.dtype != dtype or a.ndim != (3 if ch == 3 else 2) or (ch == 3 and a.shape[2] != 3):
        raise MalformedMessageError(
            f"{encoding} needs a {dtype} array {want}, got {a.dtype} {a.shape}"
        )
    h, w = a.shape[:2]
    data = np.ascontiguousarray(a.astype(dtype.newbyteorder("<"), copy=False))
    fields = {
        "height": h,
        "width": w,
        "encoding": encoding,
        "is_bigendian": 0,  # always written little-endian
        "step": w * ch * dtype.itemsize,
        "data": data.tobytes() if data_as == "bytes" else data.reshape(-1).view(np.uint8),
    }
    if header is not None:
        fields["header"] = header
    return make(**fields)


def image_to_rgb(msg: Any) -> np.ndarray:
    """An rgb8 or bgr8 image message as ``[H, W, 3]`` uint8 RGB."""
    arr = image_to_array(msg)
    if msg.encoding == "rgb8":
        return arr
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    raise MalformedMessageError(f"expected an rgb8 or bgr8 image, got {msg.encoding!r}")


def depth_to_metres(msg: Any) -> np.ndarray:
    """A 32FC1 (metres) or 16UC1 (millimetres) depth image as ``[H, W]`` float32 metres.

    NaN/inf (32FC1 "no return") become 0 ("no measurement", the project's convention);
    negative values are rejected.
    """
    arr = image_to_array(msg)
    if msg.encoding == "16UC1":
        return arr.astype(np.float32) / 1000.0
    if msg.encoding != "32FC1":
        raise MalformedMessageError(f"depth must be 32FC1 or 16UC1, got {msg.encoding!r}")
    out = np.where(np.isfinite(arr), arr, 0.0).astype(np.float32)
    if (out < 0).any():
        raise MalformedMessageError("depth image has negative values")
    return out


#: codecs :func:`compressed_image_to_rgb` decodes (``CompressedImage.format`` names them).
COMPRESSED_CODECS = ("jpeg", "png")
#: 8-bit colour encodings that image_transport's compressed plugin stores as bgr8 jpeg/png.
_COLOUR8 = ("rgb8", "bgr8", "rgba8", "bgra8")


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (jpeg or png colour image) as ``[H, W, 3]`` uint8 RGB.

    ``format`` is read as ROS 2's ``compressed_image_transport`` writes and reads it
    (``compressed_publisher.cpp`` / ``compressed_subscriber.cpp`` in ros-perception/
    image_transport_plugins): ``"<encoding>; <codec> compressed <target>"``, e.g.
    ``"rgb8; jpeg compressed bgr8"`` or ``"bgr8; png compressed bgr8"``, or only the codec
    (``"jpeg"``, ``"png"``: older publishers). The data is decoded with OpenCV
    (``cv2.imdecode``, ``IMREAD_UNCHANGED`` as the subscriber does), which gives the pixels in
    the channel order they were encoded in: BGR when the target is ``bgr...`` or no encoding
    is given (what ``cv2.imencode`` expects), else RGB (the subscriber's rule); either way the
    result is RGB.

    Raises:
        MalformedMessageError: ``compressedDepth`` (a depth image), a codec other than
            :data:`COMPRESSED_CODECS`, an encoding that is not 8-bit colour (e.g. ``mono8``,
            ``16UC1``), empty or undecodable data, or data that decodes to something other than
            8-bit 3-channel pixels.
        ImportError: OpenCV is not installed (``pip install opencv-python-headless``).
    """
    fmt = str(msg.format).strip()
    if "compresseddepth" in fmt.lower():
        raise MalformedMessageError(
            f"CompressedImage format {fmt!r} is compressed_depth_image_transport's depth "
            "format; Mirage reads colour images (jpeg, png) from CompressedImage and depth "
            "only from raw sensor_msgs/Image (16UC1 mm or 32FC1 m): record the depth topic "
            "uncompressed")
    if ";" in fmt:
        encoding, rest = (s.strip() for s in fmt.split(";", 1))
        codec = (rest.split() or [""])[0].lower()
        bgr = "compressed bgr" in rest
        if encoding not in _COLOUR8:
            raise MalformedMessageError(
                f"CompressedImage format {fmt!r}: encoding {encoding!r} is not an 8-bit colour "
                f"image ({', '.join(_COLOUR8)}); Mirage needs colour images")
    else:
        codec, bgr = fmt.lower(), True
    codec = {"jpg": "jpeg"}.get(codec, codec)
    if codec not in COMPRESSED_CODECS:
        raise MalformedMessageError(
            f"CompressedImage format {fmt!r}: codec {codec!r} is not supported; supported: "
            f"{', '.join(COMPRESSED_CODECS)} (as compressed_image_transport writes them)")
    raw = _bytes(msg.data)
    if raw.size == 0:
        raise MalformedMessageError(f"CompressedImage ({fmt!r}) has no data")
    try:
        import cv2
    except ImportError as e:
        raise ImportError("decoding sensor_msgs/CompressedImage needs OpenCV: pip install "
                          "opencv-python-headless") from e
    arr = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise MalformedMessageError(
            f"CompressedImage ({fmt!r}): {raw.size} bytes do not decode as {codec}")
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        ch = 1 if arr.ndim == 2 else arr.shape[2]
        raise MalformedMessageError(
            f"CompressedImage ({fmt!r}) decodes to {ch}-channel {arr.dtype} pixels; Mirage "
            "needs 8-bit 3-channel colour")
    return np.ascontiguousarray(arr[..., ::-1] if bgr else arr)
