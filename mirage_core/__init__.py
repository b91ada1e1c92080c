"""mirage_core: the ROS-free Mirage library (geometry, latent spatial memory, codecs, ...).

This package never imports rclpy (a test asserts it); ROS nodes live in ``mirage_ros``.
"""

__version__ = "0.1.0"
