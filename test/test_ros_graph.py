"""The ROS 2 graph run for real: node processes over DDS on loopback (one domain per test,
50..99), started by the same code as ``mirage launch`` from the same YAML files.

* ``sim_rollout``: simulated camera + trajectory + memory + generator (+ recorder); the test
  receives the generated frames on ``/mirage/image`` and reads the recorded bag back.
* ``planner``: the ``imagine`` action (feedback, result, a refused path, cancellation) and the
  memory node killed with SIGKILL and restarted (its cache comes back from the autosave file).
* ``bag_replay``: a bag of a simulated camera replayed through the graph, scored per frame.

Sizes are cut for CPU time: tiny random weights, 2 UniPC steps, 1 chunk, 64 x 96 images. The
rclpy variant of these tests needs a ROS 2 machine (rclpy is not installable here): it is
skipped here and runs where ``import rclpy`` works, with MIRAGE_ROS_BACKEND=rclpy.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch

from mirage_ros.launch_specs import LAUNCHES
from mirage_ros.launcher import Launch, parse_launch_args
from mirage_ros.node_api import rclpy_available

SMALL = ["tiny:=true", "steps:=2", "sim_camera.width:=96", "sim_camera.height:=64",
         "sim_camera.rate_hz:=5.0"]

BACKENDS = [
    "dds",
    pytest.param("rclpy", marks=pytest.mark.skipif(
        not rclpy_available(), reason="rclpy is not installable here; runs on ROS 2 machines")),
]


def _domain(name: str) -> int:
    return 50 + zlib.crc32(name.encode()) % 50


def _launch(name: str, items: list[str], domain: int, backend: str, out) -> Launch:
    env = dict(os.environ, MIRAGE_ROS_BACKEND=backend)
    return Launch(LAUNCHES[name], parse_launch_args(LAUNCHES[name], items), domain_id=domain,
                  out=out, env=env, grace_s=10.0)


class _Probe:
    """The test's own DDS node: subscriptions, clients, action clients."""

    def __init__(self, domain: int):
        from mirage_ros.dds import DdsContext
        from mirage_ros.interfaces import make_typestore
        from mirage_ros.messages import RosbagsMessages

        ts = make_typestore()
        self.ctx = DdsContext(domain, typestore=ts)
        self.node = self.ctx.create_node("probe", "/mirage")
        self.msgs = RosbagsMessages(ts)
        self.ctx.spin_in_thread()

    def close(self):
        self.ctx.shutdown()


def _log(out: io.StringIO) -> str:
    return out.getvalue()[-6000:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sim_rollout_graph_publishes_frames_and_records_a_bag(tmp_path, request, backend):
    from mirage_ros.bag import list_topics, read_messages
    from mirage_ros.dds import QOS_RELIABLE
    from mirage_ros.image_conversion import image_to_rgb

    domain = _domain(request.node.name)
    probe = _Probe(domain)
    frames, chunks = [], []
    probe.node.create_subscription("sensor_msgs/msg/Image", "image",
                                   lambda m: frames.append(image_to_rgb(m)),
                                   QOS_RELIABLE.with_depth(100))
    probe.node.create_subscription("mirage/msg/ChunkInfo", "chunk_info", chunks.append,
                                   QOS_RELIABLE)
    out = io.StringIO()
    bag = tmp_path / "rollout_bag"
    launch = _launch("sim_rollout", [*SMALL, "chunks:=1", f"record:={bag}"], domain, backend,
                     out)
    try:
        code = launch.wait(timeout_s=240)
    finally:
        launch.shutdown()
        time.sleep(0.2)
        probe.close()
    assert code == 0, _log(out)
    # 1 chunk = 32 new frames of the camera's size, one ChunkInfo
    assert len(frames) == 32, _log(out)
    assert frames[0].shape == (64, 96, 3)
    assert len(chunks) == 1 and chunks[0].num_frames == 32 and chunks[0].chunks_total == 1
    assert chunks[0].denoise_s > 0 and chunks[0].update_s > 0
    # the bag: generated frames, poses, ground truth along the path, memory stats
    topics = list_topics(bag)
    assert topics["/mirage/image"][1] == 32, topics
    assert topics["/mirage/gt/image"][1] == 33, topics
    assert topics["/mirage/chunk_info"][1] == 1
    assert topics["/mirage/memory_stats"][1] >= 1
    stats = [m.msg for m in read_messages(bag, ["/mirage/memory_stats"])]
    assert stats[-1].initialized and stats[-1].num_points > 0


def _goal(probe, n_poses: int, T0: torch.Tensor, K, hw):
    from mirage_core.trajectory import make_trajectory
    from mirage_ros.messages import camera_info_msg, path_from_T

    traj = make_trajectory("orbit_left", n_poses, fps=24.0)
    T = T0 @ traj.T_world_cam
    stamps = (np.arange(n_poses) * 1e9 / 24).astype(np.int64) + 10**18
    m = probe.msgs
    return m.new("mirage/action/Imagine_Goal", path=path_from_T(m, T, stamps, "world"),
                 camera_info=camera_info_msg(m, K, hw), prompt="", steps=0)


def test_planner_imagine_action_and_memory_restart(tmp_path, request):
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.sim.pybullet_scene import PyBulletScene
    from mirage_ros.dds.action import GoalStatus

    domain = _domain(request.node.name)
    probe = _Probe(domain)
    memfile = tmp_path / "memory.safetensors"
    out = io.StringIO()
    launch = _launch("planner", [*SMALL, f"memory_file:={memfile}", "memory.autosave_every:=1"],
                     domain, "dds", out)
    try:
        client = probe.node.create_action_client("mirage/action/Imagine", "imagine")
        assert client.wait_for_server(60.0), _log(out)
        with PyBulletScene("room") as scene:
            T0 = torch.from_numpy(scene.default_start_pose())
        K = intrinsics_from_fov(96, 64, 60.0)
        # goals are rejected until the models are loaded; then one succeeds with feedback
        feedback = []
        deadline = time.monotonic() + 120
        while True:
            h = client.send_goal(_goal(probe, 33, T0, K, (64, 96)), feedback.append,
                                 timeout_sec=10.0)
            if h.accepted or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert h.accepted, _log(out)
        status, result = h.get_result(timeout_sec=180.0)
        assert status == GoalStatus.STATUS_SUCCEEDED, (result.message, _log(out))
        assert result.success and result.num_frames == 32 and result.total_s > 0
        assert [f.feedback.chunks_total for f in feedback] == [1]
        assert feedback[-1].feedback.frames_done == 32

        # a path with a non-unit quaternion: accepted, then aborted with the reason
        bad = _goal(probe, 33, T0, K, (64, 96))
        bad.path.poses[5].pose.orientation.w = 5.0
        h = client.send_goal(bad, timeout_sec=10.0)
        status, result = h.get_result(timeout_sec=30.0)
        assert status == GoalStatus.STATUS_ABORTED and "path pose 5" in result.message

        # cancel a 3-chunk goal after its first chunk: it stops between chunks
        feedback.clear()
        h = client.send_goal(_goal(probe, 97, T0, K, (64, 96)), feedback.append,
                             timeout_sec=10.0)
        assert h.accepted
        t_end = time.monotonic() + 120
        while not feedback and time.monotonic() < t_end:
            time.sleep(0.05)
        h.cancel_goal(timeout_sec=10.0)
        status, result = h.get_result(timeout_sec=120.0)
        assert status == GoalStatus.STATUS_CANCELED, _log(out)
        assert result.num_frames in (32, 64) and "cancelled" in result.message

        # the memory node, killed without warning, comes back with its cache
        stats_cli = probe.node.create_client("mirage/srv/MemoryFile", "memory_file")
        assert stats_cli.wait_for_service(10.0)
        points_before = _memory_points(probe)
        assert points_before > 0
        launch.procs["memory"].send_signal(signal.SIGKILL)
        launch.procs["memory"].wait(10)
        restarted = _restart_memory(launch, domain, memfile)
        try:
            assert _memory_points(probe, timeout_s=60.0) == points_before, _log(out)
        finally:
            restarted.send_signal(signal.SIGINT)
            restarted.wait(20)
    finally:
        launch.shutdown()
        probe.close()


def _memory_points(probe, timeout_s: float = 20.0) -> int:
    """num_points from the latched memory_stats (a fresh subscription gets the last one)."""
    from mirage_ros.dds import QOS_LATCHED

    got = []
    sub = probe.node.create_subscription("mirage/msg/MemoryStats", "memory_stats", got.append,
                                         QOS_LATCHED)
    t_end = time.monotonic() + timeout_s
    while not got and time.monotonic() < t_end:
        time.sleep(0.05)
    probe.node.destroy_subscription(sub)
    assert got, "no memory_stats"
    return int(got[-1].num_points)


def _restart_memory(launch: Launch, domain: int, memfile) -> subprocess.Popen:
    from mirage_ros.launch_specs import config_file

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), MIRAGE_ROS_BACKEND="dds")
    return subprocess.Popen(
        [sys.executable, "-m", "mirage_ros.nodes.memory_node", "--ros-args", "-r",
         "__node:=memory", "-r", "__ns:=/mirage", "--params-file",
         str(config_file("planner")), "-p", f"autosave_path:={memfile}", "-p",
         "autosave_every:=1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_bag_replay_graph_scores_a_simulated_bag(tmp_path, request):
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.sim.pybullet_scene import PyBulletScene
    from mirage_core.trajectory import Trajectory, make_trajectory
    from mirage_ros.bag import write_sim_bag

    # a bag of the simulated room along a motion, poses in the simulator's world frame, so
    # the generator's sim depth is the ground truth of the same scene
    H, W = 64, 96
    K = intrinsics_from_fov(W, H, 60.0)
    rel = make_trajectory("push_in", 40, fps=24.0)
    with PyBulletScene("room") as scene:
        T0 = torch.from_numpy(scene.default_start_pose())
        traj = Trajectory(T0 @ rel.T_world_cam, rel.timestamps, K, (H, W))
        bag = tmp_path / "camera_bag"
        write_sim_bag(bag, traj, scene, T_sim_world=np.eye(4))
    domain = _domain(request.node.name)
    out = io.StringIO()
    report_dir = tmp_path / "report"
    launch = _launch("bag_replay", ["tiny:=true", "steps:=2", "depth:=sim", f"bag:={bag}",
                                    f"out:={report_dir}"], domain, "dds", out)
    try:
        code = launch.wait(timeout_s=240)
    finally:
        launch.shutdown()
    assert code == 0, _log(out)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["counts"]["matched"] == 32 and report["counts"]["missing_generated"] == 0
    assert report["summary"]["psnr"]["n"] == 32
    assert len(report["chunks"]) == 1 and report["chunks"][0]["timing"]["denoise_s"] > 0
    assert (report_dir / "report.png").stat().st_size > 0
    assert report["extra"]["frames"] == 33 and report["extra"]["dropped_no_pose"] == 0


def test_a_bad_launch_ends_with_a_clear_error(tmp_path, request):
    # the generator without weights refuses to start: exit code 2, reason in the log,
    # the other nodes are stopped
    domain = _domain(request.node.name)
    out = io.StringIO()
    launch = _launch("planner", ["sim_camera:=false"], domain, "dds", out)
    code = launch.wait(timeout_s=60)
    assert code == 2
    assert "no weights" in out.getvalue()
    assert all(p.poll() is not None for p in launch.procs.values())


