"""What the ROS graph adds to a rollout: ``python -m mirage_ros.bench_graph`` (or
``mirage bench graph``).

The same rollout (tiny random-weight models, the default PyBullet room at 128 x 224, sim depth
and masks, 40 UniPC steps, ``--chunks`` chunks, same seed) runs alternately

* ``in_process``: the memory in the generator's process (``mirage rollout``'s path), and
* ``graph``: the memory in a separate ``memory_node`` process behind its services
  (:class:`~mirage_ros.remote_memory.RemoteMemory`), every generated frame published as a
  ``sensor_msgs/Image`` + ``PoseStamped`` to a subscriber in a third process, and one
  ``ChunkInfo`` per chunk (what ``generator_node`` does),

``--reps`` times each, over real ROS 2 (rclpy, Fast DDS, discovery on this host only, a domain
of its own). This process's ``generator`` node is plain rclpy (its publishers and memory
clients, spun by an executor thread). It prints the per-chunk time of both, the ratio and
where the difference goes (memory service calls, publishing), plus the one-way latency of a
4 MiB Image (:func:`mirage_ros.bench_ros.image_latency`), and writes them as JSON. Figures
from one run on a noisy 2-core machine: compare the ratio, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "run_graph_bench"]


def _sink(domain: int, topic: str) -> None:
    """Subscriber process: counts frames until SIGTERM (prints the count on exit)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from mirage_ros.bench_ros import init_context
    from mirage_ros.node_base import QOS_FRAMES

    ctx = init_context(domain)
    n = [0]
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    node = Node("sink", namespace="/bench", context=ctx)
    node.create_subscription(Image, topic, lambda _m: n.__setitem__(0, n[0] + 1), QOS_FRAMES)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    print("ready", flush=True)
    try:
        while not stop[0]:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    print(f"received {n[0]}", flush=True)


class _BlockingClient:
    """An rclpy client with the ``call(request, timeout_sec)`` RemoteMemory expects (raises
    ``TimeoutError``; rclpy's own returns ``None``). The executor spins in another thread."""

    def __init__(self, client) -> None:
        self.client = client

    def call(self, request, timeout_sec: float = 30.0):
        resp = self.client.call(request, timeout_sec=timeout_sec)
        if resp is None:
            raise TimeoutError(f"no reply from {self.client.srv_name} within {timeout_sec} s")
        return resp


def _wait(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def run_graph_bench(chunks: int = 2, reps: int = 2, steps: int = 40,
                    json_path: str | None = "out/bench_graph.json") -> dict:
    import threading

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from mirage.msg import ChunkInfo
    from mirage.srv import ReadMemory, UpdateMemory
    from rclpy.duration import Duration
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from mirage_core.generator.loading import build_tiny_weights, load_models
    from mirage_core.generator.sampler import SamplerConfig
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.perception import make_depth_provider, make_mask_provider
    from mirage_core.rollout.chunked import MirageRollout, RolloutConfig
    from mirage_core.rollout.job import DEFAULT_PROMPT, tiny_weights_dir
    from mirage_core.sim.pybullet_scene import PyBulletScene
    from mirage_core.trajectory import make_trajectory
    from mirage_ros.bench_ros import bench_domain, image_latency, init_context, ros_env
    from mirage_ros.messages import RclpyMessages, pose_from_T, stamp_from_ns
    from mirage_ros.node_base import QOS_FRAMES, QOS_RELIABLE
    from mirage_ros.remote_memory import RemoteMemory

    domain = bench_domain()
    env = ros_env(domain)
    memory = subprocess.Popen(
        [sys.executable, "-m", "mirage_ros.nodes.memory_node", "--ros-args", "-r",
         "__ns:=/bench", "-p", "stats_period_s:=0.0", "-p", "cloud_period_s:=0.0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = subprocess.Popen([sys.executable, "-m", "mirage_ros.bench_graph", "--sink",
                             "--domain", str(domain)], env=env, stdout=subprocess.PIPE,
                            text=True)
    ctx = init_context(domain)
    node = Node("generator", namespace="/bench", context=ctx)
    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="spin", daemon=True)
    spinner.start()
    received: list[str] = []
    try:
        assert sink.stdout is not None
        sink.stdout.readline()
        m = RclpyMessages()
        read_client = node.create_client(ReadMemory, "read_memory")
        read = _BlockingClient(read_client)
        update = _BlockingClient(node.create_client(UpdateMemory, "update_memory"))
        pub_img = node.create_publisher(Image, "image", QOS_FRAMES)
        pub_pose = node.create_publisher(PoseStamped, "pose", QOS_FRAMES)
        pub_chunk = node.create_publisher(ChunkInfo, "chunk_info", QOS_RELIABLE)
        if not (read_client.wait_for_service(timeout_sec=60.0)
                and _wait(lambda: pub_img.get_subscription_count() > 0, 30.0)):
            raise RuntimeError("the memory node or the frame sink did not come up")

        H, W = 128, 224
        scene = PyBulletScene("room", seed=0, dynamic=True)
        T_sim = scene.default_start_pose()
        K = intrinsics_from_fov(W, H, 60.0)
        image = torch.from_numpy(scene.render(T_sim, K.numpy(), H, W).rgb).permute(2, 0, 1)
        image = image.float() / 255
        traj = make_trajectory("loop", 1 + 32 * chunks, fps=24.0, K=K, image_hw=(H, W))
        models = load_models(build_tiny_weights(tiny_weights_dir()), device="cpu")
        text = models.encode_prompt(DEFAULT_PROMPT)

        records: dict[str, list[dict]] = {"in_process": [], "graph": []}
        for _rep in range(reps):
            for mode in ("in_process", "graph"):
                kw = {"scene": scene, "fps": 24.0, "T_sim_world": T_sim}
                remote: list[RemoteMemory] = []

                def factory(remote=remote):
                    remote.append(RemoteMemory(m, read, update))
                    return remote[-1]

                rollout = MirageRollout(
                    models, make_depth_provider("sim", **kw), make_mask_provider("sim", **kw),
                    RolloutConfig(sampler=SamplerConfig(steps=steps), progress=False),
                    memory_factory=factory if mode == "graph" else None)
                prev_service = 0.0
                for ch in rollout.run(image, traj, prompt_embeds=text):
                    total = ch.timings_s["total"]
                    pub_s = 0.0
                    if mode == "graph":
                        t0 = time.perf_counter()
                        a = ch.plan.rgb_frames[0]
                        for i, frame in enumerate(ch.frames):
                            hdr = m.new("std_msgs/msg/Header",
                                        stamp=stamp_from_ns(m, (a + i) * 41_666_667),
                                        frame_id="camera_optical")
                            pub_img.publish(m.image(np.ascontiguousarray(frame), "rgb8", hdr))
                            pub_pose.publish(PoseStamped(
                                header=hdr, pose=pose_from_T(m, traj.T_world_cam[a + i])))
                        pub_chunk.publish(ChunkInfo(chunk_index=ch.plan.index, total_s=total))
                        pub_s = time.perf_counter() - t0
                    service = remote[-1].service_s - prev_service if remote else 0.0
                    prev_service = remote[-1].service_s if remote else 0.0
                    records[mode].append({
                        "chunk": ch.plan.index, "total_s": total + pub_s,
                        "readout_s": ch.timings_s["readout"], "update_s": ch.timings_s["update"],
                        "service_calls_s": service, "publish_s": pub_s,
                        "denoise_s": ch.timings_s["denoise"], "decode_s": ch.timings_s["decode"],
                    })
        scene.close()
        # every frame reached the sink before it is stopped (a reliable writer's data is
        # otherwise lost with the process)
        pub_img.wait_for_all_acked(Duration(seconds=10))
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        memory.send_signal(signal.SIGINT)  # the node's clean shutdown
        sink.terminate()
        try:
            memory.wait(10)
        except subprocess.TimeoutExpired:
            memory.kill()
            memory.wait()
        received = sink.communicate(timeout=10)[0].strip().splitlines()

    def mean(mode, key):
        return float(np.mean([r[key] for r in records[mode]]))

    summary = {
        "config": {"chunks": chunks, "reps": reps, "steps": steps, "size": "tiny 128x224"},
        "per_chunk_s": {mode: mean(mode, "total_s") for mode in records},
        "graph_over_in_process": mean("graph", "total_s") / mean("in_process", "total_s"),
        "graph_parts_s": {k: mean("graph", k) for k in ("readout_s", "update_s",
                                                         "service_calls_s", "publish_s")},
        "in_process_parts_s": {k: mean("in_process", k) for k in ("readout_s", "update_s")},
        "frames_received_by_sink": received[-1] if received else "",
        "records": records,
    }
    summary["image_4mib"] = image_latency(n=20, domain_id=domain)
    print(f"per chunk: in-process {summary['per_chunk_s']['in_process']:.3f} s, graph "
          f"{summary['per_chunk_s']['graph']:.3f} s -> ratio "
          f"{summary['graph_over_in_process']:.3f} (target < 1.10)")
    gp = summary["graph_parts_s"]
    print(f"graph per chunk: memory service calls {gp['service_calls_s'] * 1e3:.1f} ms, "
          f"publishing 32 frames + poses {gp['publish_s'] * 1e3:.1f} ms; in-process readout + "
          f"update {sum(summary['in_process_parts_s'].values()) * 1e3:.1f} ms")
    print(f"frame sink: {summary['frames_received_by_sink']} (expected "
          f"{32 * chunks * reps})")
    lat = summary["image_4mib"]
    print(f"4 MiB Image over {lat['rmw']} (this host, {lat['fastdds_profile']}): one way "
          f"{lat['one_way_ms']['median']:.2f} ms median, p90 {lat['one_way_ms']['p90']:.2f} ms "
          f"(target one way < 10 ms; `mirage bench ros` for more)")
    if json_path:
        from mirage_core.rollout.outputs import write_json_atomic

        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(json_path), summary)
        print(f"wrote {json_path}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mirage_ros.bench_graph",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json", default="out/bench_graph.json")
    p.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--domain", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.sink:
        _sink(a.domain, "image")
        return 0
    run_graph_bench(a.chunks, a.reps, a.steps, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
