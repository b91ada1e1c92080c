"""rosbag2 files without ROS: record, read, extract a camera stream, write a simulated camera.

Uses ``rosbags`` (pure Python). Bags are rosbag2 directories (``metadata.yaml`` plus one
``.mcap`` or ``.db3`` file).

Writing (:class:`BagRecorder`): the project's type store (:func:`mirage_ros.interfaces.
make_typestore`: standard Humble messages plus ``mirage/msg/*``). Every connection carries its
full message definition (``ros2msg`` text and RIHS01 hash), so ``ros2 bag`` and any reader can
decode the custom ``mirage/msg/*`` types without the ``mirage`` package. Metadata version 8 by
default: it stores ``offered_qos_profiles`` as a YAML string, as older rosbag2 releases expect;
version 9 (Jazzy) stores a list. Humble's rosbag2 (0.15) may still refuse a metadata file newer
than it knows; then run ``ros2 bag reindex <bag> -s mcap``, which rewrites ``metadata.yaml``
from the mcap file (it holds the schemas and channels). The same command repairs a bag whose
recorder died before writing ``metadata.yaml``.

Topic names are stored fully qualified, as ``ros2 bag record`` stores them: a missing leading
``/`` is added when writing, and ``camera/image`` and ``/camera/image`` name the same topic when
reading.

QoS metadata: every topic is offered RELIABLE / VOLATILE / KEEP_LAST(10); topics named in
``latched_topics`` are offered RELIABLE / TRANSIENT_LOCAL / KEEP_LAST(1), so ``ros2 bag play``
republishes them latched. Durations are 0 (unspecified).

Reading (:func:`read_messages`, :func:`read_camera_stream`) decodes with the definitions stored
in the bag (a fresh type store per bag), so bags written by ROS 2 tools and by other versions of
this project work too. Only a bag that stores no definitions at all (Humble's ``sqlite3``
recordings) is decoded with :func:`~mirage_ros.interfaces.make_typestore` (Humble + mirage).

Stamps are integer nanoseconds. ``stamp_ns`` of :class:`BagMessage` is the bag's receive (log)
time; camera-stream pairing uses the messages' ``header.stamp``, or the log time when the
header stamps are zero or repeated (:func:`read_camera_stream`).

Camera streams as robots record them are read too: ``sensor_msgs/CompressedImage`` (jpeg, png)
images, and poses composed from ``/tf`` + ``/tf_static`` (:mod:`mirage_ros.tf_poses`).
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mirage_core.errors import MirageInputError, PoseError
from mirage_core.trajectory import Trajectory
from mirage_ros.image_conversion import compressed_image_to_rgb, depth_to_metres, image_to_rgb
from mirage_ros.messages import (
    CameraInfoWarning,
    RosbagsMessages,
    camera_info_msg,
    camera_info_to_K,
    image_topic_rectified,
    pose_from_T,
    pose_to_T,
    stamp_from_ns,
    stamp_to_ns,
)
from mirage_ros.tf_poses import TfBuffer, TfError

__all__ = [
    "DEFAULT_START_NS",
    "BagError",
    "BagMessage",
    "BagRecorder",
    "BagStreamWarning",
    "CameraStream",
    "SimBagTopics",
    "list_topics",
    "main",
    "read_camera_stream",
    "read_messages",
    "write_sim_bag",
]

#: header stamp of frame 0 written by :func:`write_sim_bag` (2023-11-14T22:13:20Z): a fixed,
#: non-zero time (ROS tools treat time 0 as "latest"/unset).
DEFAULT_START_NS = 1_700_000_000 * 10**9
_NS = 10**9

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


class BagError(MirageInputError):
    """A bag cannot be read or written: corrupt, unknown topic, inconsistent content."""


class BagStreamWarning(UserWarning):
    """Camera-stream extraction dropped or reordered messages (counts are in the result), or
    made an assumption (pairing by log time, intrinsics from P)."""


class BagMessage(NamedTuple):
    topic: str  # fully qualified topic name
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    stamp_ns: int  # bag log (receive) time, nanoseconds
    msg: Any  # deserialised message (rosbags dataclass)


def _topic(name: str) -> str:
    name = str(name)
    if not name.strip("/"):
        raise BagError(f"invalid topic name {name!r}")
    return name if name.startswith("/") else "/" + name


def _qos(latched: bool):
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1 if latched else 10, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


# ------------------------------------------------------------------------------ writing
class BagRecorder:
    """Write messages into a new rosbag2 bag (context manager).

    Args:
        path: the bag directory to create; must not exist (bags are never overwritten).
        typestore: rosbags type store holding the messages' types; default
            ``make_typestore()`` (Humble + ``mirage/msg/*``).
        storage: ``"mcap"`` (default) or ``"sqlite3"``.
        version: rosbag2 metadata version, 8 (default) or 9 (module docstring).
        latched_topics: topics offered TRANSIENT_LOCAL depth 1 (e.g. memory stats).
    Raises:
        FileExistsError: ``path`` exists.
        BagError: unknown storage or version.

    On leaving the ``with`` block (also through an exception) the bag is closed and what was
    written so far stays readable.
    """

    def __init__(self, path: str | Path, typestore=None, storage: str = "mcap",
                 version: int = 8, latched_topics: Iterable[str] = ()) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from mirage_ros.interfaces import make_typestore

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(
                f"bag {self.path} already exists; refusing to overwrite (choose a new path or "
                "delete it)"
            )
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
        if version not in (8, 9):
            raise BagError(f"rosbag2 metadata version must be 8 or 9, got {version!r}")
        self.typestore = typestore if typestore is not None else make_typestore()
        self._latched = {_topic(t) for t in latched_topics}
        self._writer = Writer(self.path, version=version, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}  # messages written per topic

    def write(self, topic: str, msg: Any, stamp_ns: int) -> None:
        """Write ``msg`` (type from ``msg.__msgtype__``) on ``topic`` at log time ``stamp_ns``.

        The topic's connection is created on first use; a topic keeps one message type.
        """
        if self._writer is None:
            raise BagError(f"bag {self.path} is closed")
        topic = _topic(topic)
        msgtype = getattr(msg, "__msgtype__", None)
        if msgtype not in self.typestore.types:
            raise BagError(f"message type {msgtype!r} of {type(msg).__name__} is not in the "
                           "recorder's type store")
        valid_int = isinstance(stamp_ns, (int, np.integer)) and not isinstance(stamp_ns, bool)
        if not valid_int or stamp_ns < 0:
            raise BagError(f"stamp_ns must be a non-negative integer (ns), got {stamp_ns!r}")
        self.write_cdr(topic, msgtype, self.typestore.serialize_cdr(msg, msgtype), stamp_ns)

    def write_cdr(self, topic: str, msgtype: str, data: bytes, stamp_ns: int) -> None:
        """Write already serialised CDR bytes (e.g. ``rclpy.serialization.serialize_message``)
        of a ``msgtype`` message; the type must be in the recorder's type store (its
        definition goes into the bag)."""
        if self._writer is None:
            raise BagError(f"bag {self.path} is closed")
        if msgtype not in self.typestore.types:
            raise BagError(f"message type {msgtype!r} is not in the recorder's type store")
        topic = _topic(topic)
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore,
                offered_qos_profiles=[_qos(topic in self._latched)])
            self._connections[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} carries {conn.msgtype}; cannot write a {msgtype}")
        self._writer.write(conn, int(stamp_ns), bytes(data))
        self.counts[topic] += 1

    def close(self) -> None:
        """Finish the bag (writes ``metadata.yaml``); idempotent."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> BagRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------ reading
def _rosbags_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    return AnyReaderError, ReaderError, SerdeError, TypesysError


def _open_reader(path: str | Path):
    from rosbags.highlevel import AnyReader

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"no rosbag2 bag (a directory) at {p}")
    if not (p / "metadata.yaml").is_file():
        raise FileNotFoundError(
            f"{p} has no metadata.yaml (recording interrupted?); run `ros2 bag reindex {p} "
            "-s mcap` (or -s sqlite3) to rebuild it"
        )
    from mirage_ros.interfaces import make_typestore

    # default_typestore is used only when the bag stores no definitions at all
    reader = AnyReader([p], default_typestore=make_typestore())
    try:
        reader.open()
    except _rosbags_errors() as e:
        raise BagError(f"cannot read bag {p}: {e}") from e
    return reader


def _available(reader) -> str:
    return ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"


def list_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """``{topic: (msgtype, message count)}`` of a bag."""
    reader = _open_reader(path)
    try:
        out: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            out[c.topic] = (c.msgtype, out.get(c.topic, ("", 0))[1] + c.msgcount)
        return out
    finally:
        reader.close()


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Messages of a bag in log-time order as :class:`BagMessage` ``(topic, msgtype, stamp_ns,
    msg)``, decoded with the bag's own definitions.

    Args:
        path: rosbag2 directory.
        topics: topics to read (with or without the leading ``/``); ``None`` for all.
    Raises (here, before the first message):
        FileNotFoundError: no bag at ``path`` or no ``metadata.yaml``.
        BagError: corrupt bag; a requested topic is not in the bag (lists the available ones).
    Raises (while iterating): BagError for corrupt message data.
    """
    reader = _open_reader(path)
    try:
        conns = list(reader.connections)
        if topics is not None:
            want = {_topic(t) for t in topics}
            missing = sorted(want - {c.topic for c in conns})
            if missing:
                raise BagError(f"topic(s) {', '.join(missing)} not in bag {path}; it has: "
                               f"{_available(reader)}")
            conns = [c for c in conns if c.topic in want]
    except BaseException:
        reader.close()
        raise
    return _iterate(reader, conns, Path(path))


def _iterate(reader, conns, path: Path) -> Iterator[BagMessage]:
    try:
        if not conns:
            return
        for conn, t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            yield BagMessage(conn.topic, conn.msgtype, int(t), msg)
    except _rosbags_errors() as e:
        raise BagError(f"corrupt data in bag {path}: {e}") from e
    finally:
        reader.close()


# ------------------------------------------------------------------------------ camera stream
@dataclass
class CameraStream:
    """Camera frames from a bag, each paired with a pose (and depth) by stamp.

    Attributes:
        frames: ``[N, H, W, 3]`` uint8 RGB, sorted by stamp.
        depth: ``[N, H, W]`` float32 metres (0 = no measurement), or ``None``.
        T_world_cam: ``[N, 4, 4]`` float64 OpenCV camera-to-world poses.
        K: ``[3, 3]`` float64 intrinsics (constant over the bag).
        image_hw: ``(H, W)``.
        stamps_ns: ``[N]`` int64 image stamps, strictly increasing: header stamps, or the
            bag's log times when ``stamp_source`` is ``"log"``.
        pose_frame_id: ``header.frame_id`` of the poses, or the tf world frame (the world).
        num_images: image messages in the bag.
        dropped_no_pose: images without a valid pose within ``max_dt_s``.
        dropped_no_depth: images (with a pose) without a depth image within ``max_dt_s``.
        bad_poses: pose messages rejected (non-unit quaternion, NaN).
        out_of_order: per topic, messages whose header stamp is earlier than one before it in
            the bag (they were sorted).
        warnings: the warnings issued (also sent through :mod:`warnings`).
        stamp_source: ``"header"`` (paired by ``header.stamp``) or ``"log"`` (the header
            stamps were zero or repeated; paired by the bag's log time).
        camera_frame_id: the images' ``header.frame_id`` when the poses came from tf, else
            ``""``.
    """

    frames: np.ndarray
    depth: np.ndarray | None
    T_world_cam: np.ndarray
    K: np.ndarray
    image_hw: tuple[int, int]
    stamps_ns: np.ndarray
    pose_frame_id: str
    num_images: int
    dropped_no_pose: int = 0
    dropped_no_depth: int = 0
    bad_poses: int = 0
    out_of_order: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    stamp_source: str = "header"
    camera_frame_id: str = ""

    def to_trajectory(self) -> Trajectory:
        """A :class:`Trajectory` (timestamps in seconds relative to the first frame)."""
        t = (self.stamps_ns - self.stamps_ns[0]).astype(np.float64) / _NS
        return Trajectory(torch.from_numpy(self.T_world_cam), torch.from_numpy(t),
                          torch.from_numpy(self.K), self.image_hw)


def _stamp_ns(msg: Any) -> int:
    return stamp_to_ns(msg.header.stamp)


def _sorted_by_stamp(items: list[tuple[int, Any]]) -> tuple[list[tuple[int, Any]], int]:
    """Stable sort by stamp; also the number of items earlier than an item before them."""
    late, latest = 0, -math.inf
    for s, _ in items:
        late += s < latest
        latest = max(latest, s)
    return sorted(items, key=lambda x: x[0]), late


def _nearest(stamps: np.ndarray, query: int, max_dt_ns: float) -> int | None:
    """Index into sorted ``stamps`` ``[M]`` of the stamp nearest ``query`` (ties: earlier),
    or ``None`` if none is within ``max_dt_ns``."""
    i = int(np.searchsorted(stamps, query))
    cands = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
    if not cands:
        return None
    j = min(cands, key=lambda k: (abs(int(stamps[k]) - query), k))
    return j if abs(int(stamps[j]) - query) <= max_dt_ns else None


def _stamp_problem(stamps: list[int]) -> str | None:
    """Why header stamps ``[M]`` ns cannot pair messages (zero or repeated), or ``None``."""
    zero = sum(s == 0 for s in stamps)
    if zero:
        return f"{zero} of {len(stamps)} header stamps are zero"
    repeated = len(stamps) - len(set(stamps))
    if repeated:
        return f"{repeated} of {len(stamps)} header stamps repeat an earlier one"
    return None


#: message types read_camera_stream accepts per role
_ROLE_TYPES = {
    "image": (IMAGE, COMPRESSED),
    "depth": (IMAGE,),
    "pose": (POSE_STAMPED, TF_MESSAGE),
    "info": (CAMERA_INFO,),
    "tf_static": (TF_MESSAGE,),
}


def read_camera_stream(path: str | Path, image_topic: str, pose_topic: str,
                       camera_info_topic: str, depth_topic: str | None = None,
                       max_dt_s: float = 0.02, *, rectified: bool | None = None,
                       world_frame: str | None = None,
                       tf_static_topic: str = "/tf_static") -> CameraStream:
    """Extract a posed camera stream from a bag.

    Images: ``sensor_msgs/Image`` (rgb8 or bgr8) or ``sensor_msgs/CompressedImage`` (jpeg or
    png colour, e.g. ``.../image_raw/compressed``; see
    :func:`~mirage_ros.image_conversion.compressed_image_to_rgb`).

    Intrinsics: :func:`~mirage_ros.messages.camera_info_to_K` with ``rectified`` (default: told
    from the image topic's name by :func:`~mirage_ros.messages.image_topic_rectified`), so P
    for rectified images and a refusal, saying how to rectify, for raw images with distortion.

    Poses, by the type of ``pose_topic``:

    - ``geometry_msgs/PoseStamped`` (``T_world_cam``, OpenCV camera frame, quaternion xyzw):
      each image is paired with the pose whose stamp is nearest its own, if within
      ``max_dt_s`` (ties go to the earlier pose);
    - ``tf2_msgs/TFMessage`` (``/tf``; ``tf_static_topic`` is read too when the bag has it):
      the pose of the images' ``header.frame_id`` (their optical frame) in ``world_frame``
      (default: the root of that frame's tf tree), composed through static and time-varying
      edges and interpolated at the image's stamp (:class:`~mirage_ros.tf_poses.TfBuffer`:
      slerp/lerp, no extrapolation beyond ``max_dt_s``).

    Depth images (32FC1 metres or 16UC1 millimetres) are paired like poses.

    Stamps: messages are paired by ``header.stamp``. When the image, pose or depth stamps
    cannot pair (any zero stamp, or a stamp repeated on one topic; time-varying tf stamps that
    are zero), every message is paired by the bag's log (receive) time instead, ``stamps_ns``
    are those log times, ``stamp_source`` is ``"log"`` and a warning says so.

    Images without a pose (or, with ``depth_topic``, without depth) are dropped; pose messages
    with a non-unit quaternion are dropped; messages whose header stamps go backwards are
    sorted. All of these are counted in the result and reported with a
    :class:`BagStreamWarning` (as are the assumptions above).

    Raises:
        FileNotFoundError / BagError: as :func:`read_messages`.
        BagError: no frames left; no CameraInfo; intrinsics changing over the bag or refused
            by :func:`~mirage_ros.messages.camera_info_to_K`; sizes disagreeing; an image that
            is not colour (mono8, compressedDepth, an unknown codec); a topic of another type;
            mixed pose frame ids or image frame ids; tf frames not connected or not a tree;
            repeated log times where the header stamps were unusable.
    """
    if not (math.isfinite(max_dt_s) and max_dt_s >= 0):
        raise BagError(f"max_dt_s must be finite and >= 0, got {max_dt_s!r}")
    names = {"image": _topic(image_topic), "pose": _topic(pose_topic),
             "info": _topic(camera_info_topic)}
    if depth_topic is not None:
        names["depth"] = _topic(depth_topic)
    in_bag = list_topics(path)
    for key, topic in names.items():
        got = in_bag.get(topic, (None,))[0]
        if got is not None and got not in _ROLE_TYPES[key]:
            hint = (": compressed depth is not read; record depth as a raw sensor_msgs/Image"
                    if key == "depth" and got == COMPRESSED else "")
            raise BagError(f"{topic} carries {got}; expected "
                           f"{' or '.join(_ROLE_TYPES[key])}{hint}")
    use_tf = in_bag.get(names["pose"], (None,))[0] == TF_MESSAGE
    if use_tf and in_bag.get(_topic(tf_static_topic), (None,))[0] == TF_MESSAGE:
        names["tf_static"] = _topic(tf_static_topic)

    # (header stamp, log time, message) per role
    by_key: dict[str, list[tuple[int, int, Any]]] = {k: [] for k in names}
    keys_of: dict[str, list[str]] = defaultdict(list)  # a topic may serve two roles
    for key, topic in names.items():
        keys_of[topic].append(key)
    for m in read_messages(path, set(names.values())):
        header = 0 if m.msgtype == TF_MESSAGE else _stamp_ns(m.msg)
        for key in keys_of[m.topic]:
            by_key[key].append((header, m.stamp_ns, m.msg))

    notes: list[str] = []
    if rectified is None:
        rectified = image_topic_rectified(names["image"])
    K, hw = _camera_info(by_key["info"], names["info"], path, rectified, notes)

    # which clock pairs the messages
    paired = [k for k in ("image", "pose", "depth") if k in names and not (k == "pose" and use_tf)]
    problems = [f"{names[k]}: {p}" for k in paired
                if (p := _stamp_problem([h for h, _, _ in by_key[k]]))]
    tf = None
    if use_tf:
        tf = TfBuffer(tolerance_ns=round(max_dt_s * _NS))
        try:
            for key in ("pose", "tf_static"):
                for _, _log, msg in by_key.get(key, []):
                    tf.add_message(msg, static=key == "tf_static")
        except TfError as e:
            raise BagError(f"{path}: {e}") from e
        if tf.zero_stamps:
            problems.append(f"{names['pose']}: {tf.zero_stamps} time-varying transform(s) "
                            "have stamp zero")
    stamp_source = "log" if problems else "header"
    if problems:
        for k in paired:
            logs = [t for _, t, _ in by_key[k]]
            if len(set(logs)) != len(logs):
                raise BagError(
                    f"{path}: header stamps cannot pair the messages ({'; '.join(problems)}), "
                    f"and the log times on {names[k]} repeat too: cannot tell the messages "
                    "apart; re-record with stamped headers")
        notes.append(f"header stamps cannot pair the messages ({'; '.join(problems)}); paired "
                     "by the bag's log (receive) time instead, which includes transport delay")
        if use_tf:
            tf = TfBuffer(tolerance_ns=round(max_dt_s * _NS))
            for key in ("pose", "tf_static"):
                for _, log, msg in by_key.get(key, []):
                    tf.add_message(msg, static=key == "tf_static",
                                   stamp_ns=log if key == "pose" else None)
    pick = 1 if problems else 0
    out_of_order, lists = {}, {}
    for key in names:
        lists[key], late = _sorted_by_stamp([(item[pick], item[2]) for item in by_key[key]])
        if late and key not in ("info", "tf_static") and not (key == "pose" and use_tf):
            out_of_order[names[key]] = late

    image_stamps = np.asarray([s for s, _ in lists["image"]], dtype=np.int64)
    if use_tf:
        Ts_all, has_pose, pose_frame_id, bad_poses, cam_frame = _poses_from_tf(
            tf, lists["image"], image_stamps, world_frame, names, path, notes)
    else:
        Ts_all, has_pose, pose_frame_id, bad_poses = _poses_from_topic(
            lists["pose"], image_stamps, max_dt_s, names["pose"])
        cam_frame = ""
    depth_stamps = np.asarray([s for s, _ in lists.get("depth", [])], dtype=np.int64)
    max_dt_ns = max_dt_s * _NS
    decode = compressed_image_to_rgb if in_bag[names["image"]][0] == COMPRESSED else image_to_rgb

    frames, depths, Ts, stamps = [], [], [], []
    no_pose = no_depth = 0
    for i, (s, msg) in enumerate(lists["image"]):
        if not has_pose[i]:
            no_pose += 1
            continue
        if depth_topic is not None:
            d = _nearest(depth_stamps, s, max_dt_ns)
            if d is None:
                no_depth += 1
                continue
            depths.append(_decode(depth_to_metres, lists["depth"][d][1], names["depth"], hw))
        frames.append(_decode(decode, msg, names["image"], hw))
        Ts.append(Ts_all[i])
        stamps.append(s)

    if no_pose and not use_tf:
        notes.append(f"{no_pose} image(s) dropped: no valid pose within {max_dt_s} s")
    if no_depth:
        notes.append(f"{no_depth} image(s) dropped: no depth image within {max_dt_s} s")
    if bad_poses:
        notes.append(f"{bad_poses} pose message(s) dropped: invalid quaternion or values")
    for topic, n in out_of_order.items():
        notes.append(f"{n} message(s) on {topic} had out-of-order header stamps; sorted")
    for note in notes:
        warnings.warn(f"{path}: {note}", BagStreamWarning, stacklevel=2)
    if not frames:
        raise BagError(f"no posed frames in bag {path} ({len(lists['image'])} images on "
                       f"{names['image']}; {'; '.join(notes) or 'no images'})")
    return CameraStream(
        frames=np.stack(frames), depth=np.stack(depths) if depth_topic is not None else None,
        T_world_cam=np.stack(Ts).astype(np.float64), K=K, image_hw=hw,
        stamps_ns=np.asarray(stamps, dtype=np.int64), pose_frame_id=pose_frame_id,
        num_images=len(lists["image"]), dropped_no_pose=no_pose, dropped_no_depth=no_depth,
        bad_poses=bad_poses, out_of_order=out_of_order, warnings=notes,
        stamp_source=stamp_source, camera_frame_id=cam_frame,
    )


def _poses_from_topic(poses_in: list[tuple[int, Any]], image_stamps: np.ndarray,
                      max_dt_s: float, topic: str,
                      ) -> tuple[np.ndarray, np.ndarray, str, int]:
    """PoseStamped messages (sorted by stamp) paired with images ``[N]`` by nearest stamp:
    (``T [N, 4, 4]``, ``has_pose [N]``, the poses' frame id, poses dropped as invalid)."""
    poses, pose_stamps, frame_ids, bad = [], [], set(), 0
    for s, msg in poses_in:
        try:
            poses.append(pose_to_T(msg.pose).numpy())
        except PoseError:
            bad += 1
            continue
        pose_stamps.append(s)
        frame_ids.add(str(msg.header.frame_id))
    if len(frame_ids) > 1:
        raise BagError(f"poses on {topic} have mixed frame ids {sorted(frame_ids)}")
    stamps = np.asarray(pose_stamps, dtype=np.int64)
    T = np.tile(np.eye(4), (len(image_stamps), 1, 1))
    ok = np.zeros(len(image_stamps), dtype=bool)
    for i, s in enumerate(image_stamps):
        j = _nearest(stamps, int(s), max_dt_s * _NS)
        if j is not None:
            T[i], ok[i] = poses[j], True
    return T, ok, frame_ids.pop() if frame_ids else "", bad


def _poses_from_tf(tf: TfBuffer, images: list[tuple[int, Any]], image_stamps: np.ndarray,
                   world_frame: str | None, names: dict[str, str], path, notes: list[str],
                   ) -> tuple[np.ndarray, np.ndarray, str, int, str]:
    """``T_world_cam`` of each image from tf: (``T [N, 4, 4]``, ``has_pose [N]``, the world
    frame, transforms dropped as invalid, the camera frame)."""
    cams = {str(msg.header.frame_id).lstrip("/") for _, msg in images}
    if len(cams) != 1 or not next(iter(cams)):
        raise BagError(f"images on {names['image']} have frame ids {sorted(cams)}; tf poses "
                       "need one non-empty header.frame_id (the camera's optical frame)")
    cam = cams.pop()
    try:
        world = world_frame.lstrip("/") if world_frame else tf.root(cam)
        T, ok, reasons = tf.lookup(world, cam, image_stamps)
    except TfError as e:
        raise BagError(f"{path}: poses from {names['pose']}"
                       f"{' + ' + names['tf_static'] if 'tf_static' in names else ''}: {e}"
                       ) from e
    if "optical" not in cam:
        notes.append(f"image frame {cam!r} is not named as an optical frame (REP 103: "
                     "'<camera>_optical_frame', z forward, x right, y down); its tf pose is "
                     "taken as the OpenCV camera pose")
    if not ok.all():
        notes.append(f"{int((~ok).sum())} image(s) dropped: no tf from {world!r} to {cam!r} at "
                     f"their stamps (first: {reasons[0]})")
    if tf.repeated:
        notes.append(f"{tf.repeated} tf sample(s) dropped: their edge already had one at that "
                     "stamp (the first is kept, as tf2 does)")
    return T, ok, world, tf.bad, cam


def _camera_info(infos, topic: str, path, rectified: bool | None,
                 notes: list[str]) -> tuple[np.ndarray, tuple[int, int]]:
    """Intrinsics ``[3, 3]`` and ``(H, W)`` of the CameraInfo messages ``[(stamp, log,
    msg)]`` (:func:`camera_info_to_K`); its warnings are added to ``notes``."""
    if not infos:
        raise BagError(f"no CameraInfo messages on {topic} in bag {path}")
    seen: dict[tuple, tuple[np.ndarray, tuple[int, int]]] = {}
    for _, _, msg in infos:
        raw = (int(msg.height), int(msg.width), str(msg.distortion_model),
               *(tuple(np.asarray(getattr(msg, f), np.float64).reshape(-1).tolist())
                 for f in ("d", "k", "r", "p")),
               int(msg.binning_x), int(msg.binning_y),
               tuple(int(getattr(msg.roi, f)) for f in ("x_offset", "y_offset", "width",
                                                       "height")))
        if raw in seen:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CameraInfoWarning)
            try:
                K, hw = camera_info_to_K(msg, rectified=rectified)
            except MirageInputError as e:
                raise BagError(f"{topic}: {e}") from e
        for w in caught:
            if not issubclass(w.category, CameraInfoWarning):  # not ours to collect
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            elif (note := f"{topic}: {w.message}") not in notes:
                notes.append(note)
        seen[raw] = (K.numpy(), hw)
    distinct = {(tuple(K.reshape(-1).tolist()), hw) for K, hw in seen.values()}
    if len(distinct) > 1:
        raise BagError(f"CameraInfo on {topic} changes over the bag ({len(distinct)} distinct "
                       "intrinsics / sizes); a CameraStream needs constant intrinsics")
    return next(iter(seen.values()))


def _decode(fn, msg, topic: str, hw: tuple[int, int]) -> np.ndarray:
    try:
        arr = fn(msg)
    except MirageInputError as e:
        raise BagError(f"{topic}: {e}") from e
    if arr.shape[:2] != hw:
        raise BagError(f"{topic}: image is {arr.shape[0]}x{arr.shape[1]}, CameraInfo says "
                       f"{hw[0]}x{hw[1]}")
    return arr


# ------------------------------------------------------------------------------ simulated camera
@dataclass
class SimBagTopics:
    """Topics and frame ids written by :func:`write_sim_bag` (``depth=None``: no depth)."""

    image: str = "/camera/image"  # sensor_msgs/Image rgb8
    depth: str | None = "/camera/depth"  # sensor_msgs/Image 32FC1 metres, +inf = nothing hit
    camera_info: str = "/camera/camera_info"  # sensor_msgs/CameraInfo, one per frame
    pose: str = "/camera/pose"  # geometry_msgs/PoseStamped T_world_cam
    world_frame_id: str = "world"  # header.frame_id of the poses
    camera_frame_id: str = "camera_optical"  # header.frame_id of images and CameraInfo


def write_sim_bag(path: str | Path, trajectory: Trajectory, scene=None, *,
                  topics: SimBagTopics | None = None, K=None,
                  image_hw: tuple[int, int] | None = None, T_sim_world=None,
                  start_ns: int = DEFAULT_START_NS, typestore=None,
                  storage: str = "mcap") -> dict[str, int]:
    """Record a simulated camera moving along ``trajectory`` into a new bag.

    Frame ``i`` is rendered by ``scene`` at the sim pose ``T_sim_world @ T_world_cam[i]`` and
    scene time ``trajectory.timestamps[i]``; all its messages get header stamp and log time
    ``start_ns + round(timestamps[i] * 1e9)``. The pose message is the trajectory's own
    ``T_world_cam[i]`` (frame ``topics.world_frame_id``), so :func:`read_camera_stream` gives
    the trajectory back.

    Args:
        path: new bag directory (must not exist).
        trajectory: camera poses ``[N, 4, 4]`` and timestamps (seconds).
        scene: anything with ``render(T_world_cam, K, H, W, time) -> SimFrame``; default a
            ``PyBulletScene("room")`` (created and closed here).
        topics: :class:`SimBagTopics`.
        K: ``[3, 3]`` intrinsics; default the trajectory's (per-frame K is honoured).
        image_hw: ``(H, W)``; default ``trajectory.image_hw``.
        T_sim_world: ``[4, 4]`` trajectory world -> sim world; default
            ``scene.default_start_pose()`` (as :mod:`mirage_core.perception.sim`).
        start_ns, typestore, storage: see above and :class:`BagRecorder`.
    Returns:
        messages written per topic.
    """
    topics = topics or SimBagTopics()
    hw = image_hw if image_hw is not None else trajectory.image_hw
    if hw is None:
        raise MirageInputError("write_sim_bag needs image_hw (the trajectory has none)")
    H, W = (int(v) for v in hw)
    if K is None and trajectory.K is None:
        raise MirageInputError("write_sim_bag needs K (the trajectory has no intrinsics)")
    own_scene = scene is None
    if own_scene:
        from mirage_core.sim import PyBulletScene

        scene = PyBulletScene("room")
    try:
        if T_sim_world is None:
            start = getattr(scene, "default_start_pose", None)
            T_sim_world = start() if callable(start) else np.eye(4)
        T_sim_world = np.asarray(T_sim_world, dtype=np.float64)
        with BagRecorder(path, typestore=typestore, storage=storage) as rec:
            m = RosbagsMessages(rec.typestore)
            for i in range(len(trajectory)):
                Ki = np.asarray(K if K is not None else trajectory.intrinsics(i), np.float64)
                T = trajectory.T_world_cam[i]
                t_s = float(trajectory.timestamps[i])
                frame = scene.render(T_sim_world @ T.numpy(), Ki, H, W, time=t_s)
                stamp = int(start_ns) + round(t_s * _NS)
                _write_frame(rec, m, topics, frame, T, Ki, (H, W), stamp)
            return dict(rec.counts)
    finally:
        if own_scene:
            scene.close()


def _write_frame(rec: BagRecorder, m: RosbagsMessages, topics: SimBagTopics, frame,
                 T: torch.Tensor, K: np.ndarray, hw: tuple[int, int], stamp: int) -> None:
    def header(frame_id: str):
        return m.new("std_msgs/msg/Header", stamp=stamp_from_ns(m, stamp), frame_id=frame_id)

    cam = topics.camera_frame_id
    rec.write(topics.image, m.image(frame.rgb, "rgb8", header(cam)), stamp)
    if topics.depth is not None:
        depth = np.asarray(frame.depth, dtype=np.float32)
        rec.write(topics.depth, m.image(depth, "32FC1", header(cam)), stamp)
    rec.write(topics.camera_info, camera_info_msg(m, torch.from_numpy(K), hw, header(cam)),
              stamp)
    pose = m.new("geometry_msgs/msg/PoseStamped", header=header(topics.world_frame_id),
                 pose=pose_from_T(m, T))
    rec.write(topics.pose, pose, stamp)


# ------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m mirage_ros.bag sim OUT ...`` (a replay input bag) or ``info BAG``."""
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.trajectory import TRAJECTORY_NAMES, make_trajectory

    ap = argparse.ArgumentParser(prog="python -m mirage_ros.bag", description=__doc__.split(
        "\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sim", help="record the PyBullet room camera along a trajectory")
    s.add_argument("out", help="new bag directory")
    s.add_argument("--trajectory", default="push_in", choices=TRAJECTORY_NAMES)
    s.add_argument("--frames", type=int, default=25, help="number of frames")
    s.add_argument("--fps", type=float, default=10.0, help="frame rate (stamps)")
    s.add_argument("--height", type=int, default=240)
    s.add_argument("--width", type=int, default=320)
    s.add_argument("--fov-y", type=float, default=60.0, help="vertical field of view, degrees")
    s.add_argument("--no-depth", action="store_true", help="do not write the depth topic")
    i = sub.add_parser("info", help="topics, types and message counts of a bag")
    i.add_argument("bag")
    args = ap.parse_args(argv)
    if args.cmd == "info":
        for topic, (msgtype, n) in sorted(list_topics(args.bag).items()):
            print(f"{topic}  {msgtype}  {n}")
        return 0
    K = intrinsics_from_fov(args.width, args.height, args.fov_y)
    rel = make_trajectory(args.trajectory, args.frames, fps=args.fps)
    from mirage_core.sim import PyBulletScene

    topics = SimBagTopics(depth=None) if args.no_depth else SimBagTopics()
    # Poses in the simulator's world frame (the room's start pose first), as sim_camera_node
    # publishes them: a replay with the generator's depth:=sim then sees the same scene.
    with PyBulletScene("room") as scene:
        T0 = torch.from_numpy(scene.default_start_pose())
        traj = Trajectory(T0 @ rel.T_world_cam, rel.timestamps, K, (args.height, args.width))
        counts = write_sim_bag(args.out, traj, scene, topics=topics, T_sim_world=np.eye(4))
    for topic, n in counts.items():
        print(f"{topic}: {n} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
