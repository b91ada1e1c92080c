"""`ros2 launch mirage sim_rollout_launch.py [arg:=value ...]` (a ROS 2 machine).

The graph (nodes, launch arguments with defaults and descriptions, parameters from
config/sim_rollout.yaml) is described once in mirage_ros.launch_specs;
`mirage launch sim_rollout` starts the same nodes where the launch package is missing (the ROS 2
wheels from PyPI). The parameter file's sections are keyed `/**/<node>` (any namespace).
`ros2 launch mirage sim_rollout_launch.py --show-args` lists the arguments.
"""

from mirage_ros.launch_specs import ros_launch_description


def generate_launch_description():
    return ros_launch_description("sim_rollout")
