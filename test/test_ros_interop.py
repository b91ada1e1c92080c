"""Interoperability with plain ROS 2: a script that imports nothing from this project
(test/interop_plain_rclpy.py: rclpy + ROS interfaces only) drives a ``mirage launch planner``
graph: it receives the generated frames, sends an ``imagine`` goal and calls
``read_memory``. Real rclpy over Fast DDS on loopback, in the test's own domain."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from mirage_ros.launch_specs import LAUNCHES
from mirage_ros.launcher import Launch, parse_launch_args

SCRIPT = Path(__file__).with_name("interop_plain_rclpy.py")


def test_plain_rclpy_client_drives_the_planner_graph(ros_domain, tmp_path):
    imported = set()
    for n in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(n, ast.Import):
            imported |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            imported.add(n.module.split(".")[0])
    # rclpy, ROS interface packages (mirage = the rosidl-generated msg/srv/action) and stdlib
    assert not imported & {"mirage_core", "mirage_ros", "numpy", "torch"}, imported
    out = io.StringIO()
    items = ["tiny:=true", "steps:=2", "sim_camera.width:=96", "sim_camera.height:=64",
             "sim_camera.rate_hz:=5.0"]
    launch = Launch(LAUNCHES["planner"], parse_launch_args(LAUNCHES["planner"], items),
                    domain_id=ros_domain, out=out, grace_s=10.0)
    try:
        # the script runs from an empty directory so the project is not on its sys.path
        r = subprocess.run([sys.executable, str(SCRIPT), "240"], cwd=tmp_path,
                           env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain),
                                    PYTHONPATH=""),
                           capture_output=True, text=True, timeout=300)
    finally:
        launch.shutdown()
    log = out.getvalue()[-4000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, (r.stdout, r.stderr[-3000:], log)
    seen = json.loads(lines[-1])
    assert r.returncode == 0, (seen, r.stderr[-3000:], log)
    assert seen["goal_status"] == 4 and seen["num_frames"] == 32  # STATUS_SUCCEEDED
    assert seen["frames"] >= 32 and seen["read_success"]
    assert 0.0 <= seen["hole_rates"][0] < 1.0
