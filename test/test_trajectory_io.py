"""Trajectory file formats: round trips, convention conversions and malformed-file errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mirage_core.errors import TrajectoryFileError
from mirage_core.geometry import intrinsics_matrix
from mirage_core.trajectory import Trajectory, make_trajectory
from mirage_core.trajectory_io import (
    FORMATS,
    detect_format,
    read_nerfstudio,
    read_realestate10k,
    read_trajectory,
    read_tum,
    write_trajectory,
)

H, W = 360, 640
K = intrinsics_matrix(500.0, 480.0, 320.0, 180.0)
EXT = {"tum": "txt", "kitti": "txt", "realestate10k": "txt", "nerfstudio": "json"}


def random_trajectory(n: int = 7, per_frame_k: bool = False) -> Trajectory:
    """Poses with arbitrary rotations and translations, timestamps index / 10 fps."""
    rng = np.random.default_rng(0)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=1).as_matrix()
    T[:, :3, 3] = rng.normal(size=(n, 3)) * 3.0
    Ks = K * torch.linspace(1.0, 1.2, n, dtype=torch.float64)[:, None, None]
    Ks[:, 2, 2] = 1.0
    return Trajectory(
        torch.from_numpy(T),
        torch.arange(n, dtype=torch.float64) / 10.0,  # index / fps, as KITTI assumes
        Ks if per_frame_k else K,
        (H, W),
    )


def write_text(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path, fmt):
    traj = random_trajectory(per_frame_k=fmt == "realestate10k")
    path = tmp_path / f"traj.{EXT[fmt]}"
    write_trajectory(traj, path, fmt)
    assert detect_format(path) == fmt
    kw = {"image_hw": (H, W)} if fmt == "realestate10k" else {}
    back = read_trajectory(path, **kw)
    assert len(back) == len(traj)
    assert torch.allclose(back.T_world_cam, traj.T_world_cam, atol=1e-6)
    assert torch.allclose(back.timestamps, traj.timestamps, atol=1e-6)
    if fmt in ("realestate10k", "nerfstudio"):
        assert back.image_hw == (H, W)
        assert torch.allclose(back.K, traj.K, atol=1e-9)
    else:
        assert back.K is None  # TUM and KITTI carry no intrinsics


def test_nerfstudio_per_frame_intrinsics_and_file_paths_round_trip(tmp_path):
    traj = random_trajectory(n=4, per_frame_k=True)
    traj = Trajectory(traj.T_world_cam, traj.timestamps, traj.K, traj.image_hw,
                      ("a.png", "b.png", "c.png", "d.png"))
    path = tmp_path / "transforms.json"
    write_trajectory(traj, path, "nerfstudio")
    data = json.loads(path.read_text())
    assert "fl_x" not in data and data["frames"][2]["fl_x"] == pytest.approx(traj.K[2, 0, 0])
    back = read_nerfstudio(path)
    assert back.file_paths == ("a.png", "b.png", "c.png", "d.png")
    assert back.K.shape == (4, 3, 3) and torch.allclose(back.K, traj.K)


def test_nerfstudio_opengl_pose_becomes_opencv(tmp_path):
    # GL camera at (1, 2, 3) with identity rotation: looks down world -Z, image up = world +Y.
    gl = [[1, 0, 0, 1.0], [0, 1, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]]
    # GL camera rotated 90 deg about world +Y: looks down world -X.
    gl_yaw = [[0, 0, 1, 0.0], [0, 1, 0, 0.0], [-1, 0, 0, 0.0], [0, 0, 0, 1]]
    data = {"fl_x": 300.0, "fl_y": 310.0, "cx": 160.0, "cy": 120.0, "w": 320, "h": 240,
            "frames": [{"file_path": "images/0.png", "transform_matrix": gl},
                       {"file_path": "images/1.png", "transform_matrix": gl_yaw}]}
    path = write_text(tmp_path, "transforms.json", json.dumps(data))
    traj = read_trajectory(path)
    T = traj.T_world_cam[0]
    assert T[:3, 3].tolist() == [1.0, 2.0, 3.0]  # same camera centre
    assert T[:3, 2].tolist() == [0.0, 0.0, -1.0]  # OpenCV +Z (forward) = GL -Z
    assert T[:3, 1].tolist() == [0.0, -1.0, 0.0]  # OpenCV +Y (down) = GL -Y
    assert T[:3, 0].tolist() == [1.0, 0.0, 0.0]  # +X (right) unchanged
    assert traj.T_world_cam[1, :3, 2].tolist() == [-1.0, 0.0, 0.0]
    assert torch.equal(traj.K, intrinsics_matrix(300.0, 310.0, 160.0, 120.0))
    assert traj.image_hw == (240, 320)
    assert traj.file_paths == ("images/0.png", "images/1.png")
    assert traj.timestamps.tolist() == [0.0, 0.1]  # no timestamps in file: index / fps
    # a world point 2 m in front of the GL camera is at depth +2 in the OpenCV camera
    p = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    assert (traj.T_cam_world[0] @ p)[:3].tolist() == pytest.approx([0.0, 0.0, 2.0])


def test_realestate10k_denormalises_intrinsics_and_inverts_pose(tmp_path):
    # T_cam_world = [R | -R c]: rotation 90 deg about Y, camera centre c in the world.
    R = Rotation.from_euler("y", 90, degrees=True).as_matrix()
    centre = np.array([0.5, -1.0, 2.0])
    t = -R @ centre
    row = [*R[0], t[0], *R[1], t[1], *R[2], t[2]]
    line = "33366667 0.5 0.9 0.49 0.51 0 0 " + " ".join(repr(float(x)) for x in row)
    line2 = line.replace("33366667", "33400033", 1)
    path = write_text(tmp_path, "abc.txt", f"https://www.youtube.com/watch?v=xyz\n{line}\n{line2}\n")
    traj = read_realestate10k(path, image_hw=(H, W))
    expected_K = intrinsics_matrix(0.5 * W, 0.9 * H, 0.49 * W, 0.51 * H)
    assert traj.K.shape == (2, 3, 3) and torch.allclose(traj.K[0], expected_K)
    assert traj.intrinsics(1)[0, 0].item() == pytest.approx(320.0)
    assert traj.image_hw == (H, W)
    assert traj.timestamps.tolist() == pytest.approx([33.366667, 33.400033])
    assert traj.T_world_cam[0, :3, 3].tolist() == pytest.approx(centre.tolist())
    assert np.allclose(traj.T_world_cam[0, :3, :3].numpy(), R.T)
    with pytest.raises(ValueError, match="image_hw"):
        read_trajectory(path)


def test_tum_reader_comments_and_quaternion_order(tmp_path):
    # 90 deg about +Z, xyzw = (0, 0, sin45, cos45): camera +X maps to world +Y.
    s = math.sqrt(0.5)
    text = f"# comment\n\n1305031102.175304 1 2 3 0 0 {s} {s}\n1305031102.211214 1 2 3.5 0 0 0 1\n"
    traj = read_tum(write_text(tmp_path, "gt.txt", text))
    assert traj.T_world_cam[0, :3, 0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert traj.T_world_cam[0, :3, 3].tolist() == [1.0, 2.0, 3.0]
    assert traj.timestamps[1].item() == pytest.approx(1305031102.211214, abs=1e-6)


def test_kitti_times_file_and_fps(tmp_path):
    traj = make_trajectory("push_in", num_frames=3, speed=0.5)
    poses, times = tmp_path / "00.txt", tmp_path / "times.txt"
    write_trajectory(traj, poses, "kitti", times_path=times)
    assert read_trajectory(poses, "kitti", fps=2.0).timestamps.tolist() == [0.0, 0.5, 1.0]
    times.write_text("0.0\n0.103\n0.207\n")
    back = read_trajectory(poses, "kitti", times_path=times)
    assert back.timestamps.tolist() == [0.0, 0.103, 0.207]
    assert back.T_world_cam[2, 2, 3].item() == 1.0
    times.write_text("0.0\n0.1\n")
    with pytest.raises(TrajectoryFileError, match="2 times but"):
        read_trajectory(poses, "kitti", times_path=times)


TUM_OK = "0.0 0 0 0 0 0 0 1\n"
KITTI_OK = "1 0 0 0 0 1 0 0 0 0 1 0\n"
RE10K_OK = "1000 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n"


@pytest.mark.parametrize(
    ("fmt", "text", "pattern"),
    [
        ("tum", TUM_OK * 2 + "# c\n\n1.0 0 0 0 0 0 1\n",
         r"line 5: expected 8 numbers \(timestamp tx ty tz qx qy qz qw\), got 7"),
        ("tum", TUM_OK + "1.0 0 0 0 0 0 0.5 1\n", r"line 2: .*norm 1\.118"),
        ("tum", TUM_OK + "1.0 0 0 x 0 0 0 1\n", r"line 2: expected 8 numbers.*'x'"),
        ("tum", "1.0 0 0 0 0 0 0 1\n0.5 0 0 0 0 0 0 1\n", r"line 2: timestamp 0\.5 is not after"),
        ("tum", "1.0 0 0 nan 0 0 0 1\n", r"line 1: NaN or inf"),
        ("tum", "# only a comment\n\n", "no poses found"),
        ("tum", "", "no poses found"),
        ("kitti", KITTI_OK + "1 0 0 0 0 1 0 0 0 0 1\n",
         r"line 2: expected 12 numbers \(row-major 3x4.*\), got 11"),
        ("kitti", KITTI_OK * 2 + "2 0 0 0 0 1 0 0 0 0 1 0\n", r"line 3: .*not orthonormal"),
        ("kitti", "-1 0 0 0 0 1 0 0 0 0 1 0\n", r"line 1: .*reflection"),
        ("realestate10k", "http://x\n" + RE10K_OK + RE10K_OK.replace("1000", "900", 1),
         r"line 3: timestamp"),
        ("realestate10k", "http://x\n" + RE10K_OK + "2000 0.5 0.9 0.5 0.5 0 0 1 0 0\n",
         r"line 3: expected 19 numbers \(timestamp_us fx fy cx cy k1 k2.*got 10"),
        ("realestate10k", "http://x\n" + RE10K_OK.replace("1000 0.5", "1000 -0.5", 1),
         r"line 2: focal lengths must be positive"),
        ("realestate10k", "https://www.youtube.com/watch?v=abc\n", "no poses found"),
        ("realestate10k", "", "empty file"),
    ],
)
def test_malformed_text_files_name_the_line(tmp_path, fmt, text, pattern):
    path = write_text(tmp_path, "bad.txt", text)
    kw = {"image_hw": (H, W)} if fmt == "realestate10k" else {}
    with pytest.raises(TrajectoryFileError, match=pattern) as info:
        read_trajectory(path, fmt, **kw)
    assert str(path) in str(info.value)


GL_OK = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"frames": [', r"line 1: invalid JSON"),
        (json.dumps({"frames": []}), "non-empty 'frames'"),
        (json.dumps({"frames": [{"transform_matrix": GL_OK}, {"file_path": "x"}]}),
         r"frames\[1\]: expected an object with 'transform_matrix'"),
        (json.dumps({"frames": [{"transform_matrix": GL_OK}, {"transform_matrix": [[1, 0]]}]}),
         r"frames\[1\]: expected a 4x4"),
        (json.dumps({"frames": [{"transform_matrix": [[2, 0, 0, 0], *GL_OK[1:]]}]}),
         r"frames\[0\]: .*not orthonormal"),
        (json.dumps({"fl_x": 100.0, "frames": [{"transform_matrix": GL_OK}]}),
         r"frames\[0\]: intrinsics incomplete, missing \['fl_y', 'cx', 'cy'\]"),
        (json.dumps({"frames": [
            {"transform_matrix": GL_OK, "fl_x": 1, "fl_y": 1, "cx": 1, "cy": 1},
            {"transform_matrix": GL_OK}]}),
         r"frames\[1\]: no intrinsics"),
        (json.dumps({"frames": [{"transform_matrix": GL_OK, "timestamp": 1.0},
                                {"transform_matrix": GL_OK, "timestamp": 1.0}]}),
         r"frames\[1\]: timestamp"),
    ],
)
def test_malformed_nerfstudio_names_the_frame(tmp_path, content, pattern):
    path = write_text(tmp_path, "transforms.json", content)
    with pytest.raises(TrajectoryFileError, match=pattern) as info:
        read_trajectory(path)
    assert str(path) in str(info.value)


def test_dispatch_errors(tmp_path):
    with pytest.raises(ValueError, match="valid formats: tum, kitti, realestate10k, nerfstudio"):
        read_trajectory(write_text(tmp_path, "a.txt", TUM_OK), "colmap")
    with pytest.raises(TrajectoryFileError, match=r"line 1: cannot detect the format from 5"):
        read_trajectory(write_text(tmp_path, "b.txt", "1 2 3 4 5\n"))
    with pytest.raises(ValueError, match="intrinsics"):
        write_trajectory(make_trajectory("push_in"), tmp_path / "c.txt", "realestate10k")
