"""The node layer in one process on real rclpy: parameters from config classes and from the
launch YAML (applied to nodes in a namespace, as the launches run them), launch specs against
the config files, target-path handling, the memory node served to a :class:`RemoteMemory`, and
QoS incompatibility reported by the node base. The multi-process graph tests are in
test_ros_graph.py; every test here has its own DDS domain on loopback (``ros_probe``).
"""

from __future__ import annotations

import time
from dataclasses import MISSING, fields

import numpy as np
import pytest
import torch
import yaml
from ros_helpers import SyncClient, wait_until

from mirage_core.errors import MirageInputError
from mirage_core.geometry import intrinsics_from_fov, se3_inverse
from mirage_core.memory import LatentSpatialMemory, MemoryConfig, Observation
from mirage_ros.launch_specs import LAUNCHES, config_file, model_params
from mirage_ros.launcher import PARAMS_KEY, node_commands, parse_launch_args
from mirage_ros.node_base import QOS_LATCHED, MirageNode, field_descriptions
from mirage_ros.nodes.generator_node import GeneratorNodeConfig
from mirage_ros.nodes.memory_node import MemoryNode, MemoryNodeConfig
from mirage_ros.nodes.recorder_node import RecorderNodeConfig
from mirage_ros.nodes.replay_node import ReplayNodeConfig
from mirage_ros.nodes.sim_camera_node import SimCameraNodeConfig
from mirage_ros.nodes.trajectory_node import TrajectoryNodeConfig, fit_to_chunks
from mirage_ros.remote_memory import MemoryServiceError, RemoteMemory

CONFIGS = {
    "memory_node": MemoryNodeConfig,
    "trajectory_node": TrajectoryNodeConfig,
    "generator_node": GeneratorNodeConfig,
    "sim_camera_node": SimCameraNodeConfig,
    "recorder_node": RecorderNodeConfig,
    "replay_node": ReplayNodeConfig,
}


# ------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_parameter_has_a_description(name):
    cls = CONFIGS[name]
    docs = field_descriptions(cls)
    missing = [f.name for f in fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__} fields without a description: {missing}"


def _node_exec(spec, node_name):
    return next(n.executable for n in spec.nodes if n.name == node_name)


def _yaml_node_name(key: str) -> str:
    """``/**/generator`` -> ``generator`` (the launch YAML keys every node by a namespace
    wildcard: a bare ``generator:`` key is not applied to ``/mirage/generator``)."""
    assert key.startswith("/**/"), f"{key!r}: key node sections as /**/<node> (docs/ros.md)"
    return key[len("/**/"):]


@pytest.mark.parametrize("spec_name", sorted(LAUNCHES))
def test_launch_specs_match_the_config_files_and_classes(spec_name):
    spec = LAUNCHES[spec_name]
    data = yaml.safe_load(config_file(spec_name).read_text())
    node_names = {n.name for n in spec.nodes}
    assert {_yaml_node_name(k) for k in data} <= node_names, f"{spec_name}.yaml: unknown nodes"
    for key, body in data.items():
        node_name = _yaml_node_name(key)
        cls = CONFIGS[_node_exec(spec, node_name)]
        declared = {f.name: f for f in fields(cls)}
        for param, value in body["ros__parameters"].items():
            assert param in declared, f"{spec_name}.yaml: {node_name}.{param} is not declared"
            default = declared[param].default
            if default is not MISSING:  # the YAML value has the parameter's type
                assert type(value) is type(default), (spec_name, node_name, param, value)
    for a in spec.args:
        for node_name, param in a.sets:
            cls = CONFIGS[_node_exec(spec, node_name)]
            f = {f.name: f for f in fields(cls)}[param]
            assert type(a.default) is type(f.default), (a.name, param)
        assert a.description


@pytest.mark.parametrize("spec_name", sorted(LAUNCHES))
def test_launch_yaml_reaches_nodes_in_a_namespace(spec_name, ros_probe, tmp_path):
    """rcl applies config/<spec>.yaml and the launch-argument overrides to ``/mirage/<node>``
    exactly as ``mirage launch`` passes them (the fault this guards: YAML keyed by bare node
    name reaches no namespaced node, so the generator started without its weights)."""
    from mirage_ros.launcher import _overrides_yaml

    spec = LAUNCHES[spec_name]
    values = parse_launch_args(spec, ["steps:=3"])
    overrides = tmp_path / "launch_arguments.yaml"
    overrides.write_text(yaml.safe_dump(_overrides_yaml(spec, values)))
    for name, argv, _ends in node_commands(spec, values, overrides):
        # the node process's own command line: --ros-args -r __node:= -r __ns:= --params-file
        cls = CONFIGS[_node_exec(spec, name)]
        node = MirageNode("unnamed", context=ros_probe.context,
                          cli_args=argv[argv.index("--ros-args"):],
                          automatically_declare_parameters_from_overrides=True)
        try:
            assert node.get_fully_qualified_name() == f"/mirage/{name}"
            data = yaml.safe_load(config_file(spec_name).read_text())
            expected = dict(data.get(f"/**/{name}", {}).get("ros__parameters", {}))
            # what follows from the shipped model (if one ships) beats the config file
            expected.update(model_params(spec, values).get(name, {}))
            for param, value in expected.items():
                if name == "generator" and param == "steps":
                    continue
                assert node.has_parameter(param), (spec_name, name, param)
                assert node.get_parameter(param).value == value, (spec_name, name, param)
            if name == "generator":
                assert node.get_parameter("steps").value == 3  # the launch argument wins
            assert {f.name for f in fields(cls)} >= set(expected)
        finally:
            node.destroy_node()


def test_parse_launch_args_types_and_node_params(tmp_path):
    spec = LAUNCHES["sim_rollout"]
    v = parse_launch_args(spec, ["tiny:=true", "chunks:=2", "weights:=/w", "sim_camera.width:=96"])
    assert v["tiny"] is True and v["chunks"] == 2 and v["weights"] == "/w"
    assert v["motion"] == "loop"  # default
    assert v[PARAMS_KEY] == {"sim_camera": {"width": 96}}
    with pytest.raises(MirageInputError, match="no argument 'bogus'"):
        parse_launch_args(spec, ["bogus:=1"])
    with pytest.raises(MirageInputError, match="chunks must be int"):
        parse_launch_args(spec, ["chunks:=many"])
    # NODE.PARAM:=VALUE is checked against the node's config class before anything starts
    # (rcl would drop a value whose type differs from the YAML's and run on the default)
    v = parse_launch_args(spec, ["generator.steps:=3", "sim_camera.rate_hz:=5"])
    assert v[PARAMS_KEY] == {"generator": {"steps": 3}, "sim_camera": {"rate_hz": 5.0}}
    with pytest.raises(MirageInputError, match=r"generator\.steps must be int, got 'abc'"):
        parse_launch_args(spec, ["generator.steps:=abc"])
    with pytest.raises(MirageInputError, match="node generator has no parameter 'ssteps'"):
        parse_launch_args(spec, ["generator.ssteps:=1"])
    for bad in ("bad-ns", "", "/a//b", "1robot"):
        with pytest.raises(MirageInputError, match="namespace must be a ROS name"):
            parse_launch_args(spec, [f"namespace:={bad}"])
    assert parse_launch_args(spec, ["namespace:=/robot1/mirage"])["namespace"] == "/robot1/mirage"
    cmds = node_commands(spec, v, tmp_path / "o.yaml")
    names = [c[0] for c in cmds]
    assert "recorder" not in names  # record:="" -> not started
    assert dict((c[0], c[2]) for c in cmds)["generator"] is True  # its exit ends the launch
    argv = dict((c[0], c[1]) for c in cmds)["memory"]
    assert argv[argv.index("--ros-args") + 1:][:4] == ["-r", "__node:=memory", "-r",
                                                       "__ns:=/mirage"]


def test_fit_to_chunks_resamples_or_cuts():
    T = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    T[:, 0, 3] = torch.arange(5, dtype=torch.float64)
    out, st = fit_to_chunks(T, np.zeros(5, np.int64), 33, True, 8.0)
    assert out.shape == (33, 4, 4) and len(st) == 33
    torch.testing.assert_close(out[-1], T[-1])
    assert (np.diff(st) > 0).all()
    with pytest.raises(MirageInputError, match="33 are needed"):
        fit_to_chunks(T, np.zeros(5, np.int64), 33, False, 8.0)
    cut, _ = fit_to_chunks(T.repeat(10, 1, 1), np.arange(50, dtype=np.int64) + 1, 33, False, 8.)
    assert cut.shape[0] == 33


def test_path_to_T_refuses_bad_paths():
    from mirage_ros.interfaces import make_typestore
    from mirage_ros.messages import RosbagsMessages, path_from_T, path_to_T

    m = RosbagsMessages(make_typestore())
    T = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    path = path_from_T(m, T, [1, 2, 3], "world")
    Tb, st = path_to_T(path)
    torch.testing.assert_close(Tb, T)
    assert st.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="increase strictly; pose 2"):
        path_to_T(path_from_T(m, T, [1, 3, 2], "world"))
    bad = path_from_T(m, T, [1, 2, 3], "world")
    bad.poses[1].pose.orientation.w = 2.0
    with pytest.raises(ValueError, match="path pose 1"):
        path_to_T(bad)
    with pytest.raises(ValueError, match="no poses"):
        path_to_T(m.new("nav_msgs/msg/Path"))
    # poses in another frame than the memory's world are refused, never used as if they were
    # in it; an empty frame_id means "unspecified"; tf2's leading "/" is ignored
    assert path_to_T(path_from_T(m, T, [1, 2, 3], "/world"), frame_id="world")[0].shape[0] == 3
    assert path_to_T(path_from_T(m, T, [1, 2, 3], ""), frame_id="world")[0].shape[0] == 3
    with pytest.raises(ValueError, match="the path is in frame 'map', not the world frame"):
        path_to_T(path_from_T(m, T, [1, 2, 3], "map"), frame_id="world")
    mixed = path_from_T(m, T, [1, 2, 3], "world")
    mixed.poses[2].header.frame_id = "odom"
    with pytest.raises(ValueError, match="path pose 2 is in frame 'odom'"):
        path_to_T(mixed, frame_id="world")
    assert path_to_T(mixed)[0].shape[0] == 3  # frame_id=None: not checked (bags, tools)


# ------------------------------------------------------------------------------ memory served
class _Served:
    """A MemoryNode on the probe's executor (namespace ``/mirage``) and sync clients of its
    services on the plain rclpy probe node."""

    def __init__(self, probe, params: dict):
        from mirage.srv import ReadMemory, UpdateMemory
        from rclpy.parameter import Parameter

        self.probe = probe
        self.node = probe.add(MemoryNode(context=probe.context, namespace="/mirage",
                                         parameter_overrides=[Parameter(k, value=v)
                                                              for k, v in params.items()]))
        self.read = SyncClient(probe, ReadMemory, "read_memory")
        self.update = SyncClient(probe, UpdateMemory, "update_memory")
        assert self.read.wait_for_service(10.0) and self.update.wait_for_service(10.0)

    def close(self):
        """Stop the node the way run_node does: callbacks first, then release + acks."""
        self.probe.executor.remove_node(self.node)
        self.probe._nodes.remove(self.node)
        self.node.close()
        self.node.destroy_node()


def _observations(n=3, H=64, W=96, C=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(W, H, 60.0)
    obs = []
    for i in range(n):
        T_wc = torch.eye(4, dtype=torch.float64)
        T_wc[0, 3] = 0.1 * i
        depth = 2.0 + torch.rand((H, W), generator=g)
        depth[:5] = 0.0  # some invalid depth
        mask = torch.zeros((H, W), dtype=torch.bool)
        mask[-16:, -16:] = True  # a dynamic object
        obs.append(Observation(depth=depth, K=K, T_cam_world=se3_inverse(T_wc), mask=mask,
                               latent=torch.randn((C, H // 16, W // 16), generator=g)))
    return obs, K


def test_remote_memory_equals_the_in_process_memory(ros_probe):
    """The graph path is exact: the memory node behind its services reads out what an
    in-process memory with the same updates reads out (float32 features, same merge)."""
    served = _Served(ros_probe, {"feature_dtype": "float32"})
    try:
        obs, K = _observations()
        # the rollout frame is offset from the memory's world: poses must be mapped
        T_world_origin = torch.eye(4, dtype=torch.float64)
        T_world_origin[:3, 3] = torch.tensor([1.0, -0.5, 2.0])
        remote = RemoteMemory(served.node.msgs, served.read, served.update, T_world_origin)
        local = LatentSpatialMemory(MemoryConfig(feature_dtype="float32", channels=48))
        for o in obs:
            remote.update(o)
            local.update(o)
        assert remote.num_points == local.num_points > 0
        T_query = torch.stack([o.T_cam_world for o in obs])
        T_query[:, 0, 3] += 0.05
        r_remote = remote.readout(T_query, K, (64, 96))
        r_local = local.readout(T_query, K, (64, 96))
        torch.testing.assert_close(r_remote.zhat, r_local.zhat.float())
        assert torch.equal(r_remote.mask, r_local.mask.bool())
        torch.testing.assert_close(r_remote.depth, r_local.depth.float())
    finally:
        served.close()


def test_memory_services_answer_bad_requests_and_survive(tmp_path, ros_probe):
    save = tmp_path / "mem.safetensors"
    served = _Served(ros_probe, {"autosave_path": str(save)})
    m = served.node.msgs
    try:
        # a readout before any update: refused with a reason, no crash
        remote = RemoteMemory(m, served.read, served.update)
        obs, K = _observations(1)
        with pytest.raises(MemoryServiceError, match="not initialized"):
            remote.readout(obs[0].T_cam_world[None], K, (64, 96))
        # an update whose depth size disagrees with the camera info
        req = m.new("mirage/srv/UpdateMemory_Request", reset=True,
                    depth=m.image(np.ones((8, 8), np.float32), "32FC1"))
        from mirage_ros.messages import camera_info_msg

        req.camera_info = camera_info_msg(m, K, (64, 96))
        req.pose.orientation.w = 0.0  # ROS's default quaternion is (0, 0, 0, 1); zero it
        resp = served.update.call(req, timeout_sec=10.0)
        # an all-zero quaternion is refused first
        assert not resp.success and "quaternion" in resp.message
        from mirage_ros.messages import pose_from_T

        req.pose = pose_from_T(m, torch.eye(4, dtype=torch.float64))
        resp = served.update.call(req, timeout_sec=10.0)
        assert not resp.success and "depth" in resp.message
        # a malformed latent tensor (its shape says more bytes than it has)
        from mirage_ros.messages import tensor_to_latent

        req.depth = m.image(np.ones((64, 96), np.float32), "32FC1")
        req.latent = tensor_to_latent(m, torch.zeros(48, 4, 6))
        req.latent.shape = np.asarray([48, 4, 7], dtype=np.uint32)
        resp = served.update.call(req, timeout_sec=10.0)
        assert not resp.success and "LatentTensor shape" in resp.message
        remote.update(obs[0])
        bad = m.new("mirage/srv/ReadMemory_Request", camera_info=camera_info_msg(m, K, (64, 96)))
        resp = served.read.call(bad, timeout_sec=10.0)
        assert not resp.success and "at least one pose" in resp.message
        # a non-unit quaternion
        p = pose_from_T(m, torch.eye(4, dtype=torch.float64))
        p.orientation.w = 3.0
        bad = m.new("mirage/srv/ReadMemory_Request", poses=[p],
                    camera_info=camera_info_msg(m, K, (64, 96)))
        resp = served.read.call(bad, timeout_sec=10.0)
        assert not resp.success and "quaternion" in resp.message.lower()
        # the node still serves good requests, and saved after the update
        r = remote.readout(obs[0].T_cam_world[None], K, (64, 96))
        assert r.mask.any()
        assert save.is_file()
        n = remote.num_points
    finally:
        served.close()
    # a new node reloads the cache from the autosave file
    again = _Served(ros_probe, {"autosave_path": str(save)})
    try:
        assert again.node.service.initialized
        assert again.node.service.memory.num_points == n
    finally:
        again.close()


def test_trajectory_node_buffers_a_pose_stream_and_drops_bad_poses(ros_probe):
    """source=poses: out-of-order stamps and non-unit quaternions are dropped (logged), the
    rest fills a path of 1 + 32 * chunks poses on target_path."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Path
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from mirage_ros.messages import RclpyMessages, path_to_T, pose_from_T, stamp_from_ns
    from mirage_ros.nodes.trajectory_node import TrajectoryNode

    probe = ros_probe
    node = probe.add(TrajectoryNode(context=probe.context, namespace="/mirage",
                                    parameter_overrides=[Parameter("source", value="poses"),
                                                         Parameter("chunks", value=1)]))
    got = []
    probe.node.create_subscription(Path, "target_path", got.append, QOS_LATCHED)
    # a pose source publishing a burst keeps the whole burst (keep last 100, like the node)
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    pub = probe.node.create_publisher(PoseStamped, "pose_in", QoSProfile(
        depth=100, reliability=ReliabilityPolicy.RELIABLE))
    m = RclpyMessages()
    assert wait_until(lambda: pub.get_subscription_count() >= 1, 10.0)

    def send(i: int, t_ns: int, w: float = 1.0, frame: str = "world"):
        T = torch.eye(4, dtype=torch.float64)
        T[0, 3] = 0.01 * i
        p = pose_from_T(m, T)
        p.orientation.w = w
        pub.publish(PoseStamped(header=Header(stamp=stamp_from_ns(m, t_ns), frame_id=frame),
                                pose=p))

    for i in range(20):
        send(i, 1000 + i)
    send(99, 500)  # out of order: dropped
    send(98, 2000, w=3.0)  # non-unit quaternion: dropped
    send(97, 2001, frame="map")  # another frame than the world: dropped
    for i in range(20, 33):
        send(i, 1000 + i)
    assert wait_until(lambda: bool(got), 10.0)
    time.sleep(0.2)
    assert len(got) == 1 and node.published == 1
    T, stamps = path_to_T(got[0])
    assert len(T) == 33 and stamps.tolist() == [1000 + i for i in range(33)]
    torch.testing.assert_close(T[:, 0, 3], 0.01 * torch.arange(33, dtype=torch.float64))


# ------------------------------------------------------------------------------ QoS health
def test_an_incompatible_qos_peer_is_logged_with_both_profiles(ros_probe, capfd):
    """A planner publishing target_path volatile (rclpy's default durability) to the latched
    subscription of a node: never matched; the node logs both profiles, not silence."""
    from nav_msgs.msg import Path

    class Listener(MirageNode):
        def __init__(self, **kw):
            super().__init__("listener", **kw)
            self.create_subscription(Path, "target_path", lambda _m: None, QOS_LATCHED)

    probe = ros_probe
    probe.add(Listener(context=probe.context, namespace="/mirage"))
    probe.node.create_publisher(Path, "target_path", 10)  # rclpy's default QoS: volatile
    text = ""

    def reported() -> bool:
        nonlocal text
        text += capfd.readouterr().err
        return "incompatible QoS on target_path" in text

    assert wait_until(reported, 10.0), text
    assert "reliable/transient_local/keep_last(1)" in text  # what the node requests
    assert "/mirage/probe: reliable/volatile" in text  # what the planner offers
    assert "DURABILITY" in text


# ------------------------------------------------------------------------------ start-up errors
def _run_node(module: str, args: list[str], env_extra: dict | None = None):
    import os
    import subprocess
    import sys

    env = dict(os.environ, ROS_DOMAIN_ID="231", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_a_bad_parameter_or_a_missing_ros_is_one_line_and_exit_2(tmp_path):
    # a value refused past declare_config (the memory's own config): no traceback
    r = _run_node("mirage_ros.nodes.memory_node", ["--ros-args", "-p", "merge_policy:=bogus"])
    assert r.returncode == 2, r.stderr[-2000:]
    assert "cannot start" in r.stderr and "merge_policy" in r.stderr
    assert "Traceback" not in r.stderr
    # rclpy that does not import (shadowed here): the fix is named, no ImportError traceback
    fake = tmp_path / "shadow" / "rclpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named rclpy')\n")
    r = _run_node("mirage_ros.nodes.memory_node", [],
                  {"PYTHONPATH": str(tmp_path / "shadow")})
    assert r.returncode == 2 and "make install" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    # an rmw that is not installed (a common line in people's .bashrc)
    r = _run_node("mirage_ros.nodes.memory_node", [],
                  {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})
    assert r.returncode == 2 and "unset RMW_IMPLEMENTATION" in r.stderr, r.stderr[-2000:]


def test_callbacks_handed_to_executor_threads_finish_before_the_node_is_destroyed(ros_domain):
    """run_node's shutdown: rclpy's Executor.shutdown() does not wait for callbacks already
    handed to a MultiThreadedExecutor's threads; node_base._drain does, and collects what
    they raised, so none runs on a destroyed node ("cannot use Destroyable ...")."""
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node

    from mirage_ros.node_base import _drain

    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain)
    node = Node("drain_probe", context=ctx)
    started, finished = threading.Event(), threading.Event()

    def slow():
        started.set()
        time.sleep(0.5)
        finished.set()
        raise RuntimeError("raised in flight")

    timer = node.create_timer(0.01, slow)
    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(node)
    try:
        while not started.is_set():
            executor.spin_once(timeout_sec=0.05)
        timer.cancel()
        executor.shutdown(timeout_sec=10.0)
        assert not finished.is_set()  # rclpy returned with the callback still running
        _drain(executor)
        assert finished.is_set()
        assert all(t.done() for t in executor._futures)
        assert any(isinstance(t.exception(), RuntimeError) for t in executor._futures)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
