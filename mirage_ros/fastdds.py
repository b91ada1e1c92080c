"""The Fast DDS participant profile ``mirage launch`` gives its node processes.

Fast DDS (``rmw_fastrtps_cpp``, the rmw of the ROS 2 wheels and Jazzy's default) moves data
between processes on one host through shared-memory segments of 512 KiB by default. A
generated frame is larger (a 4 MiB ``sensor_msgs/Image`` measured 15-32 ms one way with the
defaults against 3-14 ms with 32 MiB segments; ``mirage bench ros``, docs/ros.md), so the
launcher writes this profile: shared memory with :data:`SHM_SEGMENT_MB` segments, plus UDPv4,
restricted to the loopback interface unless the launch is ``--network``.

The profile is only used when the user has not set their own (``FASTRTPS_DEFAULT_PROFILES_FILE``
for Fast DDS 2 / Jazzy, ``FASTDDS_DEFAULT_PROFILES_FILE`` for Fast DDS 3 / Kilted). Profile
format: eProsima Fast DDS 2.x XML profiles ("Transport descriptors", ``interfaceWhiteList``).
"""

from __future__ import annotations

__all__ = ["PROFILE_VARS", "SHM_SEGMENT_MB", "profile_xml", "user_profile"]

#: environment variables naming a profiles file (Fast DDS 2 reads the first, 3 the second)
PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
#: shared-memory segment of each node process, MiB (a few full-size frames in flight)
SHM_SEGMENT_MB = 32


def user_profile(env: dict[str, str]) -> str | None:
    """The profiles file the user set in ``env``, if any."""
    for v in PROFILE_VARS:
        if env.get(v):
            return env[v]
    return None


def profile_xml(shm_segment_bytes: int = SHM_SEGMENT_MB * 2**20, loopback: bool = True) -> str:
    """A default participant profile: SHM with ``shm_segment_bytes`` segments + UDPv4 (only on
    127.0.0.1 when ``loopback``)."""
    allow = ("\n      <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>"
             if loopback else "")
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>mirage_shm</transport_id>
      <type>SHM</type>
      <segment_size>{int(shm_segment_bytes)}</segment_size>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>mirage_udp</transport_id>
      <type>UDPv4</type>{allow}
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="mirage_launch" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>mirage_shm</transport_id>
        <transport_id>mirage_udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""
