"""The colcon build description stays consistent with the code (checked without ROS: the
actual `colcon build` needs a ROS 2 machine, see docs/ros.md)."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from mirage_ros.interfaces import ACTIONS, MESSAGES, SERVICES
from mirage_ros.launch_specs import LAUNCHES
from mirage_ros.nodes import NODE_NAMES

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_an_ament_cmake_interface_package():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "mirage"
    assert root.find("export/build_type").text == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    build_tools = {e.text for e in root.findall("buildtool_depend")}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= build_tools
    # rosidl dependencies at top level, never inside <export> (a packaging pitfall)
    assert root.find("export/buildtool_depend") is None
    execs = {e.text for e in root.findall("exec_depend")}
    assert {"rosidl_default_runtime", "rclpy", "launch_ros", "std_srvs", "tf2_msgs"} <= execs


def test_cmakelists_generates_every_interface_and_installs_every_node():
    text = (ROOT / "CMakeLists.txt").read_text()
    gen = re.search(r"rosidl_generate_interfaces\((.*?)\)", text, re.S).group(1)
    files = set(re.findall(r'"([^"]+)"', gen))
    expected = ({f"msg/{n}.msg" for n in MESSAGES} | {f"srv/{n}.srv" for n in SERVICES}
                | {f"action/{n}.action" for n in ACTIONS})
    assert files == expected
    on_disk = {str(p.relative_to(ROOT)) for d in ("msg", "srv", "action")
               for p in (ROOT / d).iterdir()}
    assert on_disk == expected, "an interface file is not generated (or listed but missing)"
    for pkg in ("mirage_core", "mirage_ros"):
        assert f"ament_python_install_package({pkg})" in text
    for node in NODE_NAMES:
        assert f"bin/{node}" in text
        exe = ROOT / "bin" / node
        assert os.access(exe, os.X_OK)
        assert f"from mirage_ros.nodes.{node} import main" in exe.read_text()
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in text


def test_every_launch_spec_has_a_launch_file_and_a_config_and_known_nodes():
    for name, spec in LAUNCHES.items():
        lf = ROOT / "launch" / f"{name}_launch.py"
        assert lf.is_file() and f'ros_launch_description("{name}")' in lf.read_text()
        assert (ROOT / "config" / f"{name}.yaml").is_file()
        for n in spec.nodes:
            assert n.executable in NODE_NAMES
    assert {p.name for p in (ROOT / "launch").glob("*_launch.py")} == {
        f"{n}_launch.py" for n in LAUNCHES}


def test_no_module_shadows_ros_packages():
    # never ship a module named like a ROS 2 package (rclpy, launch, ...)
    shadow = {"rclpy", "launch", "launch_ros", "rosidl_runtime_py", "cv_bridge", "mirage"}
    for d in ROOT.iterdir():  # importable from the source root (launch/ holds launch files)
        importable = d.suffix == ".py" or (d / "__init__.py").is_file()
        assert not (importable and d.name.removesuffix(".py") in shadow), d
    assert not (ROOT / "launch" / "__init__.py").exists()
    for pkg in ("mirage_core", "mirage_ros"):
        for p in (ROOT / pkg).rglob("*"):
            assert p.stem not in shadow - {"mirage"}, p
