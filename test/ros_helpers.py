"""Test support for real ROS 2 (rclpy on Fast DDS, loopback): an isolated domain per test and
a plain rclpy probe node. Imported by the ROS tests (``from ros_helpers import Probe``).

Isolation (docs/ros.md): every test that touches DDS takes a domain id with
:func:`claim_domain`, which holds an exclusive ``flock`` on ``/tmp/mirage-ros-domain-<id>.lock``
for the test's duration, so parallel pytest processes and repeated runs never share a domain;
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (set by conftest.py) keeps discovery on this host.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

#: domain ids the tests use (Fast DDS maps ids to ports; 0..232 are valid; 0 is the default a
#: user's own graph runs on, so the tests stay away from it)
DOMAINS = range(100, 200)


@contextlib.contextmanager
def claim_domain() -> Iterator[int]:
    """An unused domain id in :data:`DOMAINS`, held (flock) until the block ends."""
    ids = list(DOMAINS)
    random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(ids)
    for d in ids:
        f = open(os.path.join(tempfile.gettempdir(), f"mirage-ros-domain-{d}.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        try:
            yield d
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        return
    raise RuntimeError(f"every ROS domain in {DOMAINS} is in use by other tests")


def wait_until(predicate: Callable[[], bool], timeout_s: float, period_s: float = 0.02) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())


class Probe:
    """A plain rclpy node (``/mirage/probe`` by default) in its own context and domain,
    spinning in a thread; other nodes may join its executor (:meth:`add`)."""

    def __init__(self, domain: int, namespace: str = "/mirage", name: str = "probe") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        self.domain = domain
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node(name, namespace=namespace, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._nodes = [self.node]
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node):
        """Spin ``node`` (built with ``context=probe.context``) on the probe's executor."""
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def call(self, client, request, timeout_s: float = 10.0):
        """Call a service and wait for the answer (raises ``TimeoutError``)."""
        done = threading.Event()
        fut = client.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            raise TimeoutError(f"no answer from {client.srv_name} in {timeout_s} s")
        return fut.result()

    def wait_future(self, fut, timeout_s: float):
        done = threading.Event()
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout_s):
            raise TimeoutError(f"future not done in {timeout_s} s")
        return fut.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=10.0)
        for n in reversed(self._nodes):
            if hasattr(n, "close"):
                n.close()
            n.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(5.0)


class SyncClient:
    """``call(request, timeout_sec)`` over a probe's client (what RemoteMemory expects)."""

    def __init__(self, probe: Probe, srv_type, name: str) -> None:
        self.probe = probe
        self.client = probe.node.create_client(srv_type, name)

    def wait_for_service(self, timeout_sec: float = 10.0) -> bool:
        return self.client.wait_for_service(timeout_sec=timeout_sec)

    def call(self, request, timeout_sec: float = 10.0):
        return self.probe.call(self.client, request, timeout_sec)
