"""mirage_ros: the ROS 2 side of Mirage, thin over mirage_core (docs/ros.md).

    node_api          one node API over rclpy (ROS 2 machines) or dds/ (everywhere else):
                      parameters from typed configs, QoS by purpose, guarded callbacks,
                      run_node() entry point
    nodes/            memory_node, trajectory_node, generator_node, sim_camera_node,
                      recorder_node, replay_node
    launch_specs      the launch graphs (sim_rollout, planner, bag_replay), described once for
                      ros2 launch (launch/*_launch.py) and mirage launch (launcher)
    launcher          `mirage launch NAME`: the nodes as separate processes on the DDS backend
    ros_args          --ros-args parsing and ROS 2 parameter YAML (for the DDS backend)
    interfaces        the project's msg/srv/action files registered in a rosbags type store
                      (one source for the types; CDR identical to ROS 2's)
    rosbags_types     parsing/registering .msg/.srv text, ROS 2 default values
    dds/              the DDS backend: Cyclone DDS with ROS 2's wire conventions (topics,
                      services, actions, timers, discovery info), loopback config, QoS
    image_conversion  sensor_msgs/Image <-> numpy for rgb8, bgr8, mono8, 16UC1, 32FC1
    messages          one message factory for both backends; Pose/Path/CameraInfo/LatentTensor
                      <-> mirage_core values
    memory_service    the memory node's handlers, never raising, with autosave and reload
    remote_memory     the memory node behind its services as a rollout memory
    bag               rosbag2 (mcap) recording, reading, camera streams, simulated bags
    replay_report     per-frame PSNR/SSIM report (JSON + plot) of a replay
    bench_graph       `mirage bench graph`: what the graph adds per chunk
"""
