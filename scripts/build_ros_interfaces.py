#!/usr/bin/env python3
"""Build the project's ROS 2 interfaces (msg/, srv/, action/ -> Python module ``mirage``) into a
virtual environment that holds ROS 2 from PyPI wheels (``make install`` runs this).

    python scripts/build_ros_interfaces.py [--venv .venv] [--build-dir build/ros_interfaces]

It runs the package's own CMakeLists.txt (rosidl_generate_interfaces) with
``-DMIRAGE_INTERFACES_ONLY=ON`` (the Python packages come from pip, not from cmake), installing
into the venv itself, so nothing needs to be set at runtime: the ROS wheels' ``.pth`` hook puts
the venv's ``lib`` on the library path.

One wrinkle of the wheels (docs/ros.md, measured): their exported CMake files
``share/*/cmake/export_*__rosidl_generator_pyExport.cmake`` name the wheel builder's Python and
numpy include directories (``/opt/python/cp311-cp311/...``). They are rewritten to this
interpreter's before cmake runs; a file is only rewritten when it still names a directory that
does not exist here.

On a ROS 2 machine with apt-installed ROS, use ``colcon build`` instead (docs/ros.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_INCLUDE_LINE = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')


def venv_include_dirs(python: Path) -> tuple[str, str]:
    """(Python.h directory, numpy headers directory) of the venv's interpreter."""
    code = ("import sysconfig, numpy; print(sysconfig.get_paths()['include']); "
            "print(numpy.get_include())")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    return out[0], out[1]


def fix_exported_include_dirs(venv: Path, py_inc: str, np_inc: str) -> int:
    """Point the wheels' rosidl_generator_py exports at this machine's Python and numpy
    headers. Returns the number of files rewritten."""
    n = 0
    for f in sorted((venv / "share").glob("*/cmake/export_*__rosidl_generator_pyExport.cmake")):
        text = f.read_text()

        def repl(m: re.Match) -> str:
            dirs = m.group(2).split(";")
            if all(Path(d).is_dir() for d in dirs if d):
                return m.group(0)
            return f"{m.group(1)}{py_inc};{np_inc}{m.group(3)}"

        new = _INCLUDE_LINE.sub(repl, text)
        if new != text:
            f.write_text(new)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", type=Path, default=ROOT / ".venv")
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "ros_interfaces")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    venv = args.venv.resolve()
    python = venv / "bin" / "python"
    if not (venv / "share" / "rosidl_default_generators").is_dir():
        print(f"error: {venv} has no ROS 2 wheels (rosidl_default_generators); run "
              "`make install` (it pip-installs them first)", file=sys.stderr)
        return 2
    for tool in ("cmake", "make", "c++"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed; on Debian/Ubuntu: "
                  "apt-get install cmake g++ make", file=sys.stderr)
            return 2
    n = fix_exported_include_dirs(venv, *venv_include_dirs(python))
    print(f"rewrote the include directories of {n} exported CMake file(s)")
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    packages = [("mirage", ROOT)]
    if not (venv / "share" / "tf2_msgs" / "package.xml").is_file():
        packages.insert(0, ("tf2_msgs", ROOT / "ros" / "tf2_msgs"))
    for name, src in packages:
        build = args.build_dir.resolve() / name
        build.mkdir(parents=True, exist_ok=True)
        print(f"building the {name} interfaces ({src})", flush=True)
        subprocess.run(["cmake", str(src), f"-DCMAKE_PREFIX_PATH={venv}",
                        f"-DCMAKE_INSTALL_PREFIX={venv}", f"-DPython3_EXECUTABLE={python}",
                        "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release",
                        *(["-DMIRAGE_INTERFACES_ONLY=ON"] if name == "mirage" else [])],
                       cwd=build, env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["make", f"-j{args.jobs}", "install"], cwd=build, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    check = subprocess.run(
        [str(python), "-c", "from mirage.msg import LatentTensor; "
         "from mirage.srv import UpdateMemory; from mirage.action import Imagine; "
         "from tf2_msgs.msg import TFMessage; print('ok')"],
        env=env, capture_output=True, text=True)
    if check.returncode != 0:
        print(check.stderr, file=sys.stderr)
        print("error: the built interfaces do not import", file=sys.stderr)
        return 1
    print(f"built the mirage and tf2_msgs interfaces into {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
