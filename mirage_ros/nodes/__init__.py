"""The Mirage ROS 2 nodes: rclpy nodes (:class:`mirage_ros.node_base.MirageNode`), each thin
over mirage_core.

=====================  ============================================================
``memory_node``        the latent spatial memory: update/read/save/load/clear services,
                       statistics and a PCA-coloured PointCloud2 (:mod:`.memory_node`)
``trajectory_node``    target cameras from a Path, a pose stream, tf, a file or a named
                       motion, published as ``target_path`` (:mod:`.trajectory_node`)
``generator_node``     the world model: rollouts for ``target_path`` and the ``imagine``
                       action; frames on ``image`` (:mod:`.generator_node`)
``sim_camera_node``    PyBullet room camera: RGB, depth, pose, camera info; ground truth
                       along the target path (:mod:`.sim_camera_node`)
``recorder_node``      records topics into a rosbag2 (mcap) file (:mod:`.recorder_node`)
``replay_node``        replays a bag's camera through the graph and scores the frames
                       (:mod:`.replay_node`)
=====================  ============================================================

Run one: ``python -m mirage_ros.nodes.memory_node --ros-args -r __ns:=/mirage --params-file
config/sim_rollout.yaml`` (rcl parses ``--ros-args``), or after ``colcon build``
``ros2 run mirage memory_node --ros-args ...``. A graph: ``mirage launch NAME`` or
``ros2 launch mirage NAME_launch.py``.
"""

NODE_NAMES = (
    "memory_node",
    "trajectory_node",
    "generator_node",
    "sim_camera_node",
    "recorder_node",
    "replay_node",
)
