"""mirage_ros: the ROS 2 side of Mirage, thin over mirage_core (docs/ros.md).

Real ROS 2: rclpy nodes with the project's interfaces (``mirage.msg/srv/action``, built by
rosidl), from the ROS 2 Jazzy wheels (``make install``) or a ROS 2 install (colcon).

    node_base         MirageNode (an rclpy Node: parameters from typed configs, QoS by
                      purpose, guarded callbacks, acknowledged shutdown), run_node() entry
                      point, require_ros() (a clear error when rclpy or the interfaces are
                      missing)
    nodes/            memory_node, trajectory_node, generator_node, sim_camera_node,
                      recorder_node, replay_node
    launch_specs      the launch graphs (sim_rollout, planner, bag_replay), described once for
                      ros2 launch (launch/*_launch.py) and mirage launch (launcher); reading
                      the parameter YAML (keys /**/<node>)
    launcher          `mirage launch NAME`: the nodes as separate rclpy processes, what
                      ros2 launch does where the launch package is missing (the PyPI wheels)
    interfaces        the project's msg/srv/action files registered in a rosbags type store
                      (one source for the types; CDR identical to ROS 2's)
    rosbags_types     parsing/registering .msg/.srv text, ROS 2 default values
    image_conversion  sensor_msgs/Image <-> numpy for rgb8, bgr8, mono8, 16UC1, 32FC1
    messages          message factories (rclpy classes, rosbags classes for bags);
                      Pose/Path/CameraInfo/LatentTensor <-> mirage_core values
    memory_service    the memory node's handlers, never raising, with autosave and reload
    remote_memory     the memory node behind its services as a rollout memory
    bag               rosbag2 (mcap) recording, reading, camera streams, simulated bags
    replay_report     per-frame PSNR/SSIM report (JSON + plot) of a replay
    bench_graph       `mirage bench graph`: what the graph adds per chunk
    bench_ros         `mirage bench ros`: 4 MiB image latency between processes, launch to
                      first generated frame
"""
