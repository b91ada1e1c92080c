"""mirage_ros: the ROS 2 side of Mirage, thin over mirage_core.

Done so far (the ROS 2 graph issue is in progress):
    interfaces        the project's msg/srv/action files registered in a rosbags type store
                      (one source for the types; CDR identical to ROS 2's)
    image_conversion  sensor_msgs/Image <-> numpy for rgb8, bgr8, mono8, 16UC1, 32FC1
    messages          one message factory for both backends; Pose/CameraInfo/LatentTensor
                      <-> mirage_core values
    memory_service    the memory node's handlers (update, read, save/load, clear, point cloud),
                      never raising for bad input, with autosave and reload on restart

The node wrappers (trajectory input, memory service, generator, simulated camera), the DDS backend
for machines without rclpy, launch files and rosbag evaluation come next.
"""
