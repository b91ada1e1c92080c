"""What the ROS graph adds to a rollout: ``python -m mirage_ros.bench_graph`` (or
``mirage bench graph``).

The same rollout (tiny random-weight models, the default PyBullet room at 128 x 224, sim depth
and masks, 40 UniPC steps, ``--chunks`` chunks, same seed) runs alternately

* ``in_process``: the memory in the generator's process (``mirage rollout``'s path), and
* ``graph``: the memory in a separate ``memory_node`` process behind its services
  (:class:`~mirage_ros.remote_memory.RemoteMemory`), every generated frame published as a
  ``sensor_msgs/Image`` + ``PoseStamped`` to a subscriber in a third process, and one
  ``ChunkInfo`` per chunk (what ``generator_node`` does),

``--reps`` times each, over DDS on loopback. It prints the per-chunk time of both, the ratio
and where the difference goes (memory service calls, publishing), plus the one-way latency of
a 4 MiB Image (:mod:`mirage_ros.dds.bench_latency`), and writes them as JSON. Figures from one
run on a noisy 2-core machine: compare the ratio, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "run_graph_bench"]


def _sink(domain: int, topic: str) -> None:
    """Subscriber process: counts frames until killed (prints the count on exit)."""
    import signal

    from mirage_ros.dds import QOS_RELIABLE, DdsContext
    from mirage_ros.interfaces import make_typestore

    n = [0]
    with DdsContext(domain, typestore=make_typestore()) as ctx:
        node = ctx.create_node("sink", "/bench")
        node.create_subscription("sensor_msgs/msg/Image", topic,
                                 lambda _m: n.__setitem__(0, n[0] + 1),
                                 QOS_RELIABLE.with_depth(100))
        stop = [False]
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
        print("ready", flush=True)
        while not stop[0]:
            ctx.spin_once(0.05)
    print(f"received {n[0]}", flush=True)


def run_graph_bench(chunks: int = 2, reps: int = 2, steps: int = 40,
                    json_path: str | None = "out/bench_graph.json") -> dict:
    from mirage_core.generator.loading import build_tiny_weights, load_models
    from mirage_core.generator.sampler import SamplerConfig
    from mirage_core.geometry import intrinsics_from_fov
    from mirage_core.perception import make_depth_provider, make_mask_provider
    from mirage_core.rollout.chunked import MirageRollout, RolloutConfig
    from mirage_core.rollout.job import DEFAULT_PROMPT, tiny_weights_dir
    from mirage_core.sim.pybullet_scene import PyBulletScene
    from mirage_core.trajectory import make_trajectory
    from mirage_ros.messages import pose_from_T, stamp_from_ns
    from mirage_ros.node_api import DdsNodeHandle
    from mirage_ros.remote_memory import RemoteMemory

    domain = 150 + zlib.crc32(str(os.getpid()).encode()) % 50
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), MIRAGE_ROS_BACKEND="dds",
               MIRAGE_DDS_LOOPBACK="1")
    memory = subprocess.Popen(
        [sys.executable, "-m", "mirage_ros.nodes.memory_node", "--ros-args", "-r",
         "__ns:=/bench", "-p", "stats_period_s:=0.0", "-p", "cloud_period_s:=0.0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sink = subprocess.Popen([sys.executable, "-m", "mirage_ros.bench_graph", "--sink",
                             "--domain", str(domain)], env=env, stdout=subprocess.PIPE,
                            text=True)
    handle = DdsNodeHandle("generator", "/bench", {}, {}, domain_id=domain)
    try:
        assert sink.stdout is not None
        sink.stdout.readline()
        m = handle.msgs
        read = handle.client("mirage/srv/ReadMemory", "read_memory")
        update = handle.client("mirage/srv/UpdateMemory", "update_memory")
        pub_img = handle.publisher("sensor_msgs/msg/Image", "image", "frames")
        pub_pose = handle.publisher("geometry_msgs/msg/PoseStamped", "pose", "frames")
        pub_chunk = handle.publisher("mirage/msg/ChunkInfo", "chunk_info", "reliable")
        if not read.wait_for_service(60.0) or not pub_img.wait_for_subscribers(1, 30.0):
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
                            pub_pose.publish(m.new("geometry_msgs/msg/PoseStamped", header=hdr,
                                                   pose=pose_from_T(m, traj.T_world_cam[a + i])))
                        pub_chunk.publish(m.new("mirage/msg/ChunkInfo",
                                                chunk_index=ch.plan.index, total_s=total))
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
    finally:
        handle.shutdown()
        memory.terminate()
        sink.terminate()
        memory.wait(10)
        received = sink.communicate(timeout=10)[0].strip().splitlines()

    from mirage_ros.dds.bench_latency import run_bench as latency_run

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
    summary["image_4mib"] = latency_run(n=20, domain_id=domain)
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
    print(f"4 MiB Image over DDS (loopback): one way {lat['one_way_ms']:.2f} ms median, round "
          f"trip {lat['round_trip_ms']:.2f} ms (target one way < 10 ms)")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2))
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
