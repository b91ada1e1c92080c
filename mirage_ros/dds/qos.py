"""QoS profiles by purpose, rclpy-shaped, and their Cyclone DDS form.

Nodes take a :class:`QosProfile` as an argument (never hard-code one). The named profiles:

* :data:`QOS_SENSOR_DATA`: best effort, keep last 5 (rclpy's ``qos_profile_sensor_data``);
  for image streams use ``QOS_SENSOR_DATA.with_depth(1)``.
* :data:`QOS_RELIABLE`: reliable, volatile, keep last 10 (rclpy's default) for poses and
  trajectories.
* :data:`QOS_LATCHED`: reliable, transient local, keep last 1, for static or latched state
  (camera info, memory statistics): late subscribers get the last sample.
* :data:`QOS_SERVICES`: reliable, volatile, keep last 10 (``rmw_qos_profile_services_default``).

Every entity also gets the XCDR1 data representation, as rmw_cyclonedds_cpp sets it.
"""

from __future__ import annotations

import dataclasses
import enum

from cyclonedds.qos import Policy, Qos
from cyclonedds.util import duration

__all__ = [
    "QOS_LATCHED",
    "QOS_RELIABLE",
    "QOS_SENSOR_DATA",
    "QOS_SERVICES",
    "Durability",
    "QosProfile",
    "Reliability",
]


class Reliability(enum.Enum):
    """Delivery guarantee."""

    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


class Durability(enum.Enum):
    """Whether late-joining readers get samples written before they matched."""

    VOLATILE = "volatile"
    TRANSIENT_LOCAL = "transient_local"


@dataclasses.dataclass(frozen=True)
class QosProfile:
    """A ROS 2 QoS profile (the subset this transport uses)."""

    reliability: Reliability = Reliability.RELIABLE
    durability: Durability = Durability.VOLATILE
    depth: int = 10  # keep-last history depth; 0 means keep all
    max_blocking_s: float = 1.0  # reliable writer: longest wait for history space in write()

    def __post_init__(self):
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0 (0 = keep all), got {self.depth}")
        if self.max_blocking_s < 0:
            raise ValueError(f"max_blocking_s must be >= 0, got {self.max_blocking_s}")

    def with_depth(self, depth: int) -> QosProfile:
        """A copy with another history depth."""
        return dataclasses.replace(self, depth=depth)

    def with_reliability(self, reliability: Reliability | str) -> QosProfile:
        """A copy with another reliability (``"reliable"`` or ``"best_effort"`` accepted)."""
        return dataclasses.replace(self, reliability=Reliability(reliability))

    def to_dds(self, user_data: bytes | None = None) -> Qos:
        """The Cyclone DDS ``Qos`` for a reader or writer (``user_data``: endpoint user data)."""
        policies = [
            Policy.Reliability.Reliable(max_blocking_time=duration(seconds=self.max_blocking_s))
            if self.reliability == Reliability.RELIABLE
            else Policy.Reliability.BestEffort,
            Policy.Durability.TransientLocal
            if self.durability == Durability.TRANSIENT_LOCAL
            else Policy.Durability.Volatile,
            Policy.History.KeepLast(depth=self.depth) if self.depth else Policy.History.KeepAll,
            Policy.DataRepresentation(use_cdrv0_representation=True),
        ]
        if user_data is not None:
            policies.append(Policy.Userdata(data=user_data))
        return Qos(*policies)


QOS_SENSOR_DATA = QosProfile(Reliability.BEST_EFFORT, Durability.VOLATILE, depth=5)
QOS_RELIABLE = QosProfile(Reliability.RELIABLE, Durability.VOLATILE, depth=10)
QOS_LATCHED = QosProfile(Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, depth=1)
QOS_SERVICES = QosProfile(Reliability.RELIABLE, Durability.VOLATILE, depth=10)
