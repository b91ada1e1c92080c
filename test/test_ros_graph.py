"""The ROS 2 graph run for real: node processes on rclpy over Fast DDS on loopback, one domain
per test (test/ros_helpers.py), started by the same code as ``mirage launch`` from the same
YAML files; the test's own node is a plain rclpy node (:class:`ros_helpers.Probe`).

* ``sim_rollout``: simulated camera + trajectory + memory + generator (+ recorder); the test
  receives the generated frames on ``/mirage/image`` and reads the recorded bag back.
* ``planner``: the ``imagine`` action (feedback, result, a refused path, cancellation) and the
  memory node killed with SIGKILL and restarted (its cache comes back from the autosave file).
* ``bag_replay``: a bag of a simulated camera replayed through the graph, scored per frame.

Sizes are cut for CPU time: tiny random weights, 2 UniPC steps, 1 chunk, 64 x 96 images.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from ros_helpers import wait_until

from mirage_core.errors import MirageInputError
from mirage_ros.launch_specs import LAUNCHES
from mirage_ros.launcher import Launch, parse_launch_args
from mirage_ros.node_base import QOS_FRAMES, QOS_LATCHED, QOS_RELIABLE

SMALL = ["tiny:=true", "steps:=2", "sim_camera.width:=96", "sim_camera.height:=64",
         "sim_camera.rate_hz:=5.0"]


def _launch(name: str, items: list[str], domain: int, out) -> Launch:
    return Launch(LAUNCHES[name], parse_launch_args(LAUNCHES[name], items), domain_id=domain,
                  out=out, grace_s=10.0)


def _log(out: io.StringIO) -> str:
    return out.getvalue()[-6000:]


def test_sim_rollout_graph_publishes_frames_and_records_a_bag(tmp_path, ros_probe):
    from mirage.msg import ChunkInfo
    from sensor_msgs.msg import Image

    from mirage_ros.bag import list_topics, read_messages
    from mirage_ros.image_conversion import image_to_rgb

    probe = ros_probe
    frames, chunks = [], []
    probe.node.create_subscription(Image, "image", lambda m: frames.append(image_to_rgb(m)),
                                   QOS_FRAMES)
    probe.node.create_subscription(ChunkInfo, "chunk_info", chunks.append, QOS_RELIABLE)
    out = io.StringIO()
    bag = tmp_path / "rollout_bag"
    launch = _launch("sim_rollout", [*SMALL, "chunks:=1", f"record:={bag}"], probe.domain, out)
    try:
        code = launch.wait(timeout_s=240)
    finally:
        launch.shutdown()
    assert code == 0, _log(out)
    # the generator waited for every subscriber's acknowledgement before it exited
    assert wait_until(lambda: len(frames) >= 32, 5.0), (len(frames), _log(out))
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


def _goal(n_poses: int, T0: torch.Tensor, K, hw):
    from mirage.action import Imagine

    from mirage_core.trajectory import make_trajectory
    from mirage_ros.messages import RclpyMessages, camera_info_msg, path_from_T

    traj = make_trajectory("orbit_left", n_poses, fps=24.0)
    T = T0 @ traj.T_world_cam
    stamps = (np.arange(n_poses) * 1e9 / 24).astype(np.int64) + 10**18
    m = RclpyMessages()
    return Imagine.Goal(path=path_from_T(m, T, stamps, "world"),
                        camera_info=camera_info_msg(m, K, hw), prompt="", steps=0)


class _Goal:
    """An Imagine goal sent by a plain rclpy ActionClient: its handle, feedback and result."""

    def __init__(self, probe, client, goal, timeout_s: float = 10.0) -> None:
        self.probe = probe
        self.feedback: list = []
        self.handle = probe.wait_future(
            client.send_goal_async(goal, feedback_callback=self.feedback.append), timeout_s)

    @property
    def accepted(self) -> bool:
        return bool(self.handle.accepted)

    def result(self, timeout_s: float):
        r = self.probe.wait_future(self.handle.get_result_async(), timeout_s)
        return r.status, r.result

    def cancel(self, timeout_s: float = 10.0):
        return self.probe.wait_future(self.handle.cancel_goal_async(), timeout_s)


def test_planner_imagine_action_and_memory_restart(tmp_path, ros_probe):
    from action_msgs.msg import GoalStatus
    from mirage.action import Imagine
    from rclpy.action import ActionClient

    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.sim.pybullet_scene import PyBulletScene

    probe = ros_probe
    memfile = tmp_path / "memory.safetensors"
    out = io.StringIO()
    launch = _launch("planner", [*SMALL, f"memory_file:={memfile}", "memory.autosave_every:=1"],
                     probe.domain, out)
    try:
        client = ActionClient(probe.node, Imagine, "imagine")
        assert client.wait_for_server(timeout_sec=60.0), _log(out)
        # the graph API (what `ros2 node list` shows) lists every node of the launch
        expected = {("memory", "/mirage"), ("generator", "/mirage"), ("sim_camera", "/mirage")}
        assert wait_until(
            lambda: expected <= set(probe.node.get_node_names_and_namespaces()), 30.0), (
            probe.node.get_node_names_and_namespaces())
        with PyBulletScene("room") as scene:
            T0 = torch.from_numpy(scene.default_start_pose())
        K = intrinsics_from_fov(96, 64, 60.0)
        # goals are rejected until the models are loaded; then one succeeds with feedback
        deadline = time.monotonic() + 120
        while True:
            g = _Goal(probe, client, _goal(33, T0, K, (64, 96)))
            if g.accepted or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert g.accepted, _log(out)
        status, result = g.result(180.0)
        assert status == GoalStatus.STATUS_SUCCEEDED, (result.message, _log(out))
        assert result.success and result.num_frames == 32 and result.total_s > 0
        assert wait_until(lambda: len(g.feedback) >= 1, 5.0)
        assert [f.feedback.chunks_total for f in g.feedback] == [1]
        assert g.feedback[-1].feedback.frames_done == 32

        # a path with a non-unit quaternion: accepted, then aborted with the reason
        bad = _goal(33, T0, K, (64, 96))
        bad.path.poses[5].pose.orientation.w = 5.0
        status, result = _Goal(probe, client, bad).result(30.0)
        assert status == GoalStatus.STATUS_ABORTED and "path pose 5" in result.message
        # a path in another frame than the memory's world: aborted, the reason named
        other = _goal(33, T0, K, (64, 96))
        other.path.header.frame_id = "map"
        status, result = _Goal(probe, client, other).result(30.0)
        assert status == GoalStatus.STATUS_ABORTED and "frame 'map'" in result.message

        # cancel a 3-chunk goal after its first chunk: it stops between chunks
        g = _Goal(probe, client, _goal(97, T0, K, (64, 96)))
        assert g.accepted
        assert wait_until(lambda: bool(g.feedback), 120.0), _log(out)
        g.cancel()
        status, result = g.result(120.0)
        assert status == GoalStatus.STATUS_CANCELED, _log(out)
        assert result.num_frames in (32, 64) and "cancelled" in result.message

        # the memory node, killed without warning, comes back with its cache
        points_before = _memory_points(probe)
        assert points_before > 0
        launch.procs["memory"].send_signal(signal.SIGKILL)
        launch.procs["memory"].wait(10)
        restarted = _restart_memory(probe.domain, memfile)
        try:
            assert _memory_points(probe, timeout_s=60.0) == points_before, _log(out)
        finally:
            restarted.send_signal(signal.SIGINT)
            restarted.wait(20)
    finally:
        launch.shutdown()


def _memory_points(probe, timeout_s: float = 20.0) -> int:
    """num_points from the latched memory_stats (a fresh subscription gets the last one)."""
    from mirage.msg import MemoryStats

    got = []
    sub = probe.node.create_subscription(MemoryStats, "memory_stats", got.append, QOS_LATCHED)
    wait_until(lambda: bool(got), timeout_s)
    probe.node.destroy_subscription(sub)
    assert got, "no memory_stats"
    return int(got[-1].num_points)


def _restart_memory(domain: int, memfile) -> subprocess.Popen:
    from mirage_ros.launch_specs import config_file

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    return subprocess.Popen(
        [sys.executable, "-m", "mirage_ros.nodes.memory_node", "--ros-args", "-r",
         "__node:=memory", "-r", "__ns:=/mirage", "--params-file",
         str(config_file("planner")), "-p", f"autosave_path:={memfile}", "-p",
         "autosave_every:=1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_bag_replay_graph_scores_a_simulated_bag(tmp_path, ros_domain):
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
    out = io.StringIO()
    report_dir = tmp_path / "report"
    launch = _launch("bag_replay", ["tiny:=true", "steps:=2", "depth:=sim", f"bag:={bag}",
                                    f"out:={report_dir}"], ros_domain, out)
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


def test_a_bad_launch_ends_with_a_clear_error(tmp_path, ros_domain):
    # a weights directory that does not exist is refused before any node starts
    missing = tmp_path / "no_such_weights"
    with pytest.raises(MirageInputError, match="is not a directory"):
        _launch("planner", ["sim_camera:=false", f"weights:={missing}"], ros_domain,
                io.StringIO())
    # one that exists but holds no model: the generator refuses to start, exit code 2,
    # reason and path in the log, the other nodes are stopped
    out = io.StringIO()
    empty = tmp_path / "empty_weights"
    empty.mkdir()
    launch = _launch("planner", ["sim_camera:=false", f"weights:={empty}"], ros_domain, out)
    code = launch.wait(timeout_s=60)
    assert code == 2
    assert "cannot load the models" in out.getvalue() and str(empty) in out.getvalue()
    assert all(p.poll() is not None for p in launch.procs.values())


