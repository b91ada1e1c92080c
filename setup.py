"""setup.py for colcon (ament_python needs it); all metadata lives in pyproject.toml.

On a ROS 2 machine `colcon build` installs the package marker, package.xml, launch files
and configs into share/; `pip install -e .` ignores nothing of that and works the same.
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
