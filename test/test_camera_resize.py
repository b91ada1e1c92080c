"""Intrinsics of a camera file for frames of another size (issue 11, same family as item 1).

A user's frames are often resized before a rollout (1920x1080 -> 1024x576, multiples of 32).
Under the +1/2 pixel-centre rule a continuous pixel coordinate scales with the image, so
``fx, cx`` scale by ``W'/W`` and ``fy, cy`` by ``H'/H`` (OpenCV's pinhole model; e.g. the
same rule as COLMAP's ``Camera::Rescale``). Another aspect ratio implies an unknown crop.
"""

import pytest
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.geometry import intrinsics_matrix, project, resize_intrinsics
from mirage_core.rollout.inputs import check_camera
from mirage_core.trajectory import make_trajectory


def test_resize_intrinsics_scales_continuous_pixel_coordinates():
    K = intrinsics_matrix(1000.0, 1010.0, 960.0, 540.0)
    K2 = resize_intrinsics(K, (1080, 1920), (576, 1024))
    s = 1024 / 1920
    torch.testing.assert_close(K2, intrinsics_matrix(1000.0 * s, 1010.0 * s, 960.0 * s,
                                                     540.0 * s))
    # the image corner (pixel edge 1920, 1080) maps to (1024, 576): no half-pixel term
    pts = torch.tensor([[(1920 - 960) / 1000.0, (1080 - 540) / 1010.0, 1.0]], dtype=torch.float64)
    uv = project(pts, K2, torch.eye(4, dtype=torch.float64))[0]
    torch.testing.assert_close(uv[0, :2], torch.tensor([1024.0, 576.0], dtype=torch.float64))


def test_resize_then_crop_moves_the_principal_point():
    K = intrinsics_matrix(50.0, 50.0, 28.0, 20.0)
    K2 = resize_intrinsics(K, (40, 56), (80, 112), (4, 6))
    torch.testing.assert_close(K2, intrinsics_matrix(100.0, 100.0, 56.0 - 6, 40.0 - 4))
    batched = resize_intrinsics(torch.stack([K, K]), (40, 56), (80, 112), (4, 6))
    assert batched.shape == (2, 3, 3) and torch.equal(batched[1], K2)


def test_rollout_scales_a_file_for_resized_frames():
    K = intrinsics_matrix(1000.0, 1000.0, 960.0, 540.0)
    traj = make_trajectory("pan_left", 5, K=K, image_hw=(1080, 1920))
    got = check_camera(traj, (576, 1024))
    torch.testing.assert_close(got, resize_intrinsics(K, (1080, 1920), (576, 1024)))


def test_rollout_refuses_a_file_for_another_aspect_ratio():
    K = intrinsics_matrix(1000.0, 1000.0, 960.0, 540.0)
    traj = make_trajectory("pan_left", 5, K=K, image_hw=(1080, 1920))
    with pytest.raises(ShapeError, match="another aspect ratio"):
        check_camera(traj, (576, 768))


def test_rollout_names_the_frame_whose_intrinsics_differ():
    K = intrinsics_matrix(100.0, 100.0, 48.0, 32.0)
    Ks = K.expand(5, 3, 3).clone()
    Ks[3, 0, 0] = Ks[3, 1, 1] = 120.0
    traj = make_trajectory("pan_left", 5, K=Ks, image_hw=(64, 96))
    with pytest.raises(MirageInputError, match=r"frame 3 has fx, fy, cx, cy = 120, 120, 48, 32 "
                       r"but frame 0 has 100, 100, 48, 32"):
        check_camera(traj, (64, 96))
