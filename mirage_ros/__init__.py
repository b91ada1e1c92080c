"""mirage_ros: ROS 2 nodes over mirage_core (trajectory input, memory service, generator,
simulated camera). The nodes arrive with the ROS 2 graph issue; this package is the place
they will live, and it stays thin: nodes translate messages into mirage_core calls."""
