"""ROS 2 figures of the graph on real rclpy: ``mirage bench ros`` (or
``python -m mirage_ros.bench_ros``).

Measured in one run over the installed rmw (Fast DDS from the ROS 2 wheels), discovery on this
host only (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a domain of its own:

(a) ``image_latency``: one-way latency of a 4 MiB ``sensor_msgs/Image`` (1024 x 1024 rgba8)
    between two processes, reliable QoS. This process publishes it with ``header.stamp`` set
    to the wall clock just before ``publish()``; a child process (``--echo``) takes the
    receive time (wall clock, same host) when its callback holds the decoded message and
    answers with a small ``std_msgs/Header`` carrying it. The next image goes out after the
    answer, so images never queue. Median, p90, min and max over ``--n`` images after 5
    warm-up ones; also the round trip (image out, answer in) and the time ``publish()``
    blocks, and the one-way latency of a 4 KiB image the same way (what the processes and
    executors add to any message). Target: one way < 10 ms. Measured twice, each time in
    fresh processes: with Fast DDS as the environment sets it up (by default its shared
    memory segments are 512 KiB, smaller than the image), and with a participant profile of
    32 MiB segments (``--shm-segment-mb``; :func:`fastdds_profile_xml`).
(b) ``launch_first_frame``: seconds from starting ``mirage launch sim_rollout tiny:=true
    steps:=1 chunks:=1`` (64 x 96 images) to the first generated frame on ``/mirage/image``,
    received by this process's subscription; also when every node was in the ROS graph, the
    frames received and when the launch ended. The launch output goes to
    ``out/bench_ros_launch.log``.

It prints the figures as a table and writes them as JSON (default ``out/bench_ros.json``).
Figures from one run on a loaded 2-core machine: read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from mirage_ros.fastdds import PROFILE_VARS, profile_xml

__all__ = ["add_bench_ros_arguments", "fastdds_profile_xml", "image_latency",
           "launch_first_frame", "main", "run_ros_bench"]

_PING = "/bench/image"
_ACK = "/bench/image_ack"
#: what (b) starts: the smallest sim_rollout that still runs every node
LAUNCH_ARGS = ("tiny:=true", "steps:=1", "chunks:=1", "sim_camera.width:=96",
               "sim_camera.height:=64", "sim_camera.rate_hz:=5.0")


# ------------------------------------------------------------------------------ rclpy setup
def bench_domain() -> int:
    """A domain for this run (150..199, away from the tests' 50..99)."""
    return 150 + zlib.crc32(f"{os.getpid()}-{time.time_ns()}".encode()) % 50


def ros_env(domain_id: int) -> dict[str, str]:
    """The environment of a child process: this host only, ``domain_id``."""
    from mirage_ros.launcher import launch_env

    return launch_env(domain_id=domain_id, network=False)


def init_context(domain_id: int):
    """A fresh rclpy context in ``domain_id``, discovery on this host only (the rmw reads
    ``ROS_AUTOMATIC_DISCOVERY_RANGE`` from this process's environment)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    from mirage_ros.node_base import require_ros

    require_ros()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_STATIC_PEERS", None)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    return ctx


def _reliable(depth: int):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def _spin_until(executor, predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not predicate():
        left = end - time.monotonic()
        if left <= 0:
            return False
        executor.spin_once(timeout_sec=min(left, 0.05))
    return True


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "p90": _percentile(xs, 0.9), "min": min(xs),
            "max": max(xs)}


# ------------------------------------------------------------------------------ (a) latency
def _echo(domain_id: int, max_s: float) -> int:
    """Child of (a): answer each image with its receive time (``std_msgs/Header``)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    ctx = init_context(domain_id)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    node = Node("bench_echo", context=ctx)
    ack = node.create_publisher(Header, _ACK, _reliable(10))

    def on_image(msg: Image) -> None:
        t = time.time_ns()
        out = Header(frame_id=msg.header.frame_id)
        out.stamp.sec, out.stamp.nanosec = t // 10**9, t % 10**9
        if msg.header.frame_id == "0":  # the first warm-up: check the payload arrived whole
            out.frame_id = f"0:{len(msg.data)}:{zlib.crc32(msg.data)}"
        ack.publish(out)

    sub = node.create_subscription(Image, _PING, on_image, _reliable(1))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    seen = False
    end = time.monotonic() + max_s
    try:
        while not stop[0] and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
            matched = sub.get_publisher_count() > 0
            if seen and not matched:  # the parent went away
                break
            seen = seen or matched
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return 0


def fastdds_profile_xml(shm_segment_bytes: int) -> str:
    """The launcher's Fast DDS profile (:mod:`mirage_ros.fastdds`), loopback only."""
    return profile_xml(shm_segment_bytes, loopback=True)


def image_latency(n: int = 50, size_bytes: int = 4 * 2**20, domain_id: int | None = None,
                  warmup: int = 5, timeout_s: float = 120.0,
                  shm_segment_mb: float | None = None) -> dict[str, Any]:
    """(a) in two fresh processes (Fast DDS reads its profile once per process): a ping
    process (:func:`_ping`) and its echo child.

    Args:
        shm_segment_mb: ``None``: Fast DDS as this environment sets it up; else both processes
            get :func:`fastdds_profile_xml` with segments of this many MiB.

    Returns:
        :func:`_ping`'s figures plus ``"fastdds_profile"``.
    """
    import tempfile

    domain_id = bench_domain() if domain_id is None else domain_id
    env = ros_env(domain_id)
    with tempfile.TemporaryDirectory(prefix="mirage-bench-ros-") as tmp:
        profile = "environment: " + (", ".join(f"{v}={env[v]}" for v in PROFILE_VARS
                                               if env.get(v)) or "Fast DDS defaults")
        if shm_segment_mb is not None:
            xml = Path(tmp) / "fastdds_profile.xml"
            xml.write_text(fastdds_profile_xml(int(shm_segment_mb * 2**20)))
            env.update({v: str(xml) for v in PROFILE_VARS})
            profile = f"SHM segment {shm_segment_mb:g} MiB + UDPv4"
        out = Path(tmp) / "latency.json"
        cmd = [sys.executable, "-m", "mirage_ros.bench_ros", "--ping", "--n", str(n),
               "--size-mb", str(size_bytes / 2**20), "--domain-id", str(domain_id),
               "--max-s", str(timeout_s), "--json", str(out)]
        r = subprocess.run(cmd, env=env, timeout=timeout_s + 60, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the latency processes failed ({r.returncode}):\n"
                               f"{r.stdout[-3000:]}")
        result = json.loads(out.read_text())
    result["fastdds_profile"] = profile
    return result


def _ping(n: int = 50, size_bytes: int = 4 * 2**20, domain_id: int | None = None,
          warmup: int = 5, timeout_s: float = 120.0) -> dict[str, Any]:
    """(a) from this process: one-way latency of a ``size_bytes`` Image to a child process
    (module docstring).

    Returns:
        ``{"bytes", "n", "lost", "payload_intact", "one_way_ms": {median, p90, min, max},
        "round_trip_ms": ..., "publish_ms": ..., "small_4kib": {the same for a 4 KiB image},
        "warmup", "rmw", "qos", "fastdds_builtin_transports"}``.

    Raises:
        TimeoutError: the child did not match within 30 s, or half the images got no answer.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    domain_id = bench_domain() if domain_id is None else domain_id
    child = subprocess.Popen(
        [sys.executable, "-m", "mirage_ros.bench_ros", "--echo", "--domain-id", str(domain_id),
         "--max-s", str(timeout_s)], env=ros_env(domain_id))
    ctx = init_context(domain_id)
    node = Node("bench_ping", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    acks: dict[str, tuple[int, int]] = {}  # seq -> (child receive ns, our receive ns)
    check: list[str] = []  # "0:<bytes>:<crc32>" of the first image, as the child got it

    def on_ack(msg: Header) -> None:
        t = time.time_ns()
        acks[msg.frame_id.split(":")[0]] = (msg.stamp.sec * 10**9 + msg.stamp.nanosec, t)
        if msg.frame_id.startswith("0:"):
            check.append(msg.frame_id)

    try:
        pub = node.create_publisher(Image, _PING, _reliable(1))
        ack_sub = node.create_subscription(Header, _ACK, on_ack, _reliable(10))
        if not _spin_until(executor, lambda: pub.get_subscription_count() > 0
                           and ack_sub.get_publisher_count() > 0, 30.0):
            raise TimeoutError("the echo process did not match within 30 s")

        def measure(nbytes: int, count: int, first_seq: int) -> dict[str, Any]:
            width = 1024 if nbytes >= 4096 else 1
            height = max(1, nbytes // (4 * width))
            payload = os.urandom(height * width * 4)
            img = Image(height=height, width=width, encoding="rgba8", step=4 * width)
            img.data = array.array("B", payload)
            one_way, rtt, pub_ms = [], [], []
            lost = 0
            for i in range(first_seq, first_seq + count + warmup):
                seq = str(i)
                img.header.frame_id = seq
                t0 = time.time_ns()
                img.header.stamp.sec, img.header.stamp.nanosec = t0 // 10**9, t0 % 10**9
                pub.publish(img)
                t_pub = time.time_ns()
                if not _spin_until(executor, lambda seq=seq: seq in acks, 5.0):
                    lost += 1
                    if lost > max(2, (count + warmup) // 2):
                        raise TimeoutError(f"{lost} images got no answer within 5 s")
                    continue
                t_child, t_back = acks.pop(seq)
                if i >= first_seq + warmup:
                    one_way.append((t_child - t0) / 1e6)
                    rtt.append((t_back - t0) / 1e6)
                    pub_ms.append((t_pub - t0) / 1e6)
            if not one_way:
                raise TimeoutError("no image was answered")
            intact = None
            if first_seq == 0 and check:
                _, got_bytes, crc = check[0].split(":")
                intact = int(got_bytes) == len(payload) and int(crc) == zlib.crc32(payload)
            return {"bytes": len(payload), "n": len(one_way), "lost": lost,
                    "payload_intact": intact, "one_way_ms": _stats(one_way),
                    "round_trip_ms": _stats(rtt), "publish_ms": _stats(pub_ms)}

        result = measure(size_bytes, n, 0)
        # the same path with a 4 KiB image: what the process and executor add to any message
        result["small_4kib"] = measure(4096, n, n + warmup)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait(10)
    result.update({
        "warmup": warmup,
        "rmw": rclpy.get_rmw_implementation_identifier(),
        "qos": "reliable/volatile/keep_last(1)",
        "fastdds_builtin_transports": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "(default)"),
    })
    return result


# ------------------------------------------------------------------------------ (b) launch
def launch_first_frame(domain_id: int | None = None, timeout_s: float = 300.0,
                       args: tuple[str, ...] = LAUNCH_ARGS,
                       log_path: str | Path = "out/bench_ros_launch.log") -> dict[str, Any]:
    """(b): ``mirage launch sim_rollout ARGS`` from start to the first frame on
    ``/mirage/image`` (module docstring). Figures are ``None`` for what did not happen."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from mirage_ros.launch_specs import LAUNCHES
    from mirage_ros.launcher import _enabled, parse_launch_args

    domain_id = bench_domain() if domain_id is None else domain_id
    spec = LAUNCHES["sim_rollout"]
    values = parse_launch_args(spec, list(args))
    expected = {f"/mirage/{n.name}" for n in spec.nodes
                if n.if_arg is None or _enabled(values.get(n.if_arg))}
    ctx = init_context(domain_id)
    node = Node("bench_probe", namespace="/bench", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    frames: list[float] = []
    t_start = time.monotonic()
    node.create_subscription(Image, "/mirage/image",
                             lambda _m: frames.append(time.monotonic() - t_start),
                             _reliable(100))
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mirage_core.cli", "launch", "sim_rollout", *args,
           "--domain-id", str(domain_id), "--timeout", str(timeout_s)]
    t_nodes = None
    seen: set[str] = set()
    with open(log_path, "w") as log:
        t_start = time.monotonic()
        proc = subprocess.Popen(cmd, env=ros_env(domain_id), stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and time.monotonic() - t_start < timeout_s + 30:
                executor.spin_once(timeout_sec=0.1)
                if t_nodes is None:
                    seen = {f"{ns.rstrip('/')}/{n}"
                            for n, ns in node.get_node_names_and_namespaces()}
                    if expected <= seen:
                        t_nodes = time.monotonic() - t_start
            t_end = time.monotonic() - t_start
            # frames in flight when the generator exited
            _spin_until(executor, lambda: False, 0.5)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=ctx)
    text = log_path.read_text(errors="replace")
    loaded = [ln.strip() for ln in text.splitlines() if "models loaded" in ln]
    return {
        "command": "mirage launch sim_rollout " + " ".join(args),
        "exit_code": proc.returncode,
        "nodes": sorted(expected),
        "all_nodes_in_graph_s": t_nodes,
        "nodes_missing": sorted(expected - seen) if t_nodes is None else [],
        "first_frame_s": frames[0] if frames else None,
        "last_frame_s": frames[-1] if frames else None,
        "frames": len(frames),
        "launch_ended_s": t_end,
        "models_loaded_log": loaded[0] if loaded else None,
        "log": str(log_path),
    }


# ------------------------------------------------------------------------------ the bench
def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:.2f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _latency_rows(lat: dict[str, Any], title: str) -> list[tuple[str, ...]]:
    rows = [(title, "", "", "", "")]
    for key, label in (("one_way_ms", f"{lat['bytes'] / 2**20:g} MiB Image one way (ms)"),
                       ("round_trip_ms", "image out, answer back (ms)"),
                       ("publish_ms", "publish() blocks (ms)"),
                       ("small", "4 KiB Image one way (ms)")):
        s = lat["small_4kib"]["one_way_ms"] if key == "small" else lat[key]
        rows.append(("  " + label, *(f"{s[k]:.2f}" for k in ("median", "p90", "min", "max"))))
    return rows


def run_ros_bench(n: int = 50, size_mb: float = 4.0, launch: bool = True,
                  json_path: str | None = "out/bench_ros.json",
                  launch_timeout_s: float = 300.0,
                  shm_segment_mb: float | None = 32.0) -> dict[str, Any]:
    """(a) with this environment's Fast DDS settings and (unless ``shm_segment_mb`` is
    ``None``) with larger shared-memory segments, then (b) unless ``launch=False``; prints a
    table, writes JSON."""
    out: dict[str, Any] = {"domain_id": bench_domain()}
    size = int(size_mb * 2**20)
    out["image_latency"] = lat = image_latency(n=n, size_bytes=size, domain_id=out["domain_id"])
    rows = [("figure", "median", "p90", "min", "max")]
    rows += _latency_rows(lat, f"Fast DDS, {lat['fastdds_profile']}")
    if shm_segment_mb is not None:
        out["image_latency_large_shm_segment"] = big = image_latency(
            n=n, size_bytes=size, domain_id=out["domain_id"], shm_segment_mb=shm_segment_mb)
        rows += _latency_rows(big, f"Fast DDS, {big['fastdds_profile']}")
    if launch:
        try:
            out["launch_first_frame"] = lf = launch_first_frame(
                domain_id=out["domain_id"], timeout_s=launch_timeout_s)
        except Exception as e:  # the nodes may be broken: the latency figures still count
            out["launch_first_frame"] = lf = {"error": f"{type(e).__name__}: {e}"}
        rows.append(("mirage launch sim_rollout (tiny, 1 step, 1 chunk)", "", "", "", ""))
        for key, label in (("all_nodes_in_graph_s", "start -> every node in the graph (s)"),
                           ("first_frame_s", "start -> first frame on /mirage/image (s)"),
                           ("last_frame_s", "start -> last frame (s)"),
                           ("launch_ended_s", "start -> launch ended (s)")):
            rows.append(("  " + label, _fmt(lf.get(key)), "", "", ""))
    widths = [max(len(r[i]) for r in rows if r[1] or i == 0) for i in range(5)]
    print(f"ROS 2 over {lat['rmw']}, this host only, domain {out['domain_id']}; {lat['n']} "
          f"images after {lat['warmup']} warm-up each, QoS {lat['qos']}")
    for i, r in enumerate(rows):
        if not r[1] and i:
            print("  " + r[0])
            continue
        print(("  " + "  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                                for j, c in enumerate(r))).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for key in ("image_latency", "image_latency_large_shm_segment"):
        if key in out:
            x = out[key]
            ok = x["one_way_ms"]["median"] < 10.0
            print(f"  {x['fastdds_profile']}: one-way median {x['one_way_ms']['median']:.2f} ms, "
                  f"target < 10 ms {'met' if ok else 'NOT met'}; {x['lost']} lost, payload "
                  f"intact: {x['payload_intact']}")
    if launch:
        lf = out["launch_first_frame"]
        if "error" in lf:
            print(f"  launch: {lf['error']}")
        else:
            print(f"  launch: exit {lf['exit_code']}, {lf['frames']} frames received "
                  f"({lf['command']}; log {lf['log']})")
            if lf["nodes_missing"]:
                print(f"  nodes never seen in the graph: {', '.join(lf['nodes_missing'])}")
    if json_path:
        from mirage_core.rollout.outputs import write_json_atomic

        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(json_path), out)
        print(f"wrote {json_path}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mirage_ros.bench_ros",
                                description=__doc__.split("\n\n")[0])
    add_bench_ros_arguments(p)
    p.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ping", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--domain-id", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-s", type=float, default=120.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.echo:
        return _echo(a.domain_id, a.max_s)
    if a.ping:
        r = _ping(a.n, int(a.size_mb * 2**20), a.domain_id, timeout_s=a.max_s)
        Path(a.json).write_text(json.dumps(r))
        return 0
    return run_bench_ros_args(a)


def add_bench_ros_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mirage bench ros`` / ``python -m mirage_ros.bench_ros``."""
    p.add_argument("--n", type=int, default=50, help="measured images (default 50)")
    p.add_argument("--size-mb", type=float, default=4.0, help="image payload in MiB (default 4)")
    p.add_argument("--shm-segment-mb", type=float, default=32.0,
                   help="also measure with Fast DDS shared-memory segments of this size "
                   "(default 32; 0 = only the environment's settings)")
    p.add_argument("--no-launch", action="store_true",
                   help="only the image latency, not the launch to first frame")
    p.add_argument("--launch-timeout", type=float, default=300.0,
                   help="seconds the launch may take (default 300)")
    p.add_argument("--json", default="out/bench_ros.json", help="where to write the figures")


def run_bench_ros_args(a: argparse.Namespace) -> int:
    run_ros_bench(a.n, a.size_mb, not a.no_launch, a.json, a.launch_timeout,
                  a.shm_segment_mb or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
