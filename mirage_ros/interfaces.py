"""The project's ROS 2 interfaces, from one source: the ``msg/``, ``srv/`` and ``action/`` files.

On a ROS 2 machine ``colcon build`` generates them with rosidl (package ``mirage``). Without
ROS, :func:`make_typestore` registers the same files in a ``rosbags`` type store, whose CDR
bytes are identical to ROS 2's. It holds the standard messages of the chosen distribution
(``sensor_msgs``, ``geometry_msgs``, ``nav_msgs``, ``std_msgs``, ...) plus:

* ``mirage/msg/<Name>`` for each ``msg/<Name>.msg``;
* ``mirage/srv/<Name>_Request`` and ``mirage/srv/<Name>_Response`` for each
  ``srv/<Name>.srv``, and the same for ``std_srvs/srv/Trigger``, which rosbags lacks;
* for each ``action/<Name>.action``, the types rosidl generates:
  - ``mirage/action/<Name>_Goal``, ``_Result`` and ``_Feedback``;
  - ``_SendGoal_Request`` and ``_SendGoal_Response``;
  - ``_GetResult_Request`` and ``_GetResult_Response``;
  - ``_FeedbackMessage``;
  - ``action_msgs/srv/CancelGoal_Request`` and ``_Response``.

Type names follow ROS 2 (``pkg/msg/T``); a service or action section that names a type
without a package means ``mirage/msg/<T>``, as in rosidl.
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = [
    "ACTIONS",
    "INTERFACE_PACKAGE",
    "MESSAGES",
    "SERVICES",
    "interface_root",
    "make_typestore",
]

INTERFACE_PACKAGE = "mirage"
MESSAGES = ("LatentTensor", "MemoryStats", "ChunkInfo")
SERVICES = ("UpdateMemory", "ReadMemory", "MemoryFile")
ACTIONS = ("Imagine",)

_TRIGGER_SRV = "---\nbool success\nstring message\n"
_CANCEL_SRV = (
    "action_msgs/GoalInfo goal_info\n---\n"
    "int8 return_code\naction_msgs/GoalInfo[] goals_canceling\n"
)


def interface_root() -> Path:
    """The directory holding ``msg/``, ``srv/`` and ``action/``.

    The source tree (editable installs), or ``share/mirage`` of a colcon install (found through
    ``ament_index_python`` when it is importable).
    """
    here = Path(__file__).resolve().parents[1]
    if (here / "msg").is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(INTERFACE_PACKAGE))
    except Exception as e:  # ImportError, PackageNotFoundError
        raise FileNotFoundError(
            f"cannot find the {INTERFACE_PACKAGE} interface files (msg/, srv/, action/) next to "
            f"{here} or in an ament index: {e}"
        ) from e


@functools.lru_cache(maxsize=4)
def make_typestore(distro: str = "humble"):
    """A ``rosbags`` type store with the standard and the project's interfaces.

    Args:
        distro: ``"humble"`` or ``"jazzy"`` (the standard definitions to use).
    Raises:
        ValueError: unknown distro, or a malformed interface file (names the file).
    """
    from rosbags.typesys import Stores, get_typestore

    from mirage_ros.rosbags_types import parse_definition as _parse
    from mirage_ros.rosbags_types import split_sections

    stores = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
    if distro not in stores:
        raise ValueError(f"distro must be one of {sorted(stores)}, got {distro!r}")
    ts = get_typestore(stores[distro])
    root = interface_root()
    types: dict = {}
    for name in MESSAGES:
        types.update(_parse((root / "msg" / f"{name}.msg").read_text(),
                            f"{INTERFACE_PACKAGE}/msg/{name}"))
    srvs = {f"{INTERFACE_PACKAGE}/srv/{n}": (root / "srv" / f"{n}.srv").read_text()
            for n in SERVICES}
    srvs["std_srvs/srv/Trigger"] = _TRIGGER_SRV
    srvs["action_msgs/srv/CancelGoal"] = _CANCEL_SRV
    for full, text in srvs.items():
        req, res = split_sections(text, 2, full)
        types.update(_parse(req, f"{full}_Request"))
        types.update(_parse(res, f"{full}_Response"))
    for n in ACTIONS:
        path = root / "action" / f"{n}.action"
        goal, result, feedback = split_sections(path.read_text(), 3, str(path))
        a = f"{INTERFACE_PACKAGE}/action/{n}"
        types.update(_parse(goal, f"{a}_Goal"))
        types.update(_parse(result, f"{a}_Result"))
        types.update(_parse(feedback, f"{a}_Feedback"))
        uuid = "unique_identifier_msgs/UUID goal_id\n"
        types.update(_parse(f"{uuid}{a}_Goal goal\n", f"{a}_SendGoal_Request"))
        types.update(_parse("bool accepted\nbuiltin_interfaces/Time stamp\n",
                            f"{a}_SendGoal_Response"))
        types.update(_parse(uuid, f"{a}_GetResult_Request"))
        types.update(_parse(f"int8 status\n{a}_Result result\n", f"{a}_GetResult_Response"))
        types.update(_parse(f"{uuid}{a}_Feedback feedback\n", f"{a}_FeedbackMessage"))
    ts.register(types)
    return ts
