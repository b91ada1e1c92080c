"""rosbag2 files (mirage_ros.bag) and the replay report (mirage_ros.replay_report)."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("rosbags")

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.eval.image_metrics import psnr, uint8_to_float
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.trajectory import make_trajectory
from mirage_ros.bag import (
    DEFAULT_START_NS,
    BagError,
    BagRecorder,
    BagStreamWarning,
    SimBagTopics,
    list_topics,
    main,
    read_camera_stream,
    read_messages,
    write_sim_bag,
)
from mirage_ros.image_conversion import array_to_image
from mirage_ros.interfaces import make_typestore
from mirage_ros.messages import RosbagsMessages, pose_from_T, tensor_to_latent
from mirage_ros.replay_report import REPORT_SCHEMA, write_replay_report

NS = 10**9
T0 = 1_600_000_000 * NS


@pytest.fixture(scope="module")
def ts():
    return make_typestore()


@pytest.fixture(scope="module")
def m(ts):
    return RosbagsMessages(ts)


def _header(m, stamp_ns, frame_id="cam"):
    t = m.new("builtin_interfaces/msg/Time", sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return m.new("std_msgs/msg/Header", stamp=t, frame_id=frame_id)


def _image(m, arr, enc, stamp_ns):
    return array_to_image(arr, enc, m.cls("sensor_msgs/msg/Image"), _header(m, stamp_ns))


def _info(m, stamp_ns, K, hw):
    P = np.zeros((3, 4))
    P[:, :3] = K
    return m.new("sensor_msgs/msg/CameraInfo", header=_header(m, stamp_ns), height=hw[0],
                 width=hw[1], distortion_model="plumb_bob", d=np.zeros(5),
                 k=np.asarray(K, np.float64).reshape(-1), r=np.eye(3).reshape(-1),
                 p=P.reshape(-1))


def _pose(m, stamp_ns, T):
    return m.new("geometry_msgs/msg/PoseStamped", header=_header(m, stamp_ns, "world"),
                 pose=pose_from_T(m, torch.as_tensor(T, dtype=torch.float64)))


def _T(i):
    """A distinct valid pose per frame index."""
    c, s = math.cos(0.1 * i), math.sin(0.1 * i)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = [0.1 * i, -0.05 * i, 0.2 * i]
    return T


K8 = np.array([[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1]])


# ------------------------------------------------------------------------------ recorder/reader
def test_round_trip_standard_and_mirage_types_with_only_the_bags_definitions(tmp_path, m, ts):
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability

    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    latent = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    chunk = m.new("mirage/msg/ChunkInfo", header=_header(m, T0), chunk_index=2, chunks_total=5,
                  first_frame=33, num_frames=32, denoise_s=1.5, hole_rate=0.25)
    stats = m.new("mirage/msg/MemoryStats", header=_header(m, T0), kind="latent",
                  merge_policy="fill_empty", initialized=True, num_points=1234)
    path = tmp_path / "bag"
    with BagRecorder(path, latched_topics=["/memory/stats"]) as rec:
        rec.write("cam/image", _image(m, rgb, "rgb8", T0), T0)
        rec.write("/cam/pose", _pose(m, T0, _T(3)), T0 + 1)
        rec.write("/cam/info", _info(m, T0, K8, (4, 6)), T0 + 2)
        rec.write("/memory/readout", tensor_to_latent(m, latent, _header(m, T0)), T0 + 3)
        rec.write("/memory/chunk", chunk, T0 + 4)
        rec.write("memory/stats", stats, T0 + 5)
        rec.write("/memory/stats", stats, T0 + 6)
        assert rec.counts == {"/cam/image": 1, "/cam/pose": 1, "/cam/info": 1,
                              "/memory/readout": 1, "/memory/chunk": 1, "/memory/stats": 2}
    assert (path / "metadata.yaml").is_file() and list(path.glob("*.mcap"))

    got = list(read_messages(path))
    assert [(g.topic, g.stamp_ns) for g in got] == [
        ("/cam/image", T0), ("/cam/pose", T0 + 1), ("/cam/info", T0 + 2),
        ("/memory/readout", T0 + 3), ("/memory/chunk", T0 + 4), ("/memory/stats", T0 + 5),
        ("/memory/stats", T0 + 6)]
    img, pose, info, lat, ch, st, _ = (g.msg for g in got)
    # the messages are instances of the bag's own types, not of our type store
    assert type(img) is not ts.types["sensor_msgs/msg/Image"]
    assert got[3].msgtype == "mirage/msg/LatentTensor"
    assert img.encoding == "rgb8" and np.array_equal(np.asarray(img.data).reshape(4, 6, 3), rgb)
    from mirage_ros.messages import latent_to_tensor, pose_to_T

    torch.testing.assert_close(pose_to_T(pose.pose), torch.from_numpy(_T(3)), rtol=0, atol=1e-12)
    assert np.array_equal(np.asarray(info.k).reshape(3, 3), K8) and info.height == 4
    assert torch.equal(latent_to_tensor(lat), latent)
    assert (ch.chunk_index, ch.first_frame, ch.num_frames, ch.denoise_s) == (2, 33, 32, 1.5)
    assert ch.hole_rate == pytest.approx(0.25)
    assert (st.kind, st.merge_policy, st.initialized, st.num_points) == (
        "latent", "fill_empty", True, 1234)

    # custom definitions are stored in the bag (ros2 bag can decode them without our package),
    # and the latched topic is offered TRANSIENT_LOCAL
    with AnyReader([path]) as r:  # no default type store: the bag's definitions or nothing
        conns = {c.topic: c for c in r.connections}
        decoded = [r.deserialize(raw, c.msgtype) for c, _, raw in r.messages()]
    assert torch.equal(latent_to_tensor(decoded[3]), latent) and decoded[4].first_frame == 33
    assert "uint32[] shape" in conns["/memory/readout"].msgdef.data
    assert "float32 hole_rate" in conns["/memory/chunk"].msgdef.data
    durab = {t: c.ext.offered_qos_profiles[0].durability for t, c in conns.items()}
    assert durab["/memory/stats"] == QosDurability.TRANSIENT_LOCAL
    assert durab["/cam/image"] == QosDurability.VOLATILE
    assert list_topics(path)["/memory/stats"] == ("mirage/msg/MemoryStats", 2)


def test_recorder_refuses_overwrite_and_type_changes(tmp_path, m):
    path = tmp_path / "bag"
    with BagRecorder(path) as rec:
        rec.write("/a", _pose(m, T0, np.eye(4)), T0)
        with pytest.raises(BagError, match="carries geometry_msgs/msg/PoseStamped"):
            rec.write("/a", _info(m, T0, K8, (4, 6)), T0)
        with pytest.raises(BagError, match="non-negative integer"):
            rec.write("/a", _pose(m, T0, np.eye(4)), -1)
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        BagRecorder(path)
    assert sorted(p.name for p in path.iterdir()) == before
    assert [g.topic for g in read_messages(path)] == ["/a"]


def test_missing_corrupt_and_unknown_topic_errors(tmp_path, m):
    with pytest.raises(FileNotFoundError, match="no rosbag2 bag"):
        read_messages(tmp_path / "nope")
    path = tmp_path / "bag"
    with BagRecorder(path) as rec:
        rec.write("/a", _pose(m, T0, np.eye(4)), T0)
    with pytest.raises(BagError, match=r"/b not in bag .* it has: /a \[geometry_msgs/msg/PoseS"):
        read_messages(path, ["/b"])
    assert len(list(read_messages(path, ["a"]))) == 1  # relative name = fully qualified one
    mcap = next(path.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:100])  # truncated recording
    with pytest.raises(BagError, match="cannot read bag"):
        list(read_messages(path))
    (path / "metadata.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="ros2 bag reindex"):
        read_messages(path)


def test_bag_without_stored_definitions_uses_project_types(tmp_path, m):
    # Humble's sqlite3 recordings store no message definitions: simulate one by deleting them
    import sqlite3

    path = tmp_path / "humble_db3"
    with BagRecorder(path, storage="sqlite3") as rec:
        rec.write("/stats", m.new("mirage/msg/MemoryStats", kind="rgb_cache"), T0)
    db = sqlite3.connect(next(path.glob("*.db3")))
    db.execute("DELETE FROM message_definitions")
    db.commit()
    db.close()
    (got,) = read_messages(path)
    assert (got.topic, got.msgtype, got.msg.kind) == ("/stats", "mirage/msg/MemoryStats",
                                                      "rgb_cache")


# ------------------------------------------------------------------------------ camera stream
def _frame(i, hw=(4, 6)):
    return np.full((*hw, 3), (10 * i, 100, 200 - 10 * i), np.uint8)


def test_camera_stream_pairs_by_header_stamp_and_reports_drops(tmp_path, m):
    """Six images 100 ms apart: image 4 has no pose, image 5 only a non-unit-quaternion pose,
    images 2 and 3 are recorded in swapped order, image 1 is bgr8; poses lag 5 ms."""
    stamp = [T0 + i * NS // 10 for i in range(6)]
    path = tmp_path / "bag"
    with BagRecorder(path) as rec:
        rec.write("/cam/info", _info(m, stamp[0], K8, (4, 6)), stamp[0])
        for k, i in enumerate((0, 1, 3, 2, 4, 5)):
            received = stamp[k] + 1_000_000  # log (receive) times increase; header stamps not
            if i == 1:
                img = _image(m, _frame(i)[..., ::-1].copy(), "bgr8", stamp[i])
            else:
                img = _image(m, _frame(i), "rgb8", stamp[i])
            rec.write("/cam/image", img, received)
            if i < 4:
                rec.write("/cam/pose", _pose(m, stamp[i] + 5_000_000, _T(i)), received)
        bad = _pose(m, stamp[5], _T(5))
        bad.pose.orientation.w = 2.0
        rec.write("/cam/pose", bad, stamp[5] + 1_000_000)
    with pytest.warns(BagStreamWarning) as rec_w:
        cs = read_camera_stream(path, "cam/image", "cam/pose", "cam/info", max_dt_s=0.02)
    assert len(cs.frames) == 4 and cs.frames.shape == (4, 4, 6, 3)
    assert cs.stamps_ns.tolist() == stamp[:4]  # sorted
    assert [int(f[0, 0, 0]) for f in cs.frames] == [0, 10, 20, 30]  # bgr8 converted to RGB
    np.testing.assert_allclose(cs.T_world_cam, np.stack([_T(i) for i in range(4)]), atol=1e-12)
    assert cs.T_world_cam.dtype == np.float64 and cs.depth is None
    assert (cs.num_images, cs.dropped_no_pose, cs.bad_poses) == (6, 2, 1)
    assert cs.out_of_order == {"/cam/image": 1, "/cam/pose": 1}
    assert cs.pose_frame_id == "world" and cs.image_hw == (4, 6)
    np.testing.assert_array_equal(cs.K, K8)
    messages = " | ".join(str(w.message) for w in rec_w)
    assert "2 image(s) dropped: no valid pose" in messages
    assert "1 pose message(s) dropped" in messages and "out-of-order" in messages
    assert cs.warnings and all(w in messages for w in cs.warnings)
    # a tolerance smaller than the 5 ms lag leaves no frame: a clear error, not an empty result
    with pytest.warns(BagStreamWarning), pytest.raises(BagError, match="no posed frames"):
        read_camera_stream(path, "/cam/image", "/cam/pose", "/cam/info", max_dt_s=0.004)


def test_camera_stream_depth_16uc1_and_refusals(tmp_path, m):
    stamp = [T0 + i * NS // 10 for i in range(3)]
    path = tmp_path / "bag"
    with BagRecorder(path) as rec:
        rec.write("/info", _info(m, stamp[0], K8, (4, 6)), stamp[0])
        for i in range(3):
            rec.write("/img", _image(m, _frame(i), "rgb8", stamp[i]), stamp[i])
            rec.write("/pose", _pose(m, stamp[i], _T(i)), stamp[i])
            if i != 1:  # frame 1 has no depth
                mm = np.full((4, 6), 1000 * (i + 1), np.uint16)
                rec.write("/depth", _image(m, mm, "16UC1", stamp[i]), stamp[i])
            rec.write("/mono", _image(m, np.zeros((4, 6), np.uint8), "mono8", stamp[i]), stamp[i])
        rec.write("/info2", _info(m, stamp[0], K8, (4, 6)), stamp[0])
        rec.write("/info2", _info(m, stamp[1], K8 * [[2], [2], [1]], (4, 6)), stamp[1])
        rec.write("/info3", _info(m, stamp[0], K8, (5, 6)), stamp[0])
    with pytest.warns(BagStreamWarning, match="no depth image"):
        cs = read_camera_stream(path, "/img", "/pose", "/info", depth_topic="/depth")
    assert cs.depth.dtype == np.float32 and cs.depth.shape == (2, 4, 6)
    assert cs.depth[:, 0, 0].tolist() == [1.0, 3.0] and cs.dropped_no_depth == 1
    assert cs.stamps_ns.tolist() == [stamp[0], stamp[2]]
    with pytest.raises(BagError, match="rgb8 or bgr8 image, got 'mono8'"):
        read_camera_stream(path, "/mono", "/pose", "/info")
    with pytest.raises(BagError, match="changes over the bag"):
        read_camera_stream(path, "/img", "/pose", "/info2")
    with pytest.raises(BagError, match="CameraInfo says 5x6"):
        read_camera_stream(path, "/img", "/pose", "/info3")
    with pytest.raises(BagError, match="/nope not in bag"):
        read_camera_stream(path, "/img", "/pose", "/nope")
    with pytest.raises(BagError, match="/img carries sensor_msgs/msg/Image; expected geometry"):
        read_camera_stream(path, "/img", "/img", "/info")


# ------------------------------------------------------------------------------ simulated bag
@pytest.fixture(scope="module")
def scene():
    pytest.importorskip("pybullet")
    from mirage_core.sim import PyBulletScene

    s = PyBulletScene("room", seed=0)
    yield s
    s.close()


def test_write_sim_bag_round_trips_trajectory_and_renders(tmp_path, scene):
    H, W = 64, 96
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 4, speed=5.0, fps=10.0, K=K, image_hw=(H, W))
    path = tmp_path / "sim"
    counts = write_sim_bag(path, traj, scene)
    topics = SimBagTopics()
    assert counts == {topics.image: 4, topics.depth: 4, topics.camera_info: 4, topics.pose: 4}
    cs = read_camera_stream(path, topics.image, topics.pose, topics.camera_info,
                            depth_topic=topics.depth, max_dt_s=0.0)
    assert (cs.dropped_no_pose, cs.bad_poses, cs.out_of_order, cs.warnings) == (0, 0, {}, [])
    np.testing.assert_allclose(cs.T_world_cam, traj.T_world_cam.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cs.K, K.numpy())
    expected_stamps = [DEFAULT_START_NS + round(float(t) * NS) for t in traj.timestamps]
    assert cs.stamps_ns.tolist() == expected_stamps and cs.pose_frame_id == "world"
    T_sim_world = scene.default_start_pose()
    for i in range(len(traj)):
        ref = scene.render(T_sim_world @ traj.T_world_cam[i].numpy(), K.numpy(), H, W,
                           time=float(traj.timestamps[i]))
        np.testing.assert_array_equal(cs.frames[i], ref.rgb)
        np.testing.assert_array_equal(cs.depth[i], np.where(np.isfinite(ref.depth), ref.depth, 0))
    assert cs.frames.std() > 10  # a real scene, not a blank image
    back = cs.to_trajectory()
    torch.testing.assert_close(back.timestamps, traj.timestamps, rtol=0, atol=1e-9)


def test_sim_bag_cli(tmp_path, capsys):
    pytest.importorskip("pybullet")
    out = tmp_path / "cli_bag"
    assert main(["sim", str(out), "--frames", "2", "--height", "24", "--width", "32",
                 "--no-depth"]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/camera/image  sensor_msgs/msg/Image  2" in text and "/camera/depth" not in text


# ------------------------------------------------------------------------------ replay report
def _noisy(frame, amp, seed):
    rng = np.random.default_rng(seed)
    return np.clip(frame.astype(int) + rng.integers(-amp, amp + 1, frame.shape), 0, 255).astype(
        np.uint8)


def test_replay_report_json_png_and_unmatched_frames(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    gt = {i: rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for i in range(10)}
    gen = {i: _noisy(gt[i], 5 + 3 * i, i) for i in range(1, 9) if i != 5}
    gen[0] = gt[0].copy()  # identical: PSNR +inf
    gen[12] = gt[9].copy()  # no ground truth
    chunks = [{"chunk": 0, "rgb_frames": [0, 4], "time_s": {"denoise": 1.5}},
              {"chunk_index": 1, "first_frame": 5, "num_frames": 5, "denoise_s": np.float64(2)},
              {"note": "no range"}]
    rep = write_replay_report(tmp_path / "r", gt, gen, chunks, {"bag": "x"})
    on_disk = json.loads((tmp_path / "r" / "report.json").read_text())
    assert on_disk == rep and rep["schema"] == REPORT_SCHEMA
    assert rep["counts"] == {"gt": 10, "generated": 9, "matched": 8, "missing_generated": 2,
                             "unmatched_generated": 1, "identical": 1, "resized": 0}
    assert rep["missing_generated"] == [5, 9] and rep["unmatched_generated"] == [12]
    frames = {f["key"]: f for f in rep["frames"]}
    assert sorted(frames) == [0, 1, 2, 3, 4, 6, 7, 8]
    assert frames[0]["psnr"] is None and frames[0]["ssim"] == pytest.approx(1.0)
    want = psnr(uint8_to_float(gt[3][None]), uint8_to_float(gen[3][None])).item()
    assert frames[3]["psnr"] == pytest.approx(want)
    assert [frames[k]["chunk"] for k in (0, 4, 6)] == [0, 0, 1]
    finite = [frames[k]["psnr"] for k in frames if k != 0]
    assert rep["summary"]["psnr"]["n"] == 7
    assert rep["summary"]["psnr"]["mean"] == pytest.approx(np.mean(finite))
    assert rep["summary"]["psnr"]["median"] == pytest.approx(np.median(finite))
    c0, c1, c2 = rep["chunks"]
    assert (c0["chunk"], c0["frames"], c0["matched"]) == (0, [0, 4], 5)
    assert (c1["chunk"], c1["frames"], c1["matched"]) == (1, [5, 9], 3)
    assert c1["ssim_mean"] == pytest.approx(np.mean([frames[k]["ssim"] for k in (6, 7, 8)]))
    assert c1["timing"]["denoise_s"] == 2.0 and c2["frames"] is None and c2["psnr_mean"] is None
    assert rep["extra"] == {"bag": "x"}
    png = (tmp_path / "r" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_replay_report_resolution_mismatch(tmp_path):
    gt = {0: np.full((32, 48, 3), 77, np.uint8), 1: np.full((32, 48, 3), 10, np.uint8)}
    gen = {0: np.full((16, 24, 3), 77, np.uint8), 1: np.full((64, 96, 3), 10, np.uint8)}
    with pytest.raises(ShapeError, match=r"frame 0: ground truth is 32x48, generated is 16x24 "
                                         r"\(2 of 2 .*resize='gt'"):
        write_replay_report(tmp_path / "a", gt, gen, [], plot=False)
    assert not (tmp_path / "a" / "report.json").exists()
    for mode in ("gt", "generated"):  # constant images stay equal under area/bilinear resizing
        rep = write_replay_report(tmp_path / mode, gt, gen, [], resize=mode, plot=False)
        assert rep["counts"]["resized"] == 2 and rep["counts"]["identical"] == 2
        assert rep["resize"] == mode and not (tmp_path / mode / "report.png").exists()
    with pytest.raises(MirageInputError, match="resize must be one of"):
        write_replay_report(tmp_path / "b", gt, gen, [], resize="nearest")


def test_replay_report_refuses_no_common_frames_and_bad_values(tmp_path):
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(MirageInputError, match="no frame key in common"):
        write_replay_report(tmp_path, {0: a}, {1: a}, [])
    with pytest.raises(MirageInputError, match=r"frame 0: .*outside"):
        write_replay_report(tmp_path, {0: a}, {0: np.full((16, 16, 3), 2.0)}, [])
    with pytest.raises(ShapeError, match=r"\[H, W, 3\]"):
        write_replay_report(tmp_path, {0: a[..., 0]}, {0: a[..., 0]}, [])


def test_write_cdr_bytes_equal_write_of_the_message(tmp_path):
    # the recorder's rclpy path writes serialised bytes; they must read back as the message
    from mirage_ros.bag import BagRecorder, read_messages
    from mirage_ros.interfaces import make_typestore
    from mirage_ros.messages import RosbagsMessages

    ts = make_typestore()
    m = RosbagsMessages(ts)
    msg = m.new("mirage/msg/ChunkInfo", chunk_index=3, num_frames=32, denoise_s=1.5)
    with BagRecorder(tmp_path / "b", typestore=ts) as rec:
        rec.write_cdr("/a", "mirage/msg/ChunkInfo", ts.serialize_cdr(msg, msg.__msgtype__), 5)
        rec.write("/a", msg, 6)
    got = [r.msg for r in read_messages(tmp_path / "b")]
    assert [g.chunk_index for g in got] == [3, 3] and got[0].denoise_s == 1.5
