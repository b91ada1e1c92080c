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
    FORMAT_TITLES,
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
         r"line 3: expected 19 numbers \(timestamp_us fx fy cx cy 0 0.*got 10"),
        ("realestate10k", "http://x\n" + RE10K_OK.replace("1000 0.5", "1000 -0.5", 1),
         r"line 2: focal lengths must be positive"),
        ("realestate10k", "https://www.youtube.com/watch?v=abc\n", "no poses found"),
        ("realestate10k", "", "empty file"),
    ],
)
def test_malformed_text_files_name_the_format_and_the_line(tmp_path, fmt, text, pattern):
    path = write_text(tmp_path, "bad.txt", text)
    kw = {"image_hw": (H, W)} if fmt == "realestate10k" else {}
    with pytest.raises(TrajectoryFileError, match=pattern) as info:
        read_trajectory(path, fmt, **kw)
    # every parse error names the file and the format it was read as
    assert f"{path} (read as {FORMAT_TITLES[fmt]})" in str(info.value)


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
        # fl_y defaults to fl_x and cx, cy to the image centre (instant-ngp), which needs a size
        (json.dumps({"fl_x": 100.0, "frames": [{"transform_matrix": GL_OK}]}),
         r"top level: no cx and cy, and no image size \(w, h\).*pass image_hw"),
        (json.dumps({"frames": [
            {"transform_matrix": GL_OK, "fl_x": 1, "fl_y": 1, "cx": 1, "cy": 1},
            {"transform_matrix": GL_OK}]}),
         r"frames\[1\]: no focal length, but frames\[0\] has one"),
        (json.dumps({"w": 64, "frames": [{"transform_matrix": GL_OK}]}),
         r"top level: image size incomplete: 'h' is missing"),
        (json.dumps({"frames": [
            {"transform_matrix": GL_OK, "fl_x": 1, "fl_y": 1, "cx": 1, "cy": 1, "w": 4, "h": 2},
            {"transform_matrix": GL_OK, "fl_x": 1, "fl_y": 1, "cx": 1, "cy": 1, "w": 8, "h": 2}]}),
         r"frames\[1\]: image size \(h, w\) = \(2, 8\) differs from frames\[0\]'s \(2, 4\)"),
        (json.dumps({"frames": [{"transform_matrix": GL_OK, "timestamp": 1.0},
                                {"transform_matrix": GL_OK, "timestamp": 1.0}]}),
         r"frames\[1\]: timestamp"),
    ],
)
def test_malformed_nerfstudio_names_the_frame(tmp_path, content, pattern):
    path = write_text(tmp_path, "transforms.json", content)
    with pytest.raises(TrajectoryFileError, match=pattern) as info:
        read_trajectory(path)
    assert f"{path} (read as nerfstudio transforms.json)" in str(info.value)


def test_dispatch_errors(tmp_path):
    with pytest.raises(ValueError, match="valid formats: tum, kitti, realestate10k, nerfstudio"):
        read_trajectory(write_text(tmp_path, "a.txt", TUM_OK), "colmap")
    with pytest.raises(TrajectoryFileError, match=r"line 1: cannot detect the format from 5"):
        read_trajectory(write_text(tmp_path, "b.txt", "1 2 3 4 5\n"))
    with pytest.raises(ValueError, match="intrinsics"):
        write_trajectory(make_trajectory("push_in"), tmp_path / "c.txt", "realestate10k")


# --------------------------------------------------------------------------- header lines
# TUM RGB-D file formats (cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats): "Each line
# in the text file contains a single pose. The format of each line is 'timestamp tx ty tz qx
# qy qz qw'"; the published files carry that line as a '#' comment, user files often do not.

TUM_HEADER = "timestamp tx ty tz qx qy qz qw\n"


def test_tum_file_with_an_uncommented_header_is_detected_and_read_as_tum(tmp_path):
    s = math.sqrt(0.5)
    text = TUM_HEADER + f"1.5 1 2 3 0 0 {s} {s}\n2.5 1 2 4 0 0 0 1\n"
    path = write_text(tmp_path, "gt.txt", text)
    assert detect_format(path) == "tum"  # from the data lines, not the header
    traj = read_trajectory(path)  # and the header is skipped
    assert traj.timestamps.tolist() == [1.5, 2.5]
    assert traj.T_world_cam[1, :3, 3].tolist() == [1.0, 2.0, 4.0]
    assert traj.T_world_cam[0, :3, 0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert traj.K is None


def test_kitti_poses_and_times_with_header_lines(tmp_path):
    poses = write_text(tmp_path, "00.txt", "r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3\n"
                       + KITTI_OK + "1 0 0 0 0 1 0 0 0 0 1 2.5\n")
    times = write_text(tmp_path, "times.txt", "time_s\n0.0\n0.1\n")
    assert detect_format(poses) == "kitti"
    traj = read_trajectory(poses, times_path=times)
    assert traj.timestamps.tolist() == [0.0, 0.1] and traj.T_world_cam[1, 2, 3].item() == 2.5


def test_format_is_detected_from_the_data_lines_not_the_first_line(tmp_path):
    # one malformed data line first (7 numbers): the rest decide, and the reader names it
    path = write_text(tmp_path, "a.txt", "0.5 0 0 0 0 0 1\n" + "1.0 0 0 0 0 0 0 1\n" * 3)
    assert detect_format(path) == "tum"
    with pytest.raises(TrajectoryFileError) as info:
        read_trajectory(path)
    msg = str(info.value)
    assert f"{path} (read as TUM): line 1: expected 8 numbers" in msg
    assert "format detected as tum from 3 of 4 data lines holding 8 numbers" in msg
    assert "--trajectory-format" in msg


def test_a_header_line_inside_the_data_is_named(tmp_path):
    # two files concatenated: the second header is a bad line, named with the format
    text = TUM_HEADER + TUM_OK + TUM_HEADER + "1.0 0 0 0 0 0 0 1\n"
    path = write_text(tmp_path, "cat.txt", text)
    with pytest.raises(TrajectoryFileError,
                       match=r"\(read as TUM\): line 3: expected 8 numbers .*'timestamp'"):
        read_trajectory(path)


def test_comma_separated_tum_is_read_as_tum_tools_read_it(tmp_path):
    """TUM RGB-D benchmark tools (associate.py, evaluate_ate.py: ``file.read().replace(",",
    " ").replace("\t", " ")``) take commas as separators, so a comma-separated file is TUM."""
    csv = write_text(tmp_path, "gt.csv", "#t,x,y,z,qx,qy,qz,qw\n0.0,0,0,0,0,0,0,1\n"
                     "1.0,0.5,0,0,0,0,0,1\n")
    traj = read_trajectory(csv)
    assert len(traj) == 2 and float(traj.T_world_cam[1, 0, 3]) == 0.5


@pytest.mark.parametrize("name,text,n", [
    ("t.txt", "1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 0 1\n", 2),  # TUM
    ("h.txt", "# c\ntimestamp tx ty tz qx qy qz qw\n1.0 0 0 0 0 0 0 1\n", 1),  # + header
    ("k.txt", "1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 1 0 1 0 0 0 0 1 0\n", 2),  # KITTI
    ("c.json", '{"fl_x": 50, "w": 96, "h": 64, "frames": [{"transform_matrix": '
     '[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}', 1),  # nerfstudio
])
def test_utf8_byte_order_mark_is_not_part_of_the_first_number(tmp_path, name, text, n):
    """Windows editors and Excel write UTF-8 with a BOM (U+FEFF); it is not data."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8-sig")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert len(read_trajectory(path)) == n


def test_undetectable_text_names_the_line_and_says_why(tmp_path):
    semi = write_text(tmp_path, "gt.txt", "#t;x\n0.0;0;0;0;0;0;0;1\n")
    with pytest.raises(TrajectoryFileError, match=r"line 2: cannot detect the format"):
        read_trajectory(semi)
    header_only = write_text(tmp_path, "h.txt", TUM_HEADER)
    with pytest.raises(TrajectoryFileError, match=r"line 1: cannot detect the format"):
        read_trajectory(header_only)


def test_realestate10k_without_image_hw_says_how(tmp_path):
    path = write_text(tmp_path, "c.txt", "https://www.youtube.com/watch?v=x\n" + RE10K_OK)
    with pytest.raises(ValueError, match=r"\(read as RealEstate10K\).*pass image_hw=\(H, W\)"):
        read_trajectory(path)
    poses_only = read_trajectory(path, intrinsics=False)
    assert poses_only.K is None and poses_only.image_hw is None and len(poses_only) == 1


def test_realestate10k_nonzero_columns_6_7_are_refused(tmp_path):
    # 0 in every file of the dataset; non-zero would be lens distortion (Mirage: pinhole)
    line = RE10K_OK.replace("0.5 0 0 1", "0.5 0.1 0 1", 1)
    path = write_text(tmp_path, "c.txt", "http://x\n" + line)
    with pytest.raises(TrajectoryFileError, match=r"line 2: columns 6-7 are 0.1, 0.0.*distortion"):
        read_trajectory(path, image_hw=(H, W))


# --------------------------------------------------------------------------- nerfstudio intrinsics


def _transforms(tmp_path, top: dict, frames: list[dict] | None = None, n: int = 2):
    frames = frames if frames is not None else [{} for _ in range(n)]
    data = dict(top, frames=[dict(fr, file_path=f"images/{i}.png", transform_matrix=GL_OK)
                             for i, fr in enumerate(frames)])
    return write_text(tmp_path, "transforms.json", json.dumps(data))


def test_blender_camera_angle_x_gives_the_focal_length(tmp_path):
    # NeRF synthetic "lego" transforms_train.json: camera_angle_x 0.6911112070083618, 800x800
    # images, no w/h in the file. Blender / nerfstudio blender_dataparser:
    # focal = 0.5 * W / tan(0.5 * camera_angle_x) (= 1111.11 px, the well-known lego focal),
    # principal point at the image centre; fy = fx (only x given).
    path = _transforms(tmp_path, {"camera_angle_x": 0.6911112070083618})
    traj = read_trajectory(path, image_hw=(800, 800))
    f = 0.5 * 800 / math.tan(0.5 * 0.6911112070083618)
    assert f == pytest.approx(1111.111, abs=1e-3)
    assert torch.allclose(traj.K, intrinsics_matrix(f, f, 400.0, 400.0))
    assert traj.image_hw == (800, 800)
    with pytest.raises(TrajectoryFileError, match=r"top level: camera_angle_x needs the image "
                       r"width.*pass image_hw"):
        read_trajectory(path)


def test_camera_angles_and_fov_keys_with_the_file_size(tmp_path):
    # instant-ngp transforms.json (colmap2nerf.py writes camera_angle_x/_y = 2 atan(w / 2 fl));
    # x_fov/y_fov are degrees (instant-ngp nerf_loader "x_fov is in degrees, camera_angle_x in
    # radians"). The file's w, h are the size the focal lengths are for.
    ax, ay = 1.2, 0.8
    path = _transforms(tmp_path, {"camera_angle_x": ax, "camera_angle_y": ay, "w": W, "h": H})
    traj = read_trajectory(path, image_hw=(10 * H, 10 * W))  # the file's size wins
    fx, fy = W / (2 * math.tan(ax / 2)), H / (2 * math.tan(ay / 2))
    assert torch.allclose(traj.K, intrinsics_matrix(fx, fy, W / 2, H / 2))
    assert traj.image_hw == (H, W)
    path = _transforms(tmp_path, {"y_fov": 50.0, "cx": 300.0, "cy": 170.0, "w": W, "h": H})
    fy = H / (2 * math.tan(math.radians(25.0)))
    assert torch.allclose(read_trajectory(path).K, intrinsics_matrix(fy, fy, 300.0, 170.0))
    # colmap2nerf writes both fl_x and camera_angle_x: consistent values are accepted
    fl = 500.0
    both = {"fl_x": fl, "camera_angle_x": 2 * math.atan(W / (2 * fl)), "w": W, "h": H}
    assert read_trajectory(_transforms(tmp_path, both)).K[0, 0].item() == fl


@pytest.mark.parametrize(
    ("top", "pattern"),
    [
        ({"fl_x": 500.0, "camera_angle_x": 1.0, "w": W, "h": H},
         r"top level: fl_x gives a focal length of 500 px but camera_angle_x gives 5\d\d\.\d+ px"),
        ({"camera_angle_x": 60.0, "w": W, "h": H},
         r"top level: camera_angle_x = 60.0 is not a field of view in \(0, pi\).*radians"),
        ({"x_fov": 0.0, "w": W, "h": H}, r"x_fov = 0.0 is not a field of view in \(0, 180\)"),
        ({"fl_x": "500", "w": W, "h": H}, r"fl_x must be a finite number, got '500'"),
        ({"fl_x": -5.0, "w": W, "h": H}, r"fl_x must be positive"),
    ],
)
def test_focal_sources_that_disagree_or_are_not_angles_are_refused(tmp_path, top, pattern):
    with pytest.raises(TrajectoryFileError, match=pattern):
        read_trajectory(_transforms(tmp_path, top))


PINHOLE = {"fl_x": 500.0, "fl_y": 500.0, "cx": 320.0, "cy": 180.0, "w": W, "h": H}


@pytest.mark.parametrize(
    ("top", "frames", "pattern"),
    [
        # nerfstudio data conventions: "camera_model": "OPENCV_FISHEYE" with k1..k4
        ({**PINHOLE, "camera_model": "OPENCV_FISHEYE", "k1": 0.05, "k2": 0.01, "k3": 0.0,
          "k4": 0.0}, None, r"top level: camera_model 'OPENCV_FISHEYE' is not a pinhole"),
        # a fisheye model is not pinhole even with zero coefficients
        ({**PINHOLE, "camera_model": "OPENCV_FISHEYE"}, None, r"'OPENCV_FISHEYE' is not a pinhole"),
        ({**PINHOLE, "camera_model": "EQUIRECTANGULAR"}, None, r"'EQUIRECTANGULAR' is not a"),
        ({**PINHOLE, "camera_model": "FISHEYE624"}, None, r"'FISHEYE624' is not a pinhole"),
        # OPENCV with distortion (nerfstudio reads k1, k2, k3, k4, p1, p2)
        ({**PINHOLE, "camera_model": "OPENCV", "k1": -0.1, "k2": 0.02, "p1": 0.0, "p2": 0.0},
         None, r"top level: non-zero lens distortion k1=-0.1, k2=0.02 \(camera_model OPENCV\)"),
        ({**PINHOLE, "camera_model": "OPENCV", "p2": 0.001}, None, r"distortion p2=0.001"),
        ({**PINHOLE, "k3": 0.2}, None, r"distortion k3=0.2 \(camera_model \(none\)\)"),
        ({**PINHOLE, "camera_model": "SIMPLE_RADIAL", "k1": 0.1}, None, r"distortion k1=0.1"),
        # instant-ngp colmap2nerf: "is_fisheye": true; f-theta and lat-long lenses
        ({**PINHOLE, "is_fisheye": True}, None, r"top level: is_fisheye is True"),
        ({**PINHOLE, "ftheta_p0": 0.0, "ftheta_p1": 1.0}, None, r"'ftheta_p0' gives an instant"),
        ({**PINHOLE, "latlong": True}, None, r"'latlong' gives an instant-ngp"),
        # per frame: the frame is named
        (PINHOLE, [{}, {"k1": 0.3}], r"frames\[1\]: non-zero lens distortion k1=0.3"),
        (PINHOLE, [{}, {"camera_model": "OPENCV_FISHEYE"}], r"frames\[1\]: camera_model"),
    ],
)
def test_non_pinhole_lenses_are_refused_like_camera_info_with_distortion(
        tmp_path, top, frames, pattern):
    path = _transforms(tmp_path, top, frames)
    with pytest.raises(TrajectoryFileError, match=pattern) as info:
        read_trajectory(path)
    assert "undistort the images to a pinhole camera first" in str(info.value)
    # poses only (trajectory_node): the lens is not looked at
    assert read_trajectory(path, intrinsics=False).K is None


def test_pinhole_models_with_zero_distortion_are_accepted(tmp_path):
    for model in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        top = {**PINHOLE, "camera_model": model, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
               "is_fisheye": False}
        K = read_trajectory(_transforms(tmp_path, top)).K
        assert torch.equal(K, intrinsics_matrix(500.0, 500.0, 320.0, 180.0))


def test_per_frame_intrinsics_override_the_top_level(tmp_path):
    # nerfstudio data conventions: intrinsics "can be placed at the top of the file" or per
    # frame; a frame's own values win (instant-ngp), so differing frames give K [N, 3, 3].
    frames = [{}, {"fl_x": 600.0, "fl_y": 610.0}, {"cx": 300.0}, {"camera_angle_x": 1.0}]
    traj = read_trajectory(_transforms(tmp_path, PINHOLE, frames))
    f3 = W / (2 * math.tan(0.5))  # a frame's focal keys replace all top-level ones: fy = fx
    assert traj.K.shape == (4, 3, 3)
    assert torch.equal(traj.K[0], intrinsics_matrix(500.0, 500.0, 320.0, 180.0))
    assert torch.equal(traj.K[1], intrinsics_matrix(600.0, 610.0, 320.0, 180.0))
    assert torch.equal(traj.K[2], intrinsics_matrix(500.0, 500.0, 300.0, 180.0))
    assert torch.allclose(traj.K[3], intrinsics_matrix(f3, f3, 320.0, 180.0))
    # all frames equal to the top level: one shared K [3, 3]
    same = read_trajectory(_transforms(tmp_path, PINHOLE, [{}, {"fl_x": 500.0}]))
    assert same.K.shape == (3, 3)


# --------------------------------------------------------------------------- consumers


def _png(tmp_path, hw):
    from PIL import Image

    p = tmp_path / "in.png"
    Image.fromarray(np.full((*hw, 3), 128, dtype=np.uint8)).save(p)
    return p


def _re10k_file(tmp_path, n: int):
    """RealEstate10K camera file: the camera moves 0.1 m along +X per frame."""
    lines = ["https://www.youtube.com/watch?v=xyz"]
    for i in range(n):
        pose = [1, 0, 0, -0.1 * i, 0, 1, 0, 0, 0, 0, 1, 0]  # T_cam_world = [I | -c]
        lines.append(f"{33366 * (i + 1)} 0.5 0.9 0.49 0.51 0 0 " + " ".join(map(str, pose)))
    return write_text(tmp_path, "re10k.txt", "\n".join(lines) + "\n")


def _rollout_inputs(tmp_path, trajectory, hw=(64, 96)):
    from mirage_core.rollout.inputs import check_camera
    from mirage_core.rollout.job import RolloutJobConfig, _resolve_inputs

    cfg = RolloutJobConfig(out=tmp_path / "o", tiny=True, image=str(_png(tmp_path, hw)),
                           trajectory=str(trajectory), depth="constant:2")
    traj = _resolve_inputs(cfg).trajectory
    return traj, check_camera(traj, hw)


def test_rollout_scales_realestate10k_intrinsics_to_the_input_image(tmp_path):
    # RealEstate10K download.html: "For an image of resolution width x height pixels, the
    # intrinsics matrix at the actual scale of the image is K = [[width*focal_length_x, 0,
    # width*principal_point_x], [0, height*focal_length_y, height*principal_point_y], ...]".
    traj, K = _rollout_inputs(tmp_path, _re10k_file(tmp_path, 5))
    assert torch.allclose(K, intrinsics_matrix(0.5 * 96, 0.9 * 64, 0.49 * 96, 0.51 * 64))
    assert traj.image_hw == (64, 96)
    assert traj.T_world_cam[3, :3, 3].tolist() == pytest.approx([0.3, 0.0, 0.0])


def test_rollout_uses_camera_angle_x_not_the_default_fov(tmp_path):
    # A Blender-style transforms.json (camera_angle_x only): fx = W / (2 tan(angle / 2)), fy =
    # fx, principal point at the centre; not the 60 deg default of --fov-deg.
    path = _transforms(tmp_path, {"camera_angle_x": 0.6911112070083618}, n=3)
    _, K = _rollout_inputs(tmp_path, path)
    f = 96 / (2 * math.tan(0.6911112070083618 / 2))
    assert torch.allclose(K, intrinsics_matrix(f, f, 48.0, 32.0))


def test_rollout_file_with_a_header_and_a_forced_format(tmp_path):
    from mirage_core.rollout.job import RolloutJobConfig

    path = write_text(tmp_path, "gt.txt", TUM_HEADER + TUM_OK + "1.0 0 0 1 0 0 0 1\n")
    traj, K = _rollout_inputs(tmp_path, path)
    assert traj.T_world_cam[1, 2, 3].item() == 1.0 and K[0, 2].item() == 48.0  # --fov-deg
    with pytest.raises(ValueError, match="valid formats: tum, kitti"):
        RolloutJobConfig(tiny=True, trajectory=str(path), trajectory_format="colmap")


def test_trajectory_node_publishes_a_realestate10k_file(tmp_path, ros_probe):
    """source=file with a RealEstate10K file: target_path carries its poses (no image size
    is needed: a nav_msgs/Path has no intrinsics). Real rclpy, the node in /mirage."""
    from nav_msgs.msg import Path
    from rclpy.parameter import Parameter
    from ros_helpers import wait_until

    from mirage_ros.messages import path_to_T
    from mirage_ros.node_base import QOS_LATCHED
    from mirage_ros.nodes.trajectory_node import TrajectoryNode

    def node(params):
        return TrajectoryNode(context=ros_probe.context, namespace="/mirage",
                              parameter_overrides=[Parameter(k, value=v)
                                                   for k, v in params.items()])

    path = _re10k_file(tmp_path, 33)
    ros_probe.add(node({"source": "file", "file": str(path), "chunks": 1,
                        "anchor_to_camera": False}))
    sent = []
    ros_probe.node.create_subscription(Path, "target_path", sent.append, QOS_LATCHED)
    assert wait_until(lambda: bool(sent), 10.0)
    (msg,) = sent
    T, stamps = path_to_T(msg)
    assert T.shape == (33, 4, 4)
    assert T[10, :3, 3].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert stamps[1] - stamps[0] == 33366 * 1000  # microseconds -> ns
    # a forced format that does not fit names the format and the line
    with pytest.raises(TrajectoryFileError, match=r"\(read as TUM\): line 2: expected 8"):
        node({"source": "file", "file": str(path), "file_format": "tum",
              "anchor_to_camera": False})


def test_json_content_is_detected_without_the_suffix(tmp_path):
    path = tmp_path / "cams.txt"
    path.write_text(json.dumps({"frames": [{"transform_matrix": GL_OK}]}))
    assert detect_format(path) == "nerfstudio" and len(read_trajectory(path)) == 1


@pytest.mark.parametrize("value", [1, "false", "true", None])
def test_is_fisheye_must_be_a_boolean(tmp_path, value):
    """instant-ngp writes ``"is_fisheye": true``; a string "false" is truthy in Python and
    must neither read as a fisheye nor pass silently."""
    data = {**PINHOLE, "frames": [{"transform_matrix": np.eye(4).tolist(),
                                   "is_fisheye": value}]}
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TrajectoryFileError, match=r"frames\[0\]: is_fisheye must be a JSON "
                       r"boolean"):
        read_trajectory(path)
