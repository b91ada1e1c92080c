"""The ROS 2 interfaces (one source: the .msg/.srv/.action files) and image conversion."""

from __future__ import annotations

import numpy as np
import pytest

from mirage_ros.image_conversion import (
    ENCODINGS,
    MalformedMessageError,
    array_to_image,
    depth_to_metres,
    image_to_array,
    image_to_rgb,
)
from mirage_ros.interfaces import ACTIONS, MESSAGES, SERVICES, make_typestore


@pytest.fixture(scope="module")
def ts():
    return make_typestore("humble")


def _header(ts, frame="cam"):
    H, T = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    return H(stamp=T(sec=3, nanosec=4), frame_id=frame)


def test_every_interface_file_is_registered(ts):
    names = set(ts.types)
    for m in MESSAGES:
        assert f"mirage/msg/{m}" in names
    for s in SERVICES:
        assert {f"mirage/srv/{s}_Request", f"mirage/srv/{s}_Response"} <= names
    for a in ACTIONS:
        for part in ("Goal", "Result", "Feedback", "SendGoal_Request", "SendGoal_Response",
                     "GetResult_Request", "GetResult_Response", "FeedbackMessage"):
            assert f"mirage/action/{a}_{part}" in names
    assert {"std_srvs/srv/Trigger_Request", "action_msgs/srv/CancelGoal_Response"} <= names
    assert "mirage/msg/LatentTensor" in make_typestore("jazzy").types
    with pytest.raises(ValueError, match="distro"):
        make_typestore("foxy")


def test_cdr_roundtrip_of_a_service_request_with_nested_custom_types(ts):
    Req = ts.types["mirage/srv/UpdateMemory_Request"]
    img = array_to_image(np.zeros((4, 6, 3), np.uint8), "rgb8", ts.types["sensor_msgs/msg/Image"],
                         _header(ts))
    depth = array_to_image(np.full((4, 6), 2.5, np.float32), "32FC1",
                           ts.types["sensor_msgs/msg/Image"], _header(ts))
    empty = array_to_image(np.zeros((1, 1), np.uint8), "mono8",
                           ts.types["sensor_msgs/msg/Image"], _header(ts))
    lt = ts.types["mirage/msg/LatentTensor"](
        header=_header(ts), dtype="float32", shape=np.array([48, 1, 1], np.uint32),
        data=np.zeros(48 * 4, np.uint8))
    ci = ts.types["sensor_msgs/msg/CameraInfo"]
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                       do_rectify=False)
    cam = ci(header=_header(ts), height=4, width=6, distortion_model="plumb_bob",
             d=np.zeros(5), k=np.eye(3).ravel(), r=np.eye(3).ravel(), p=np.zeros(12),
             binning_x=0, binning_y=0, roi=roi)
    P = ts.types["geometry_msgs/msg/Pose"]
    pose = P(position=ts.types["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=3.0),
             orientation=ts.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    req = Req(image=img, depth=depth, mask=empty, camera_info=cam, pose=pose, latent=lt,
              reset=True)
    raw = ts.serialize_cdr(req, "mirage/srv/UpdateMemory_Request")
    assert bytes(raw[:4]) == b"\x00\x01\x00\x00"  # plain little-endian CDR, as ROS 2
    back = ts.deserialize_cdr(raw, "mirage/srv/UpdateMemory_Request")
    assert back.reset is True and back.pose.position.z == 3.0
    np.testing.assert_array_equal(depth_to_metres(back.depth), np.full((4, 6), 2.5, np.float32))
    assert list(back.latent.shape) == [48, 1, 1]


def test_rosbags_cdr_equals_rclpy_for_our_interfaces():
    """Bags are written with rosbags from its type store of msg/srv/action; nodes send
    rosidl-generated messages. The bytes must be the same, both ways, or `ros2 bag` and the
    nodes would disagree about what a bag holds."""
    from mirage.msg import ChunkInfo, LatentTensor
    from mirage.srv import UpdateMemory
    from rclpy.serialization import deserialize_message, serialize_message

    from mirage_ros.messages import RclpyMessages, camera_info_msg, pose_from_T

    ts = make_typestore("jazzy")
    r = RclpyMessages()
    import torch

    from mirage_core.geometry import intrinsics_from_fov

    req = UpdateMemory.Request(
        reset=True, image=r.image(np.arange(72, dtype=np.uint8).reshape(4, 6, 3), "rgb8"),
        camera_info=camera_info_msg(r, intrinsics_from_fov(6, 4, 60.0), (4, 6)),
        pose=pose_from_T(r, torch.eye(4, dtype=torch.float64)),
        latent=LatentTensor(dtype="float32", shape=[2, 1, 1], data=bytes(8)))
    raw = serialize_message(req)
    back = ts.deserialize_cdr(raw, "mirage/srv/UpdateMemory_Request")
    assert back.reset is True and bytes(back.image.data) == bytes(range(72))
    # equal as messages (Fast CDR leaves alignment padding bytes unset, rosbags zeroes them)
    assert deserialize_message(bytes(ts.serialize_cdr(back, "mirage/srv/UpdateMemory_Request")),
                               UpdateMemory.Request) == req
    info = ChunkInfo(chunk_index=2, chunks_total=3, num_frames=32, denoise_s=1.5)
    raw = serialize_message(info)
    again = deserialize_message(bytes(ts.serialize_cdr(
        ts.deserialize_cdr(raw, "mirage/msg/ChunkInfo"), "mirage/msg/ChunkInfo")), ChunkInfo)
    assert again == info


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_image_roundtrip_every_encoding(ts, encoding):
    dtype, ch = ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    shape = (5, 7, 3) if ch == 3 else (5, 7)
    if dtype.kind == "f":
        arr = rng.random(shape).astype(dtype) * 10
    else:
        arr = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    msg = array_to_image(arr, encoding, ts.types["sensor_msgs/msg/Image"], _header(ts))
    assert msg.step == 7 * ch * dtype.itemsize and len(msg.data) == msg.step * 5
    out = image_to_array(msg)
    assert out.dtype == dtype and np.array_equal(out, arr)
    # And through CDR bytes.
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"),
                              "sensor_msgs/msg/Image")
    assert np.array_equal(image_to_array(back), arr)


def test_padded_rows_and_big_endian_are_decoded(ts):
    Image = ts.types["sensor_msgs/msg/Image"]
    depth = np.array([[1, 2, 3], [400, 500, 60000]], np.uint16)
    step = 3 * 2 + 4  # 4 bytes of row padding
    rows = [np.concatenate([r.astype(">u2").view(np.uint8), np.full(4, 0xEE, np.uint8)])
            for r in depth]
    msg = Image(header=_header(ts), height=2, width=3, encoding="16UC1", is_bigendian=1,
                step=step, data=np.concatenate(rows))
    np.testing.assert_array_equal(image_to_array(msg), depth)
    np.testing.assert_allclose(depth_to_metres(msg), depth / 1000.0)


def test_bgr_is_returned_as_rgb(ts):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    bgr = array_to_image(rgb[..., ::-1].copy(), "bgr8", ts.types["sensor_msgs/msg/Image"],
                         _header(ts))
    np.testing.assert_array_equal(image_to_rgb(bgr), rgb)


def test_malformed_images_are_rejected_with_reasons(ts):
    Image = ts.types["sensor_msgs/msg/Image"]

    def img(**kw):
        f = dict(header=_header(ts), height=2, width=3, encoding="mono8", is_bigendian=0,
                 step=3, data=np.zeros(6, np.uint8))
        f.update(kw)
        return Image(**f)

    with pytest.raises(MalformedMessageError, match="unsupported image encoding 'yuv422'"):
        image_to_array(img(encoding="yuv422"))
    with pytest.raises(MalformedMessageError, match="expected step"):
        image_to_array(img(data=np.zeros(5, np.uint8)))
    with pytest.raises(MalformedMessageError, match="step 2 <"):
        image_to_array(img(step=2))
    with pytest.raises(MalformedMessageError, match="both sides"):
        image_to_array(img(height=0, data=np.zeros(0, np.uint8)))
    with pytest.raises(MalformedMessageError, match="rgb8 or bgr8"):
        image_to_rgb(img())
    with pytest.raises(MalformedMessageError, match="32FC1 or 16UC1"):
        depth_to_metres(img())
    neg = array_to_image(np.full((2, 2), -1.0, np.float32), "32FC1", Image, _header(ts))
    with pytest.raises(MalformedMessageError, match="negative"):
        depth_to_metres(neg)
    nan = array_to_image(np.full((2, 2), np.nan, np.float32), "32FC1", Image, _header(ts))
    assert (depth_to_metres(nan) == 0).all()  # no return -> no measurement
    with pytest.raises(MalformedMessageError, match="uint8 array"):
        array_to_image(np.zeros((2, 2), np.float32), "mono8", Image, _header(ts))


def test_matches_real_cv_bridge_where_installed(ts):
    cv_bridge = pytest.importorskip("cv_bridge", reason="real cv_bridge only on ROS machines")
    if not hasattr(cv_bridge, "CvBridge") or "ros" not in (cv_bridge.__file__ or ""):
        pytest.skip("not ROS 2's cv_bridge (the PyPI repack is never used)")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    bridge = cv_bridge.CvBridge()
    for enc, arr in (("rgb8", np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)),
                     ("16UC1", np.arange(6, dtype=np.uint16).reshape(2, 3) * 1000),
                     ("32FC1", np.linspace(0, 5, 6, dtype=np.float32).reshape(2, 3))):
        msg = bridge.cv2_to_imgmsg(arr, encoding=enc)
        np.testing.assert_array_equal(image_to_array(msg), bridge.imgmsg_to_cv2(msg))
        ours = array_to_image(arr, enc, sensor_msgs.Image, data_as="bytes")
        np.testing.assert_array_equal(bridge.imgmsg_to_cv2(ours), arr)
