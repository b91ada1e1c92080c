"""sensor_msgs/CameraInfo -> intrinsics (mirage_ros.messages.camera_info_to_K) and its readers.

The right values come from the field comments of ``sensor_msgs/msg/CameraInfo.msg`` (ROS 2
common_interfaces, https://docs.ros.org/en/rolling/p/sensor_msgs/msg/CameraInfo.html):

- "Intrinsic camera matrix for the raw (distorted) images": K (with D, the distortion).
- P: "By convention, this matrix specifies the intrinsic (camera) matrix of the processed
  (rectified) image. That is, the left 3x3 portion is the normal camera intrinsic matrix for
  the rectified image." and "For monocular cameras, Tx = Ty = 0."
- "If the camera is uncalibrated, the matrices D, K, R, P should be left zeroed out."
- binning "0 is considered the same as 1"; an all-zero ROI "is considered the same as full
  resolution".
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags")

from mirage_core.errors import MirageInputError
from mirage_ros.interfaces import make_typestore
from mirage_ros.messages import (
    CAMERA_INFO_DOC,
    CameraInfoWarning,
    RosbagsMessages,
    camera_info_to_K,
    image_topic_rectified,
)

H, W = 480, 640
#: a raw camera (fx 600) and the rectified one its calibration chose (fx 550), as
#: camera_calibration writes them for a lens with barrel distortion
K_RAW = np.array([[600.0, 0, 322.0], [0, 601.0, 238.0], [0, 0, 1]])
K_RECT = np.array([[550.0, 0, 318.5], [0, 550.0, 241.5], [0, 0, 1]])
D_PLUMB = [-0.28, 0.07, 0.001, -0.0005, 0.0]


@pytest.fixture(scope="module")
def m():
    return RosbagsMessages(make_typestore())


def info(m, K=K_RAW, D=D_PLUMB, P=K_RECT, R=None, Tx=0.0, hw=(H, W), **over):
    Pm = np.zeros((3, 4))
    if P is not None:
        Pm[:, :3] = P
        Pm[0, 3] = Tx
    fields = dict(height=hw[0], width=hw[1], distortion_model="plumb_bob",
                  d=np.asarray(D, np.float64), k=np.asarray(K, np.float64).reshape(-1),
                  r=(np.eye(3) if R is None else np.asarray(R)).reshape(-1),
                  p=Pm.reshape(-1))
    fields.update(over)
    return m.new("sensor_msgs/msg/CameraInfo", **fields)


def K_of(msg, rectified=None):
    K, hw = camera_info_to_K(msg, rectified=rectified)
    assert hw == (H, W)
    return K.numpy()


def test_doc_is_named():
    assert "CameraInfo.msg" in CAMERA_INFO_DOC


def test_rectified_stream_takes_the_left_3x3_of_P(m):
    """An image_rect stream carries the raw camera's CameraInfo (non-zero D): its intrinsics
    are P's, not K's (it used to be refused for its distortion)."""
    np.testing.assert_array_equal(K_of(info(m), rectified=True), K_RECT)


def test_hand_zeroed_distortion_gives_P_not_the_raw_K(m):
    """The issue's case: D zeroed by hand; K says fx 600, P says 550. The images Mirage gets
    are rectified ones, so 550 (it used to return K's 600 silently)."""
    msg = info(m, D=np.zeros(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        K = K_of(msg)
    assert K[0, 0] == 550.0 and K[1, 1] == 550.0
    np.testing.assert_array_equal(K, K_RECT)


def test_unknown_stream_with_distortion_uses_P_and_says_so(m):
    with pytest.warns(CameraInfoWarning, match=r"assumption that the images are rectified.*"
                                               r"image_proc.*initUndistortRectifyMap"):
        K = K_of(info(m))
    np.testing.assert_array_equal(K, K_RECT)


def test_raw_stream_with_distortion_is_refused_with_how_to_rectify(m):
    with pytest.raises(MirageInputError) as e:
        camera_info_to_K(info(m), rectified=False)
    text = str(e.value)
    assert "raw, distorted images" in text
    assert "image_proc" in text and "rectify_node" in text and "image_rect" in text
    assert "cv2.initUndistortRectifyMap(K, D, R, P" in text and "cv2.undistort" in text


def test_raw_stream_without_distortion_takes_K(m):
    # K is the raw image's matrix; with D = 0 the raw image is already a pinhole image
    np.testing.assert_array_equal(K_of(info(m, D=np.zeros(5)), rectified=False), K_RAW)
    np.testing.assert_array_equal(K_of(info(m, D=[]), rectified=False), K_RAW)


def test_uncalibrated_P_falls_back_to_K_only_without_distortion(m):
    np.testing.assert_array_equal(K_of(info(m, D=np.zeros(5), P=None)), K_RAW)
    with pytest.raises(MirageInputError, match="distortion but no P"):
        camera_info_to_K(info(m, P=None))
    with pytest.raises(MirageInputError, match="uncalibrated"):
        camera_info_to_K(info(m, K=np.zeros((3, 3)), D=np.zeros(5), P=None))


def test_stereo_right_camera_and_rectification_rotation_are_refused(m):
    with pytest.raises(MirageInputError, match=r"Tx, Ty.*monocular"):
        camera_info_to_K(info(m, Tx=-550.0 * 0.12), rectified=True)
    c, s = np.cos(0.05), np.sin(0.05)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    with pytest.raises(MirageInputError, match=r"CameraInfo.r is not the identity"):
        camera_info_to_K(info(m, R=R), rectified=True)
    # an all-zero R (uncalibrated rectification) with a P is read as the identity
    np.testing.assert_array_equal(K_of(info(m, R=np.zeros((3, 3))), rectified=True), K_RECT)


def test_binning_and_region_of_interest_are_refused(m):
    with pytest.raises(MirageInputError, match="binning 2x2"):
        camera_info_to_K(info(m, binning_x=2, binning_y=2), rectified=True)
    roi = m.new("sensor_msgs/msg/RegionOfInterest", x_offset=10, y_offset=0, width=320,
                height=240)
    with pytest.raises(MirageInputError, match="region of interest"):
        camera_info_to_K(info(m, roi=roi), rectified=True)
    full = m.new("sensor_msgs/msg/RegionOfInterest", width=W, height=H)
    for ok in (info(m, binning_x=1, binning_y=0), info(m, roi=full)):
        np.testing.assert_array_equal(K_of(ok, rectified=True), K_RECT)


def test_bad_values_are_refused(m):
    with pytest.raises(MirageInputError, match="height and width"):
        camera_info_to_K(info(m, hw=(0, W)))
    with pytest.raises(MirageInputError, match="non-finite"):
        camera_info_to_K(info(m, D=[np.nan, 0, 0, 0, 0]))
    with pytest.raises(MirageInputError, match=r"CameraInfo.p\[:, :3\]"):
        camera_info_to_K(info(m, P=-K_RECT), rectified=True)


@pytest.mark.parametrize(("topic", "want"), [
    ("/camera/image_rect", True), ("/camera/color/image_rect_color", True),
    ("/cam/image_rect/compressed", True), ("image_rect_raw", True),
    ("/camera/image_raw", False), ("/camera/color/image_raw/compressed", False),
    ("/camera/image_color", False), ("/camera/image_mono", False),
    ("/camera/image", None), ("camera/image", None), ("/", None),
])
def test_image_topic_rectified(topic, want):
    assert image_topic_rectified(topic) is want


def test_camera_info_msg_round_trips(m):
    from mirage_ros.messages import camera_info_msg

    K = torch.from_numpy(K_RECT)
    out, hw = camera_info_to_K(camera_info_msg(m, K, (H, W)))
    assert hw == (H, W) and torch.equal(out, K)


# ------------------------------------------------------------------------------ the readers
def test_memory_service_reads_P(m):
    """memory_service reads CameraInfo through camera_info_to_K: a readout asked with a
    CameraInfo whose K differs from P equals the readout with K = P (it used K before)."""
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_ros.image_conversion import array_to_image, image_to_array
    from mirage_ros.memory_service import MemoryService, MemoryServiceConfig
    from mirage_ros.messages import pose_from_T, tensor_to_latent

    h, w, c = 64, 96, 48
    K = intrinsics_from_fov(w, h, 60.0).numpy()
    svc = MemoryService(m, MemoryServiceConfig(feature_dtype="float32"))
    hdr = m.new("std_msgs/msg/Header")
    eye = pose_from_T(m, torch.eye(4, dtype=torch.float64))
    z = torch.randn((c, h // 16, w // 16), generator=torch.Generator().manual_seed(0))
    depth = array_to_image(np.full((h, w), 2.0, np.float32), "32FC1",
                           m.cls("sensor_msgs/msg/Image"), hdr)
    res = svc.update(m.new("mirage/srv/UpdateMemory_Request", depth=depth, pose=eye,
                           camera_info=info(m, K=K, D=np.zeros(5), P=K, hw=(h, w)),
                           latent=tensor_to_latent(m, z), reset=True))
    assert res.success, res.message

    def read(ci):
        r = svc.read(m.new("mirage/srv/ReadMemory_Request", poses=[eye], camera_info=ci))
        assert r.success, r.message
        return image_to_array(r.depths[0]), list(r.hole_rates)

    wide = K * [[0.5], [0.5], [1]]  # a raw K that would see past the stored view
    wide[2, 2] = 1.0
    d_p, holes_p = read(info(m, K=wide, D=np.zeros(5), P=K, hw=(h, w)))
    d_ref, holes_ref = read(info(m, K=K, D=np.zeros(5), P=K, hw=(h, w)))
    _, holes_k = read(info(m, K=wide, D=np.zeros(5), P=None, hw=(h, w)))
    assert holes_p == holes_ref == [0.0] and holes_k[0] > 0.5
    np.testing.assert_array_equal(d_p, d_ref)


@pytest.mark.parametrize("model", ["equidistant", "fisheye", "kannala_brandt"])
@pytest.mark.parametrize("P", [K_RECT, None], ids=["with-P", "zero-P"])
def test_fisheye_model_with_zero_D_is_not_a_pinhole_camera(m, model, P):
    """sensor_msgs/distortion_models.hpp: ``equidistant`` is the fisheye model; a lens that
    projects r = f * theta is not pinhole even with k1..k4 = 0. Raw or zero-P: refused with
    how to rectify (it used to return the raw K silently)."""
    msg = info(m, D=np.zeros(4), P=P, distortion_model=model)
    with pytest.raises(MirageInputError, match="rectif"):
        camera_info_to_K(msg, rectified=False)
    if P is None:
        with pytest.raises(MirageInputError, match="rectif"):
            camera_info_to_K(msg, rectified=None)
    else:  # a rectified stream's images are pinhole: P, with a warning when not known
        np.testing.assert_array_equal(K_of(msg, rectified=True), K_RECT)
        with pytest.warns(CameraInfoWarning):
            np.testing.assert_array_equal(K_of(msg, rectified=None), K_RECT)


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial", "radtan", ""])
def test_polynomial_model_with_zero_D_is_pinhole(m, model):
    msg = info(m, D=np.zeros(5), P=None, distortion_model=model)
    np.testing.assert_array_equal(K_of(msg, rectified=False), K_RAW)
