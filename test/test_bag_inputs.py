"""Bags as users record them, written here with ``rosbags`` alone (its Writer and the ROS 2
Humble type store), never with the project's own recorder:

- ``sensor_msgs/CompressedImage`` images (jpeg, png), with the ``format`` strings that
  ROS 2's compressed_image_transport writes (``"<encoding>; <codec> compressed <target>"``,
  ros-perception/image_transport_plugins) and the older bare ``"jpeg"`` / ``"png"``;
- poses only on ``/tf`` + ``/tf_static`` (``tf2_msgs/TFMessage``), checked against poses
  computed here in closed form (constant-rate yaw and linear translation, which tf2's
  slerp + lerp interpolation reproduces exactly between samples);
- zero or repeated header stamps (pairing falls back to the bag's log time);
- CameraInfo of rectified (image_rect) and raw (image_raw) streams.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags")
pytest.importorskip("cv2")
pytest.importorskip("pytransform3d")

import cv2
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from mirage_core.errors import MirageInputError
from mirage_ros.bag import BagError, BagStreamWarning, read_camera_stream
from mirage_ros.image_conversion import compressed_image_to_rgb

NS = 10**9
T0 = 1_650_000_000 * NS
TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
HW = (16, 48)
K = np.array([[40.0, 0, 24.0], [0, 40.0, 8.0], [0, 0, 1]])


# ------------------------------------------------------------------------------ writing
class Bag:
    """A rosbag2 written with rosbags' Writer; ``write(topic, msg, log_ns)``."""

    def __init__(self, path, storage=StoragePlugin.MCAP):
        self.w = Writer(path, version=9, storage_plugin=storage)
        self.conns = {}

    def __enter__(self):
        self.w.open()
        return self

    def __exit__(self, *exc):
        self.w.close()

    def write(self, topic, msg, log_ns):
        if topic not in self.conns:
            self.conns[topic] = self.w.add_connection(topic, msg.__msgtype__, typestore=TS)
        self.w.write(self.conns[topic], int(log_ns), TS.serialize_cdr(msg, msg.__msgtype__))


def header(ns, frame):
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=ns // NS, nanosec=ns % NS), frame_id=frame)


def camera_info(ns, frame="cam_optical", D=(0.0,) * 5, P=None, Kr=K, hw=HW):
    Pm = np.zeros((3, 4))
    Pm[:, :3] = Kr if P is None else P
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(ns, frame), height=hw[0], width=hw[1], distortion_model="plumb_bob",
        d=np.asarray(D, np.float64), k=np.asarray(Kr, np.float64).reshape(-1),
        r=np.eye(3).reshape(-1), p=Pm.reshape(-1), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))


def raw_image(ns, frame, rgb):
    h, w, _ = rgb.shape
    return T["sensor_msgs/msg/Image"](header=header(ns, frame), height=h, width=w,
                                      encoding="rgb8", is_bigendian=0, step=w * 3,
                                      data=np.ascontiguousarray(rgb).reshape(-1))


def compressed(ns, frame, fmt, data):
    return T["sensor_msgs/msg/CompressedImage"](header=header(ns, frame), format=fmt,
                                                data=np.frombuffer(bytes(data), np.uint8))


def Tmat(R=None, t=(0.0, 0.0, 0.0)):
    M = np.eye(4)
    if R is not None:
        M[:3, :3] = R
    M[:3, 3] = t
    return M


def transform(ns, parent, child, M):
    x, y, z, w = Rotation.from_matrix(M[:3, :3]).as_quat()  # scipy: scalar last, as ROS
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(ns, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
            rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))


def tf_message(*transforms):
    return T["tf2_msgs/msg/TFMessage"](transforms=list(transforms))


def pose_stamped(ns, frame, M):
    x, y, z, w = Rotation.from_matrix(M[:3, :3]).as_quat()
    return T["geometry_msgs/msg/PoseStamped"](
        header=header(ns, frame),
        pose=T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
            orientation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))


def bands(i):
    """``[16, 48, 3]`` RGB: red, green, blue bands of 16 px, rolled by frame index so frame
    order shows; a swapped channel order turns red into blue."""
    rgb = np.zeros((*HW, 3), np.uint8)
    for b in range(3):
        rgb[:, 16 * b:16 * (b + 1), (b + i) % 3] = 255
    rgb[..., :] = np.maximum(rgb, 20 * i)  # a grey floor per frame
    return rgb


def pose_of(i):
    return Tmat(Rotation.from_euler("y", 0.1 * i).as_matrix(), (0.1 * i, 0.0, -0.05 * i))


# ------------------------------------------------------------------------------ CompressedImage
def _encode(rgb, ext, order):
    ok, buf = cv2.imencode(ext, rgb[..., ::-1] if order == "bgr" else rgb)
    assert ok
    return buf.tobytes()


FORMATS = [  # (format string, codec file extension, channel order handed to cv2.imencode)
    ("rgb8; jpeg compressed bgr8", ".jpg", "bgr"),  # compressed_image_transport, rgb8 camera
    ("bgr8; jpeg compressed bgr8", ".jpg", "bgr"),  # ... bgr8 camera
    ("bgr8; png compressed bgr8", ".png", "bgr"),
    ("rgba8; png compressed bgr8", ".png", "bgr"),
    ("rgb8; png compressed rgb8", ".png", "rgb"),  # no "compressed bgr": pixels stay RGB
    ("jpeg", ".jpg", "bgr"),  # older publishers: the codec only, BGR pixels
    ("png", ".png", "bgr"),
]


@pytest.mark.parametrize(("fmt", "ext", "order"), FORMATS)
def test_compressed_images_decode_to_rgb_in_a_camera_stream(tmp_path, fmt, ext, order):
    path = tmp_path / "bag"
    with Bag(path) as bag:
        bag.write("/cam/camera_info", camera_info(T0), T0)
        for i in range(3):
            s = T0 + i * NS // 10
            bag.write("/cam/image_raw/compressed",
                      compressed(s, "cam_optical", fmt, _encode(bands(i), ext, order)), s + 1)
            bag.write("/cam/pose", pose_stamped(s, "world", pose_of(i)), s + 2)
    cs = read_camera_stream(path, "/cam/image_raw/compressed", "/cam/pose", "/cam/camera_info")
    assert cs.frames.shape == (3, *HW, 3) and cs.frames.dtype == np.uint8
    for i in range(3):
        if ext == ".png":  # lossless: exact
            np.testing.assert_array_equal(cs.frames[i], bands(i))
        else:  # jpeg: band centres (away from chroma-subsampled edges) within a few levels
            for k in range(3):
                centre = np.s_[:, 16 * k + 4:16 * k + 12]
                assert np.abs(cs.frames[i][centre].astype(int) - bands(i)[centre]).max() <= 4
    np.testing.assert_allclose(cs.T_world_cam, np.stack([pose_of(i) for i in range(3)]),
                               atol=1e-12)
    np.testing.assert_array_equal(cs.K, K)


@pytest.mark.parametrize(("fmt", "data", "match"), [
    ("16UC1; compressedDepth", b"\x00" * 12 + b"\x89PNG", "compressedDepth"),
    ("32FC1; compressedDepth png", b"\x00" * 16, "compressedDepth"),
    ("h264", b"\x00\x00\x00\x01", "codec 'h264' is not supported"),
    ("rgb8; tiff compressed bgr8", b"II*\x00", "codec 'tiff' is not supported"),
    ("mono8; jpeg compressed ", None, "'mono8' is not an 8-bit colour image"),
    ("16UC1; png compressed ", None, "'16UC1' is not an 8-bit colour image"),
    ("png", b"not a png at all", "do not decode as png"),
    ("jpeg", b"", "has no data"),
    ("png", "mono", "decodes to 1-channel uint8"),
])
def test_compressed_images_refused_with_reasons(tmp_path, fmt, data, match):
    if data is None:
        data = _encode(bands(0), ".jpg", "bgr")
    elif data == "mono":
        _, buf = cv2.imencode(".png", np.zeros(HW, np.uint8))
        data = buf.tobytes()
    with pytest.raises(MirageInputError, match=match):
        compressed_image_to_rgb(compressed(T0, "cam", fmt, data))
    path = tmp_path / "bag"
    with Bag(path) as bag:
        bag.write("/info", camera_info(T0), T0)
        bag.write("/img", compressed(T0, "cam", fmt, data), T0)
        bag.write("/pose", pose_stamped(T0, "world", np.eye(4)), T0)
    with pytest.raises(BagError, match=match):
        read_camera_stream(path, "/img", "/pose", "/info")


def test_compressed_depth_topic_is_refused(tmp_path):
    path = tmp_path / "bag"
    with Bag(path) as bag:
        bag.write("/info", camera_info(T0), T0)
        bag.write("/img", raw_image(T0, "cam", bands(0)), T0)
        bag.write("/depth", compressed(T0, "cam", "16UC1; compressedDepth", b"\x00" * 20), T0)
        bag.write("/pose", pose_stamped(T0, "world", np.eye(4)), T0)
    with pytest.raises(BagError, match=r"/depth carries sensor_msgs/msg/CompressedImage; "
                                       r"expected sensor_msgs/msg/Image: compressed depth"):
        read_camera_stream(path, "/img", "/pose", "/info", depth_topic="/depth")


# ------------------------------------------------------------------------------ tf
OPTICAL = "camera_color_optical_frame"
# REP 103 optical frame in its camera link: z forward (link x), x right (-link y), y down
R_LINK_OPTICAL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
T_BASE_LINK = Tmat(Rotation.from_euler("y", 0.1).as_matrix(), (0.2, 0.0, 0.3))
T_LINK_OPTICAL = Tmat(R_LINK_OPTICAL)


def T_map_odom(t):
    """Slow drift: identity rotation, linear translation (t in seconds)."""
    return Tmat(None, (0.01 * t, -0.02 * t, 0.0))


def T_odom_base(t):
    """Constant-rate yaw and linear translation: slerp + lerp between samples is exact."""
    return Tmat(Rotation.from_euler("z", 0.8 * t).as_matrix(), (0.5 * t, -0.2 * t, 0.1))


def T_world_cam_truth(t):
    return T_map_odom(t) @ T_odom_base(t) @ T_BASE_LINK @ T_LINK_OPTICAL


def _tf_bag(path, image_times, static=True, extra_static=(), zero_stamps=False,
            image_topic="/camera/color/image_raw"):
    """Poses on /tf only: map -> odom at 5 Hz, odom -> base_link at 10 Hz, both over
    [0, 1] s; base_link -> camera_link -> optical on /tf_static."""
    def st(t):  # header stamp
        return 0 if zero_stamps else T0 + round(t * NS)

    with Bag(path) as bag:
        bag.write("/camera/color/camera_info", camera_info(T0, OPTICAL), T0)
        if static:
            bag.write("/tf_static", tf_message(
                transform(T0, "base_link", "camera_link", T_BASE_LINK),
                transform(T0, "/camera_link", OPTICAL, T_LINK_OPTICAL),  # leading / ignored
                *extra_static), T0)
        events = [(k / 10, "base") for k in range(11)] + [(k / 5 + 0.001, "odom")
                                                          for k in range(5)] + [(1.0, "odom")]
        for t, which in sorted(events):
            tr = (transform(st(t), "odom", "base_link", T_odom_base(t)) if which == "base"
                  else transform(st(t), "map", "odom", T_map_odom(t)))
            bag.write("/tf", tf_message(tr), T0 + round(t * NS) + 1)
        for t in image_times:
            bag.write(image_topic, raw_image(st(t), OPTICAL, bands(0)), T0 + round(t * NS) + 1)


def test_tf_poses_compose_static_edges_and_interpolate(tmp_path):
    """T_world_cam from /tf + /tf_static equals the closed-form pose at each image stamp;
    within max_dt_s past the last sample the end sample is held; later images are dropped."""
    times = [0.05, 0.23, 0.5, 0.77, 0.95, 1.01, 1.3]
    _tf_bag(tmp_path / "bag", times)
    with pytest.warns(BagStreamWarning, match=r"1 image\(s\) dropped: no tf from 'map' to "
                                              r"'camera_color_optical_frame'"):
        cs = read_camera_stream(tmp_path / "bag", "/camera/color/image_raw", "/tf",
                                "/camera/color/camera_info", max_dt_s=0.02)
    assert (cs.pose_frame_id, cs.camera_frame_id, cs.stamp_source) == ("map", OPTICAL,
                                                                       "header")
    assert cs.num_images == 7 and cs.dropped_no_pose == 1 and len(cs.frames) == 6
    want = [T_world_cam_truth(t) for t in times[:5]] + [T_world_cam_truth(1.0)]  # held
    np.testing.assert_allclose(cs.T_world_cam, np.stack(want), rtol=0, atol=1e-9)
    assert cs.stamps_ns.tolist() == [T0 + round(t * NS) for t in times[:6]]
    # an explicit world frame lower in the tree
    with pytest.warns(BagStreamWarning, match=r"2 image\(s\) dropped: no tf"):
        cs = read_camera_stream(tmp_path / "bag", "/camera/color/image_raw", "/tf",
                                "/camera/color/camera_info", world_frame="odom", max_dt_s=0.0)
    want = [np.linalg.inv(T_map_odom(t)) @ T_world_cam_truth(t) for t in times[:5]]
    np.testing.assert_allclose(cs.T_world_cam, np.stack(want), rtol=0, atol=1e-9)
    assert cs.pose_frame_id == "odom" and cs.dropped_no_pose == 2


def test_tf_refusals(tmp_path):
    args = ("/camera/color/image_raw", "/tf", "/camera/color/camera_info")
    _tf_bag(tmp_path / "a", [0.5], extra_static=[transform(T0, "earth", "moon", np.eye(4))])
    with pytest.raises(BagError, match=r"frame 'sky' is not in the tf data; frames: "
                                       r"base_link, camera_color_optical_frame"):
        read_camera_stream(tmp_path / "a", *args, world_frame="sky")
    with pytest.raises(BagError, match=r"'earth' and 'camera_color_optical_frame' are not "
                                       r"connected"):
        read_camera_stream(tmp_path / "a", *args, world_frame="earth")
    _tf_bag(tmp_path / "b", [0.5], static=False)  # the bag lacks /tf_static
    with pytest.raises(BagError, match=r"frame 'camera_color_optical_frame' is not in the tf"):
        read_camera_stream(tmp_path / "b", *args)
    _tf_bag(tmp_path / "c", [1.5, 2.0])  # after the tf data: no extrapolation
    with pytest.warns(BagStreamWarning), pytest.raises(
            BagError, match=r"no posed frames.*no tf from 'map'.*no extrapolation"):
        read_camera_stream(tmp_path / "c", *args)
    _tf_bag(tmp_path / "d", [0.5], extra_static=[transform(T0, "map", "base_link", np.eye(4))])
    with pytest.raises(BagError, match="'base_link' has two parents"):
        read_camera_stream(tmp_path / "d", *args)


def test_tf_with_zero_stamps_interpolates_at_log_times(tmp_path):
    _tf_bag(tmp_path / "bag", [0.25, 0.6], zero_stamps=True)
    with pytest.warns(BagStreamWarning, match="log"):
        cs = read_camera_stream(tmp_path / "bag", "/camera/color/image_raw", "/tf",
                                "/camera/color/camera_info")
    assert cs.stamp_source == "log"
    # every message was logged 1 ns after its time: the poses are those of the image times
    np.testing.assert_allclose(cs.T_world_cam, np.stack([T_world_cam_truth(0.25),
                                                         T_world_cam_truth(0.6)]), atol=1e-8)


# ------------------------------------------------------------------------------ stamps
def _stamp_bag(path, image_stamps, pose_stamps, image_logs=None):
    """Images of frames 0..N-1 and their poses, with the given header stamps; log times
    100 ms apart (images +1 ms, poses +3 ms) unless ``image_logs`` says otherwise."""
    n = len(image_stamps)
    logs = image_logs or [T0 + i * NS // 10 + 1_000_000 for i in range(n)]
    with Bag(path) as bag:
        bag.write("/cam/camera_info", camera_info(T0), T0)
        for i in range(n):
            bag.write("/cam/image", raw_image(image_stamps[i], "cam", bands(i)), logs[i])
            bag.write("/cam/pose", pose_stamped(pose_stamps[i], "world", pose_of(i)),
                      T0 + i * NS // 10 + 3_000_000)


def test_zero_header_stamps_pair_by_log_time(tmp_path):
    """All header stamps zero: pairing by them put every frame on the first pose; pairing
    by log time gives each frame its own pose, and says so."""
    _stamp_bag(tmp_path / "bag", [0] * 4, [0] * 4)
    with pytest.warns(BagStreamWarning, match=r"4 of 4 header stamps are zero.*paired by "
                                              r"the bag's log \(receive\) time"):
        cs = read_camera_stream(tmp_path / "bag", "/cam/image", "/cam/pose",
                                "/cam/camera_info")
    assert cs.stamp_source == "log" and len(cs.frames) == 4
    np.testing.assert_allclose(cs.T_world_cam, np.stack([pose_of(i) for i in range(4)]),
                               atol=1e-12)
    assert [int(f[0, 0, 0]) for f in cs.frames] == [int(bands(i)[0, 0, 0]) for i in range(4)]
    assert (np.diff(cs.stamps_ns) > 0).all()
    traj = cs.to_trajectory()
    torch.testing.assert_close(traj.timestamps, torch.tensor([0.0, 0.1, 0.2, 0.3],
                                                             dtype=traj.timestamps.dtype))


def test_repeated_header_stamps_pair_by_log_time(tmp_path):
    s = [T0, T0, T0 + NS // 10 * 2, T0 + NS // 10 * 3]  # frames 0 and 1 share a stamp
    _stamp_bag(tmp_path / "bag", s, [T0 + i * NS // 10 for i in range(4)])
    with pytest.warns(BagStreamWarning, match=r"/cam/image: 1 of 4 header stamps repeat"):
        cs = read_camera_stream(tmp_path / "bag", "/cam/image", "/cam/pose",
                                "/cam/camera_info")
    assert cs.stamp_source == "log" and len(set(cs.stamps_ns.tolist())) == 4
    np.testing.assert_allclose(cs.T_world_cam, np.stack([pose_of(i) for i in range(4)]),
                               atol=1e-12)


def test_zero_stamps_with_repeated_log_times_are_refused(tmp_path):
    logs = [T0 + 1, T0 + 1, T0 + 2, T0 + 3]
    _stamp_bag(tmp_path / "bag", [0] * 4, [0] * 4, image_logs=logs)
    with pytest.raises(BagError, match=r"log times on /cam/image repeat too"):
        read_camera_stream(tmp_path / "bag", "/cam/image", "/cam/pose", "/cam/camera_info")


# ------------------------------------------------------------------------------ CameraInfo
def test_rectified_and_raw_streams_in_bags(tmp_path):
    """The image topic's name says which CameraInfo matrix applies (CameraInfo.msg: K for the
    raw image, P's left 3x3 for the rectified one)."""
    K_raw = np.array([[44.0, 0, 23.0], [0, 44.0, 8.5], [0, 0, 1]])
    D = (-0.3, 0.1, 0.0, 0.0, 0.0)
    path = tmp_path / "bag"
    with Bag(path, storage=StoragePlugin.SQLITE3) as bag:
        bag.write("/cam/camera_info", camera_info(T0, D=D, P=K, Kr=K_raw), T0)
        for topic in ("/cam/image_rect_color", "/cam/image_raw", "/cam/image"):
            bag.write(topic, raw_image(T0, "cam", bands(0)), T0)
        bag.write("/cam/pose", pose_stamped(T0, "world", np.eye(4)), T0)
    cs = read_camera_stream(path, "/cam/image_rect_color", "/cam/pose", "/cam/camera_info")
    np.testing.assert_array_equal(cs.K, K)  # P, not K
    assert cs.warnings == []
    with pytest.raises(BagError, match=r"raw, distorted images.*image_proc.*"
                                       r"initUndistortRectifyMap"):
        read_camera_stream(path, "/cam/image_raw", "/cam/pose", "/cam/camera_info")
    with pytest.warns(BagStreamWarning, match="assumption that the images are rectified"):
        cs = read_camera_stream(path, "/cam/image", "/cam/pose", "/cam/camera_info")
    np.testing.assert_array_equal(cs.K, K)
    cs = read_camera_stream(path, "/cam/image", "/cam/pose", "/cam/camera_info",
                            rectified=True)
    assert cs.warnings == []
    with pytest.raises(BagError, match="raw, distorted"):
        read_camera_stream(path, "/cam/image_rect_color", "/cam/pose", "/cam/camera_info",
                           rectified=False)


# ------------------------------------------------------------------------------ replay
def test_replay_report_refuses_keys_that_would_collapse(tmp_path):
    from mirage_ros.replay_report import write_replay_report

    a = np.zeros((16, 16, 3), np.uint8)
    frames = {0.1: a, 0.2: a, 0.3: a}  # stamps in seconds: int() would put all on key 0
    with pytest.raises(MirageInputError, match=r"keys must be integers.*0.1 \(float\) and 2 "
                                               r"more"):
        write_replay_report(tmp_path, frames, frames, [], plot=False)
    rep = write_replay_report(tmp_path, {np.int64(T0): a, T0 + 1: a}, {T0: a, T0 + 1: a}, [],
                              plot=False)
    assert [f["key"] for f in rep["frames"]] == [T0, T0 + 1]


def _replay_node(probe, params):
    """A real ReplayNode (rclpy, its own context) that is not spun: the test calls its
    start() and callbacks directly and reads what it published from ``node.path_msg``."""
    from rclpy.parameter import Parameter

    from mirage_ros.nodes.replay_node import ReplayNode

    return ReplayNode(context=probe.context, namespace="/mirage",
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_replay_node_keeps_one_key_per_frame_when_header_stamps_are_zero(tmp_path, ros_probe):
    """33 frames with all-zero header stamps: every frame keeps its own stamp (log times),
    so all 32 generated frames are scored (they used to collapse onto one key)."""
    pytest.importorskip("matplotlib")
    from mirage.msg import ChunkInfo
    from std_msgs.msg import Header

    from mirage_ros.messages import RclpyMessages

    n = 33
    rng = np.random.default_rng(0)
    gt = [rng.integers(0, 256, (*HW, 3), dtype=np.uint8) for _ in range(n)]
    path = tmp_path / "bag"
    with Bag(path) as bag:
        bag.write("/camera/camera_info", camera_info(T0), T0)
        for i in range(n):
            log = T0 + i * NS // 10
            bag.write("/camera/image", raw_image(0, "cam", gt[i]), log + 1)
            bag.write("/camera/pose", pose_stamped(0, "world", pose_of(i)), log + 2)
    node = _replay_node(ros_probe, {"bag": str(path), "out": str(tmp_path / "report")})
    with pytest.warns(BagStreamWarning, match="log"):
        node.start()
    assert node.exit_code == 0 and not node.done.is_set()
    assert len(node.index_of) == n
    path_msg = node.path_msg
    stamps = [p.header.stamp.sec * NS + p.header.stamp.nanosec for p in path_msg.poses]
    assert len(set(stamps)) == n
    m = RclpyMessages()
    for i in range(1, n):  # the generator answers each path stamp with a frame
        node._on_frame(m.image(gt[i], "rgb8", Header(stamp=path_msg.poses[i].header.stamp)))
    node._on_chunk(ChunkInfo(chunk_index=0, first_frame=1, num_frames=32))
    assert node.done.is_set() and node.exit_code == 0
    assert node.report["counts"]["matched"] == 32 and node.report["counts"]["identical"] == 32


def test_replay_node_refuses_frames_that_share_a_stamp(tmp_path, monkeypatch, ros_probe):
    """Whatever the reader returns, the node never maps two frames to one stamp."""
    import mirage_ros.bag as bag_mod
    from mirage_ros.bag import CameraStream

    n = 33
    s = CameraStream(frames=np.zeros((n, *HW, 3), np.uint8), depth=None,
                     T_world_cam=np.tile(np.eye(4), (n, 1, 1)), K=K, image_hw=HW,
                     stamps_ns=np.zeros(n, np.int64), pose_frame_id="world", num_images=n)
    monkeypatch.setattr(bag_mod, "read_camera_stream", lambda *a, **k: s)
    node = _replay_node(ros_probe, {"bag": "unused"})
    node.start()
    assert node.exit_code == 2 and node.done.is_set() and node.stream is None


def test_tf_interpolation_is_slerp_and_lerp_not_a_screw_motion():
    """tf2 interpolates rotation (slerp) and translation (linear) separately; a screw
    interpolation (pytransform3d's NumpyTimeseriesTransform) bends the path."""
    from mirage_ros.tf_poses import TfBuffer

    tf = TfBuffer()
    for t in (0.0, 1.0):
        M = Tmat(Rotation.from_euler("z", math.pi / 2 * t).as_matrix(), (2.0 * t, 0, 0))
        tf.add_message(tf_message(transform(T0 + round(t * NS), "w", "c", M)), static=False)
    Ts, ok, _ = tf.lookup("w", "c", [T0 + NS // 2])
    assert ok.all()
    np.testing.assert_allclose(Ts[0, :3, 3], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(Ts[0, :3, :3], Rotation.from_euler("z", math.pi / 4).as_matrix(),
                               atol=1e-12)
