"""Loopback latency of a large ``sensor_msgs/msg/Image`` between two processes.

``python -m mirage_ros.dds.bench_latency [--n 30] [--size-mb 4] [--domain 123]``

The parent publishes an image on ``/bench/ping`` (reliable, keep last 1); a child process
(``--echo``) takes it, stamps ``header.stamp`` with its receive time (wall clock, same host) and
publishes it back on ``/bench/pong``. Reported, median over ``n`` after 3 warm-up rounds:

* ``one_way_ms``: publish (before serialisation) -> the child holds the decoded message;
* ``round_trip_ms``: publish -> the parent holds the decoded echo.

The project's target is one-way < 10 ms for 4 MB on loopback.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .node import DdsContext
from .qos import QOS_RELIABLE

__all__ = ["main", "run_bench"]

_QOS = QOS_RELIABLE.with_depth(1)
_ROOT = str(Path(__file__).resolve().parents[2])  # the repository (for the child's imports)
_IMAGE = "sensor_msgs/msg/Image"


def _echo(domain_id: int, max_s: float) -> None:
    """Child: echo every ping back as a pong with the receive time in ``header.stamp``."""
    with DdsContext(domain_id) as ctx:
        node = ctx.create_node("bench_echo")
        pong = node.create_publisher(_IMAGE, "/bench/pong", _QOS)
        time_cls = ctx.msg_class("builtin_interfaces/msg/Time")

        def on_ping(msg):
            t = time.time_ns()
            msg.header.stamp = time_cls(sec=t // 10**9, nanosec=t % 10**9)
            pong.publish(msg)

        ping = node.create_subscription(_IMAGE, "/bench/ping", on_ping, _QOS)
        seen = False
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            ctx.spin_once(0.05)
            matched = ping.get_publisher_count() > 0
            if seen and not matched:  # the parent went away
                break
            seen = seen or matched


def run_bench(
    n: int = 30,
    size_bytes: int = 4 * 1024 * 1024,
    domain_id: int = 123,
    warmup: int = 3,
    timeout_s: float = 60.0,
) -> dict[str, float]:
    """Run the ping-pong against a child process; returns medians/minima in ms."""
    width = 1024
    height = max(1, size_bytes // (4 * width))
    pythonpath = os.environ.get("PYTHONPATH", "")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mirage_ros.dds.bench_latency",
            "--echo",
            "--domain",
            str(domain_id),
            "--max-s",
            str(timeout_s),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, pythonpath)))},
    )
    try:
        with DdsContext(domain_id) as ctx:
            node = ctx.create_node("bench_ping")
            got: list = []
            pub = node.create_publisher(_IMAGE, "/bench/ping", _QOS)
            sub = node.create_subscription(_IMAGE, "/bench/pong", got.append, _QOS)
            if not (pub.wait_for_subscribers(1, 20.0) and sub.wait_for_publishers(1, 20.0)):
                raise TimeoutError("the echo process did not match within 20 s")
            img = ctx.default(_IMAGE)
            img.height, img.width, img.encoding, img.step = height, width, "rgba8", 4 * width
            img.header.frame_id = "bench"
            rng = np.random.default_rng(0)
            img.data = rng.integers(0, 256, height * width * 4, dtype=np.uint8)
            one_way, rtt = [], []
            for i in range(n + warmup):
                got.clear()
                t0 = time.time_ns()
                pub.publish(img)
                if not ctx.spin_until(lambda: bool(got), 5.0):
                    raise TimeoutError(f"no echo for ping {i}")
                t1 = time.time_ns()
                echo = got[0]
                if i == 0 and not np.array_equal(echo.data, img.data):
                    raise AssertionError("echoed image differs from the one sent")
                t_child = echo.header.stamp.sec * 10**9 + echo.header.stamp.nanosec
                if i >= warmup:
                    one_way.append((t_child - t0) / 1e6)
                    rtt.append((t1 - t0) / 1e6)
    finally:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return {
        "bytes": float(len(img.data)),
        "one_way_ms": statistics.median(one_way),
        "one_way_min_ms": min(one_way),
        "round_trip_ms": statistics.median(rtt),
        "round_trip_min_ms": min(rtt),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=30, help="measured round trips (after 3 warm-up)")
    p.add_argument("--size-mb", type=float, default=4.0, help="image payload in MiB")
    p.add_argument("--domain", type=int, default=123, help="DDS domain id (loopback only)")
    p.add_argument("--echo", action="store_true", help="run as the echo child")
    p.add_argument("--max-s", type=float, default=60.0, help="echo child: longest run time")
    args = p.parse_args(argv)
    if args.echo:
        _echo(args.domain, args.max_s)
        return
    r = run_bench(args.n, int(args.size_mb * 1024 * 1024), args.domain)
    print(
        f"{r['bytes'] / 2**20:.1f} MiB sensor_msgs/Image over loopback DDS, median of {args.n}: "
        f"one-way {r['one_way_ms']:.2f} ms (min {r['one_way_min_ms']:.2f}), "
        f"round trip {r['round_trip_ms']:.2f} ms (min {r['round_trip_min_ms']:.2f})"
    )


if __name__ == "__main__":
    main()
