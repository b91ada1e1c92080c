"""Periodic timers run by a :class:`~mirage_ros.dds.node.DdsContext`'s spin loop (rclpy-shaped).

Conventions:

* Clock: ``time.monotonic`` (steady time; unaffected by wall-clock jumps). The first call is
  due one period after creation (or after :meth:`Timer.reset`), as in rclpy.
* Callbacks run in the thread that spins the context, after the data callbacks of the same
  ``spin_once``; ``spin_once`` waits at most until the earliest due timer.
* Missed periods are skipped, as ``rcl_timer_call`` does: when a call starts late (a slow
  callback, a busy spin thread, nobody spinning), that one call runs and the next is due on the
  next multiple of the period after *now*, keeping the original phase. There is never a burst
  of catch-up calls.
* :meth:`Timer.cancel` stops calls until :meth:`Timer.reset`; ``node.destroy_timer(t)`` (or
  destroying the node) removes the timer for good.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["Timer"]


class Timer:
    """Calls ``callback()`` every ``period_sec`` seconds while the owning context spins.

    Create with :meth:`DdsNode.create_timer <mirage_ros.dds.node.DdsNode.create_timer>`. The
    public methods are thread-safe (cancel or reset from any thread; a reset or a new timer wakes
    a spin loop that is waiting).
    """

    def __init__(
        self,
        period_sec: float,
        callback: Callable[[], object],
        wake: Callable[[], None] | None = None,
    ):
        try:
            period = float(period_sec)
        except (TypeError, ValueError):
            raise TypeError(f"timer period must be in seconds, got {period_sec!r}") from None
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"timer period must be finite and > 0 s, got {period_sec!r}")
        if not callable(callback):
            raise TypeError(f"timer callback must be callable, got {callback!r}")
        self.callback = callback
        self._period = period
        self._wake = wake
        self._lock = threading.Lock()
        self._canceled = False
        self._destroyed = False
        self._next = time.monotonic() + self._period

    # -- rclpy-shaped API --------------------------------------------------------------------
    @property
    def timer_period_ns(self) -> int:
        """The period in nanoseconds."""
        return round(self._period * 1e9)

    @property
    def period_sec(self) -> float:
        """The period in seconds."""
        return self._period

    def cancel(self) -> None:
        """Stop calling the callback (a call already running finishes). Undone by :meth:`reset`."""
        with self._lock:
            self._canceled = True

    def reset(self) -> None:
        """Un-cancel and restart the period: the next call is due one period from now."""
        with self._lock:
            if self._destroyed:
                return
            self._canceled = False
            self._next = time.monotonic() + self._period
        if self._wake is not None:
            self._wake()

    def is_canceled(self) -> bool:
        """True after :meth:`cancel` (until :meth:`reset`) and once destroyed."""
        with self._lock:
            return self._canceled or self._destroyed

    def is_ready(self) -> bool:
        """True when a call is due now."""
        with self._lock:
            return not (self._canceled or self._destroyed) and time.monotonic() >= self._next

    def time_until_next_call(self) -> int | None:
        """Nanoseconds until the next call is due (<= 0: due now); ``None`` when canceled."""
        due = self._due()
        return None if due is None else int((due - time.monotonic()) * 1e9)

    # -- used by the context's spin loop -----------------------------------------------------
    def _due(self) -> float | None:
        """Monotonic time of the next call, or ``None`` when canceled/destroyed."""
        with self._lock:
            return None if (self._canceled or self._destroyed) else self._next

    def _claim(self, now: float) -> bool:
        """If a call is due at ``now``, advance the schedule (skipping missed periods, keeping
        the phase) and return True: the caller then runs :attr:`callback`."""
        with self._lock:
            if self._canceled or self._destroyed or now < self._next:
                return False
            nxt = self._next + self._period
            if nxt <= now:
                nxt += (math.floor((now - nxt) / self._period) + 1) * self._period
            self._next = nxt
            return True

    def _destroy(self) -> None:
        with self._lock:
            self._destroyed = True
