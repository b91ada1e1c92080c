"""Camera poses from tf (``tf2_msgs/TFMessage`` on ``/tf`` and ``/tf_static``), without ROS.

:class:`TfBuffer` collects the transforms of a bag and looks up ``T_target_source`` (the pose
of frame ``source`` in frame ``target``; ``T_world_cam`` for ``target=world``,
``source=camera optical frame``) at given times, as tf2's ``lookupTransform(target, source,
time)`` does. The frame graph, the path search, composition and inversion are
pytransform3d's :class:`~pytransform3d.transform_manager.TemporalTransformManager`; each
time-varying edge interpolates between its samples as tf2 does (``tf2::TimeCache``): slerp of
the rotation (:class:`scipy.spatial.transform.Slerp`), linear interpolation of the
translation. Static edges (``/tf_static``) hold at every time.

Conventions: a ``geometry_msgs/TransformStamped`` with ``header.frame_id = parent`` and
``child_frame_id = child`` is ``T_parent_child`` (maps child coordinates to parent ones);
quaternions are ROS's ``(x, y, z, w)``; leading ``/`` of frame ids is dropped (tf2 does the
same). The optical frame of a camera (REP 103, ``*_optical_frame``: z forward, x right, y
down) is the OpenCV camera frame, so ``T_world_<optical>`` is Mirage's ``T_world_cam``.

No extrapolation: a time more than ``tolerance_ns`` before the first or after the last
sample of a time-varying edge on the path is refused (tf2 raises ``ExtrapolationException``);
within the tolerance the end sample is held. Times are integer nanoseconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from mirage_core.errors import MirageInputError, PoseError
from mirage_core.geometry import pose_from_translation_quat

__all__ = ["TfBuffer", "TfError", "TfExtrapolationError"]

_NS = 10**9


class TfError(MirageInputError):
    """The tf data cannot answer a lookup: unknown or unconnected frames, not a tree."""


class TfExtrapolationError(TfError):
    """A lookup time lies outside a time-varying edge's samples (beyond the tolerance)."""


def _frame(name: Any) -> str:
    return str(name).lstrip("/")


def _interpolating_transform_class():
    """The edge class, defined on first use so that pytransform3d is imported lazily."""
    from pytransform3d.transform_manager import TimeVaryingTransform
    from scipy.spatial.transform import Rotation, Slerp

    class InterpolatedTransform(TimeVaryingTransform):
        """Samples ``T [M, 4, 4]`` at strictly increasing ``times_s [M]`` (seconds from the
        buffer's reference time) of the edge ``name``; slerp + lerp in between."""

        def __init__(self, name: str, times_s: np.ndarray, T: np.ndarray,
                     tolerance_s: float) -> None:
            self.name, self.times, self.T, self.tolerance_s = name, times_s, T, tolerance_s
            self._slerp = (Slerp(times_s, Rotation.from_matrix(T[:, :3, :3]))
                           if len(times_s) > 1 else None)

        def as_matrix(self, query_time):
            t = np.asarray(query_time, dtype=np.float64)
            flat = np.atleast_1d(t).reshape(-1)
            lo, hi = self.times[0], self.times[-1]
            bad = ~((flat >= lo - self.tolerance_s) & (flat <= hi + self.tolerance_s))
            if bad.any():
                raise TfExtrapolationError(
                    f"tf edge {self.name}: no data at {flat[bad][0]:.6f} s; it has "
                    f"{len(self.times)} sample(s) from {lo:.6f} s to {hi:.6f} s (times from "
                    f"the bag's first tf stamp; no extrapolation beyond "
                    f"{self.tolerance_s * 1e3:g} ms)")
            tc = np.clip(flat, lo, hi)
            out = np.zeros((flat.size, 4, 4))
            out[:, 3, 3] = 1.0
            if self._slerp is None:
                out[:] = self.T[0]
            else:
                out[:, :3, :3] = self._slerp(tc).as_matrix()
                for k in range(3):
                    out[:, k, 3] = np.interp(tc, self.times, self.T[:, k, 3])
            return out.reshape((*t.shape, 4, 4))

        def check_transforms(self):
            return self  # each sample was checked when it was added

    return InterpolatedTransform


class TfBuffer:
    """tf transforms of a recording, looked up at arbitrary times (module docstring).

    Args:
        tolerance_ns: how far (ns) a lookup may lie outside a time-varying edge's samples
            (then the end sample is used); beyond it the lookup is refused.

    Attributes:
        bad: transforms dropped (non-finite values, non-unit quaternion, child == parent).
        repeated: time-varying samples dropped because their edge already had one at that
            stamp (tf2 keeps the first, "TF_REPEATED_DATA").
        zero_stamps: time-varying samples whose stamp was 0 (see :meth:`add_message`).
    """

    def __init__(self, tolerance_ns: int = 0) -> None:
        if not tolerance_ns >= 0:
            raise MirageInputError(f"tolerance_ns must be >= 0, got {tolerance_ns!r}")
        self.tolerance_ns = int(tolerance_ns)
        self._parent: dict[str, str] = {}
        self._static: dict[tuple[str, str], np.ndarray] = {}
        self._dynamic: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = defaultdict(list)
        self.bad = 0
        self.repeated = 0
        self.zero_stamps = 0
        self._manager = None

    # -- adding ------------------------------------------------------------------------------
    def add_message(self, msg: Any, static: bool, stamp_ns: int | None = None) -> None:
        """Add the transforms of one ``tf2_msgs/TFMessage``.

        Args:
            msg: the message (rosbags' or rclpy's class).
            static: from ``/tf_static`` (holds at every time; a later one replaces it).
            stamp_ns: use this time (e.g. the bag's log time) instead of each transform's
                ``header.stamp``.
        Raises:
            TfError: a frame given two parents, or an edge both static and time-varying (tf
                needs a tree).
        """
        for tr in msg.transforms:
            parent, child = _frame(tr.header.frame_id), _frame(tr.child_frame_id)
            t, q = tr.transform.translation, tr.transform.rotation
            try:
                if not parent or not child or parent == child:
                    raise PoseError(f"bad frame ids {parent!r} -> {child!r}")
                T = pose_from_translation_quat([t.x, t.y, t.z], [q.x, q.y, q.z, q.w],
                                               order="xyzw").numpy()
            except PoseError:
                self.bad += 1
                continue
            old = self._parent.setdefault(child, parent)
            if old != parent:
                raise TfError(f"tf frame {child!r} has two parents, {old!r} and {parent!r}; "
                              "tf needs a tree")
            key = (parent, child)
            if (static and key in self._dynamic) or (not static and key in self._static):
                raise TfError(f"tf edge {parent} -> {child} is on both /tf and /tf_static")
            if static:
                self._static[key] = T
            else:
                header_ns = int(tr.header.stamp.sec) * _NS + int(tr.header.stamp.nanosec)
                self.zero_stamps += header_ns == 0
                self._dynamic[key].append((header_ns if stamp_ns is None else int(stamp_ns), T))
        self._manager = None

    # -- the graph ---------------------------------------------------------------------------
    @property
    def frames(self) -> list[str]:
        """All frame ids, sorted."""
        return sorted(set(self._parent) | set(self._parent.values()))

    def root(self, frame: str) -> str:
        """The top of ``frame``'s tree (its parent's parent's ...)."""
        frame = _frame(frame)
        self._require(frame)
        seen = [frame]
        while frame in self._parent:
            frame = self._parent[frame]
            if frame in seen:
                raise TfError(f"tf frames form a cycle: {' -> '.join([*seen, frame])}")
            seen.append(frame)
        return frame

    def _require(self, frame: str) -> None:
        if frame not in self._parent and frame not in self._parent.values():
            raise TfError(f"frame {frame!r} is not in the tf data; frames: "
                          f"{', '.join(self.frames) or 'none'}")

    def _build(self):
        from pytransform3d.transform_manager import StaticTransform, TemporalTransformManager

        Interp = _interpolating_transform_class()
        # times relative to the first sample: float64 seconds keep ns resolution for days
        self._t0 = min((t for s in self._dynamic.values() for t, _ in s), default=0)
        tm = TemporalTransformManager(strict_check=True, check=True)
        self.repeated = 0
        for (parent, child), T in self._static.items():
            tm.add_transform(child, parent, StaticTransform(T))
        for (parent, child), samples in self._dynamic.items():
            by_time: dict[int, np.ndarray] = {}
            for t, T in samples:  # tf2 keeps the first sample of a stamp
                if t in by_time:
                    self.repeated += 1
                else:
                    by_time[t] = T
            times = np.array(sorted(by_time), dtype=np.int64)
            Ts = np.stack([by_time[int(t)] for t in times])
            tm.add_transform(child, parent, Interp(
                f"{parent} -> {child}", (times - self._t0) / _NS, Ts, self.tolerance_ns / _NS))
        self._manager = tm
        return tm

    def lookup(self, target: str, source: str, times_ns: Sequence[int] | np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``T_target_source`` at each time.

        Args:
            target: frame the result is expressed in (e.g. ``"map"``, ``"world"``).
            source: frame whose pose is looked up (e.g. the image's optical frame).
            times_ns: ``[N]`` int times, nanoseconds (the clock of the transforms' stamps).
        Returns:
            ``T [N, 4, 4]`` float64 (identity where not available), ``ok [N]`` bool, and the
            reasons of the refused times (:class:`TfExtrapolationError` messages, one per
            refused time).
        Raises:
            TfError: a frame unknown to the tf data, or the two frames not connected.
        """
        target, source = _frame(target), _frame(source)
        self._require(target)
        self._require(source)
        tm = self._manager or self._build()
        if self.root(target) != self.root(source):
            raise TfError(
                f"tf frames {target!r} and {source!r} are not connected: {target!r} is under "
                f"{self.root(target)!r}, {source!r} under {self.root(source)!r} (is a /tf_static "
                "edge missing from the bag?)")
        times = np.asarray(times_ns, dtype=np.int64).reshape(-1)
        out = np.tile(np.eye(4), (times.size, 1, 1))
        ok = np.zeros(times.size, dtype=bool)
        reasons: list[str] = []
        for i, t in enumerate(times):
            try:
                # pytransform3d's A2B maps A coordinates to B: T_target_source is source2target
                out[i] = tm.get_transform_at_time(source, target, (int(t) - self._t0) / _NS)
                ok[i] = True
            except TfExtrapolationError as e:
                reasons.append(str(e))
            except KeyError as e:  # pytransform3d: unknown frame or no path
                raise TfError(f"tf lookup {target} <- {source}: {e}") from e
        return out, ok, reasons
