"""mirage_ros: the ROS 2 side of Mirage, thin over mirage_core.

Done so far (the ROS 2 graph issue is in progress):
    interfaces        the project's msg/srv/action files registered in a rosbags type store
                      (one source for the types; CDR identical to ROS 2's)
    rosbags_types     parsing/registering .msg/.srv text, ROS 2 default values
    dds/              the DDS backend for machines without rclpy: Cyclone DDS with ROS 2's
                      wire conventions (rt/ rq/ rr/ names, pkg::msg::dds_::T_ types, request
                      header), loopback config, QoS by purpose, pub/sub, services
    image_conversion  sensor_msgs/Image <-> numpy for rgb8, bgr8, mono8, 16UC1, 32FC1
    messages          one message factory for both backends; Pose/CameraInfo/LatentTensor
                      <-> mirage_core values
    memory_service    the memory node's handlers (update, read, save/load, clear, point cloud),
                      never raising for bad input, with autosave and reload on restart

The node wrappers (trajectory input, memory service, generator, simulated camera), one node API
over rclpy or dds/, actions, launch files and rosbag evaluation come next.
"""
