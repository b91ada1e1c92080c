"""setup.py for pip (all metadata lives in pyproject.toml).

On a ROS 2 machine colcon builds the package with CMakeLists.txt instead (ament_cmake: rosidl
interfaces + the Python packages; docs/ros.md). The data files below make a pip install carry
the same share/ layout (package marker, package.xml, launch files, configs, interfaces).
"""

from glob import glob

from setuptools import setup

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/mirage"]),
        ("share/mirage", ["package.xml"]),
        ("share/mirage/launch", glob("launch/*_launch.py")),
        ("share/mirage/config", glob("config/*.yaml")),
        ("share/mirage/msg", glob("msg/*.msg")),
        ("share/mirage/srv", glob("srv/*.srv")),
        ("share/mirage/action", glob("action/*.action")),
    ],
)
